"""The children index leads with ``parent_id``: plans that cannot degrade on PostgreSQL.

Why: the index for "children of a node" was ``(conversation_id, parent_id)``. Its first
column is also the first column of the primary key, so for a lookup of one node by
``(conversation_id, id)`` the planner had two indexes that both start with the
conversation. Whenever it believed the conversation held one row (statistics taken
when the table was small, or none yet: a fresh table during a bulk import), both
looked equally cheap and it could pick the children index, matching only
``conversation_id`` and filtering ``id`` row by row: the whole conversation read per
lookup. PostgreSQL's own foreign-key check on every inserted node
(``SELECT 1 ... WHERE conversation_id = $1 AND id = $2``) was planned that way on a
fresh table and kept the plan: importing one 10,000-message chain took 6.4 s and
20,000 took 25 s (quadratic). With ``(parent_id, conversation_id)`` the only index a
node lookup can use is the primary key, and the children lookup
(``parent_id = $2 AND conversation_id = $1``) still matches both columns. Citus: the
index is local to each shard, as before; it still holds the distribution column.

The index is rebuilt in the migration's transaction (no ``CONCURRENTLY``: see
docs/architecture.md); on a large table that blocks writes to the nodes table while
it builds.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "convotree_nodes"
OLD = "ix_convotree_nodes_conversation_id_parent_id"
NEW = "ix_convotree_nodes_parent_id_conversation_id"


def upgrade() -> None:
    op.create_index(NEW, TABLE, ["parent_id", "conversation_id"])
    op.drop_index(OLD, table_name=TABLE)


def downgrade() -> None:
    op.create_index(OLD, TABLE, ["conversation_id", "parent_id"])
    op.drop_index(NEW, table_name=TABLE)
