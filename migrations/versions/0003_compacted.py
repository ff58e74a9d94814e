"""Answers the Responses API compacted: where a branch's Responses context starts.

Why: with ``context_management=[{"type": "compaction", "compact_threshold": N}]`` the
Responses API compacts the conversation in the middle of an answer and returns an
opaque compaction item in that answer's output. OpenAI's compaction guide: a stateless
client appends the output as usual and may drop every item before the latest
compaction item, which carries the state the next turn needs. ``compacted`` marks such
an answer, so the context assembler's one recursive statement can stop its walk up the
branch there (for Responses requests) instead of resending the whole history plus the
item. It is derived from ``api_items`` when a node is written, never set by hand; this
revision fills it for answers stored before it. NOT NULL with a constant default: a
metadata-only change on PostgreSQL (no table rewrite) and a plain ADD COLUMN on SQLite.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "convotree_nodes"

# Answers already stored whose replayed output holds a compaction item. Every
# conversation's rows at once: a one-time backfill (Citus runs it on every shard).
BACKFILL = {
    "postgresql": ("UPDATE convotree_nodes SET compacted = true WHERE kind = 'message' "
                   "AND api_items @> '[{\"type\": \"compaction\"}]'::jsonb"),
    "sqlite": ("UPDATE convotree_nodes SET compacted = 1 WHERE kind = 'message' "
               "AND api_items IS NOT NULL AND EXISTS (SELECT 1 FROM json_each(api_items) "
               "WHERE json_extract(value, '$.type') = 'compaction')"),
}


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("compacted", sa.Boolean(), nullable=False,
                                   server_default=sa.text("false")))
    op.execute(BACKFILL[op.get_bind().dialect.name])


def downgrade() -> None:
    op.drop_column(TABLE, "compacted")
