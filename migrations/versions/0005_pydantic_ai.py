"""pydantic-ai's conversation records as named heads over convotree trees.

Why: ``convotree.adapters.pydantic_ai`` implements pydantic-ai's ``ConversationStore``.
pydantic-ai keeps a conversation as a record pointing at the newest entry of a log of
messages, and a fork is a second record pointing at an entry of the first one's log.
convotree keeps every parent inside one conversation, and Citus needs the conversation
id in every key. So a record is a row of ``convotree_pydantic_ai_records`` keyed by
(tree, name): the tree is one convotree conversation, every record over it (the
original and all its forks) a named head with a foreign key to a node of that same
tree; an entry is a node of the tree, and its message as pydantic-ai serializes it
sits in ``convotree_pydantic_ai_messages`` beside the node (whose role, content and
token columns make the history reportable and let ``context()`` budget it).
``convotree_pydantic_ai_names`` maps a record's name to its tree at a key computed from
the name alone (uuid5 of tenant and name), so a lookup by name is one statement on one
distribution value; it has no foreign key because, distributed, the name's home and
the tree are different shards. Plain CREATE TABLE on both backends: no data to move,
and the downgrade drops the three tables (the nodes stay, as ordinary convotree
messages).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from convotree._citus import follow_distribution

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NAMES = "convotree_pydantic_ai_names"
RECORDS = "convotree_pydantic_ai_records"
MESSAGES = "convotree_pydantic_ai_messages"


def upgrade() -> None:
    op.create_table(
        NAMES,
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("tree_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=f"pk_{NAMES}"),
    )
    op.create_table(
        RECORDS,
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("head_id", sa.Uuid(), nullable=True),
        sa.Column("branches", JSON, nullable=False),
        sa.Column("usage", JSON, nullable=False),
        sa.Column("deferred_tool_requests", JSON, nullable=True),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("forked_from", sa.Text(), nullable=True),
        sa.Column("forked_at", sa.Uuid(), nullable=True),
        sa.Column("revision", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("format_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "name", name=f"pk_{RECORDS}"),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["convotree_conversations.id"],
            name=f"fk_{RECORDS}_conversation_id", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["conversation_id", "head_id"],
            ["convotree_nodes.conversation_id", "convotree_nodes.id"],
            name=f"fk_{RECORDS}_conversation_id_head_id"),
    )
    op.create_index(f"ix_{RECORDS}_tenant_id_updated_at", RECORDS, ["tenant_id", "updated_at"])
    op.create_index(f"ix_{RECORDS}_tenant_id_scope_updated_at", RECORDS,
                    ["tenant_id", "scope", "updated_at"])
    op.create_table(
        MESSAGES,
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("node_id", sa.Uuid(), nullable=False),
        sa.Column("message", JSON, nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "node_id", name=f"pk_{MESSAGES}"),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["convotree_conversations.id"],
            name=f"fk_{MESSAGES}_conversation_id", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["conversation_id", "node_id"],
            ["convotree_nodes.conversation_id", "convotree_nodes.id"],
            name=f"fk_{MESSAGES}_conversation_id_node_id", ondelete="CASCADE"),
    )
    # An entry id alone finds its tree (pydantic-ai's read_entry in a fresh process).
    op.create_index(f"ix_{MESSAGES}_node_id", MESSAGES, ["node_id"])
    # On a database distributed by Citus (`convotree db distribute`), the new tables
    # join the conversations' shards; elsewhere this does nothing.
    follow_distribution(op.get_bind())


def downgrade() -> None:
    op.drop_index(f"ix_{MESSAGES}_node_id", table_name=MESSAGES)
    op.drop_table(MESSAGES)
    op.drop_index(f"ix_{RECORDS}_tenant_id_scope_updated_at", table_name=RECORDS)
    op.drop_index(f"ix_{RECORDS}_tenant_id_updated_at", table_name=RECORDS)
    op.drop_table(RECORDS)
    op.drop_table(NAMES)
