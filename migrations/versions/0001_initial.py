"""Conversations and their node trees.

Why: the first schema. Two prefixed tables so convotree can live inside an
application's own database. Nodes are keyed by (conversation_id, id) and every
foreign key carries conversation_id, so a Citus cluster can distribute both tables
by conversation (nodes co-located with their conversation) without a schema change,
and so a parent can never be in another conversation. Token counts are stored per
node at insert (content and format overhead separately) because the context
assembler must only sum them, never re-tokenize; media keeps the sizes of images,
audio and files for the same reason. pinned_ancestor_id points at the
nearest ancestor that pruning always keeps, so finding those above a cut is a hop
along pointers rather than a walk of the whole path. Summaries are nodes too (kind
'summary', under the last node they cover, summary_base_id naming the summary they
extend); a partial unique index allows one per covered span, so concurrent
summarizers of the same prefix cannot both store one.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
CURRENT_NODE_FK = "fk_convotree_conversations_id_current_node_id"


def _current_node_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["id", "current_node_id"],
        ["convotree_nodes.conversation_id", "convotree_nodes.id"],
        name=CURRENT_NODE_FK,
    )


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # The conversation -> current node key makes the two tables reference each other.
    # SQLite accepts a reference to a table that does not exist yet (and cannot add a
    # foreign key later); PostgreSQL adds it once both tables exist.
    op.create_table(
        "convotree_conversations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("metadata", JSON, nullable=True),
        sa.Column("current_node_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_convotree_conversations"),
        *([_current_node_fk()] if sqlite else []),
    )
    op.create_index(
        "ix_convotree_conversations_tenant_id_updated_at",
        "convotree_conversations",
        ["tenant_id", "updated_at"],
    )
    op.create_table(
        "convotree_nodes",
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("parts", JSON, nullable=True),
        sa.Column("media", JSON, nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("tool_calls", JSON, nullable=True),
        sa.Column("tool_call_id", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("overhead_tokens", sa.Integer(), nullable=False),
        sa.Column("encoding", sa.String(32), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("pinned", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("pinned_ancestor_id", sa.Uuid(), nullable=True),
        sa.Column("summary_base_id", sa.Uuid(), nullable=True),
        sa.Column("metadata", JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "id", name="pk_convotree_nodes"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["convotree_conversations.id"],
            name="fk_convotree_nodes_conversation_id",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id", "parent_id"],
            ["convotree_nodes.conversation_id", "convotree_nodes.id"],
            name="fk_convotree_nodes_conversation_id_parent_id",
        ),
        sa.CheckConstraint("depth >= 0", name="ck_convotree_nodes_depth_non_negative"),
        sa.CheckConstraint("kind IN ('message', 'summary')", name="ck_convotree_nodes_kind"),
        sa.CheckConstraint(
            "role IN ('system', 'developer', 'user', 'assistant', 'tool')",
            name="ck_convotree_nodes_role",
        ),
        sa.CheckConstraint(
            "token_count >= 0 AND overhead_tokens >= 0",
            name="ck_convotree_nodes_tokens_non_negative",
        ),
        sa.CheckConstraint(
            "(parent_id IS NULL) = (depth = 0)", name="ck_convotree_nodes_root_depth"
        ),
    )
    op.create_index(
        "ix_convotree_nodes_conversation_id_parent_id",
        "convotree_nodes",
        ["conversation_id", "parent_id"],
    )
    op.create_index(
        "uq_convotree_nodes_summary_parent",
        "convotree_nodes",
        ["conversation_id", "parent_id"],
        unique=True,
        sqlite_where=sa.text("kind = 'summary'"),
        postgresql_where=sa.text("kind = 'summary'"),
    )
    if not sqlite:
        op.create_foreign_key(
            CURRENT_NODE_FK,
            "convotree_conversations",
            "convotree_nodes",
            ["id", "current_node_id"],
            ["conversation_id", "id"],
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(CURRENT_NODE_FK, "convotree_conversations", type_="foreignkey")
    else:
        # SQLite empties a table before dropping it and checks foreign keys while doing
        # so: with conversations still pointing at their current nodes, dropping the
        # nodes would fail ("FOREIGN KEY constraint failed") on any database with data.
        op.execute("UPDATE convotree_conversations SET current_node_id = NULL")
    op.drop_index("uq_convotree_nodes_summary_parent", table_name="convotree_nodes")
    op.drop_index("ix_convotree_nodes_conversation_id_parent_id", table_name="convotree_nodes")
    op.drop_table("convotree_nodes")
    op.drop_index(
        "ix_convotree_conversations_tenant_id_updated_at", table_name="convotree_conversations"
    )
    op.drop_table("convotree_conversations")
