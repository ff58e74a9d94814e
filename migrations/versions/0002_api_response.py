"""What the API said about each answer: response id, finish reason, usage details, items.

Why: the chat helper stores, on every assistant node it receives, the facts a user needs
to audit a conversation in SQL without asking OpenAI: which response produced it
(``response_id``), why it ended (``finish_reason``), the usage details beyond input and
output tokens (``cached_tokens``, ``reasoning_tokens``), and the token count convotree
computed for the request (``counted_input_tokens``) next to the ``input_tokens`` the API
billed, so the accuracy of our counting is visible per model. ``api_items`` keeps the
Responses API output items that must be sent back verbatim on the next turn (reasoning
items with encrypted content, compaction items). All columns are nullable: nodes
written before this revision, and nodes that did not come from an API call, have none.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TABLE = "convotree_nodes"
COLUMNS = (
    ("response_id", sa.Text()),
    ("finish_reason", sa.Text()),
    ("cached_tokens", sa.Integer()),
    ("reasoning_tokens", sa.Integer()),
    ("counted_input_tokens", sa.Integer()),
    ("api_items", JSON),
)


def upgrade() -> None:
    # Nullable columns without defaults: a metadata-only change on PostgreSQL (no table
    # rewrite, no long lock) and a plain ADD COLUMN on SQLite.
    for name, type_ in COLUMNS:
        op.add_column(TABLE, sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 drops a column in place; none of these is indexed or constrained.
    for name, _ in reversed(COLUMNS):
        op.drop_column(TABLE, name)
