"""The SQLAlchemy tables: the one source of truth for the schema in code.

The migrations in ``migrations/versions`` must produce exactly this schema; a test runs
``alembic check`` against a migrated database on both backends so the two cannot drift.

Shardability (Citus): ``convotree_conversations`` is distributed by ``id`` and
``convotree_nodes`` by ``conversation_id``. Every primary, unique and foreign key
therefore includes the conversation id, and every query on nodes filters on it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Date

from ._revision import SCHEMA_REVISION, VERSION_TABLE
from ._types import JSONType, UTCDateTime

__all__ = ["KINDS", "ROLES", "SCHEMA_REVISION", "VERSION_TABLE", "conversations", "metadata",
           "nodes"]

ROLES = ("system", "developer", "user", "assistant", "tool")
KINDS = ("message", "summary")


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class utc_day(FunctionElement[Any]):  # lower case: reads as a SQL function
    """The UTC calendar day of a stored timestamp, as each backend's index holds it.

    PostgreSQL: written the way it prints the expression back (``pg_get_indexdef``), so
    alembic's comparison of the migrated index with this one finds them equal. SQLite
    stores naive UTC text, so ``date(x)``.
    """

    type = Date()
    inherit_cache = True


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(({compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC'::text))::date"


@compiles(utc_day)
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"date({compiler.process(element.clauses, **kw)})"


def _in_list(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


conversations = Table(
    "convotree_conversations",
    metadata,
    Column("id", Uuid(), nullable=False),
    Column("tenant_id", Text(), nullable=False, server_default=text("''")),
    Column("title", Text(), nullable=True),
    Column("metadata", JSONType, nullable=True),
    Column("current_node_id", Uuid(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("id"),
    # The conversation's current leaf lives in the same conversation: the key pair
    # includes the distribution column on both sides, as Citus requires.
    ForeignKeyConstraint(
        ["id", "current_node_id"],
        ["convotree_nodes.conversation_id", "convotree_nodes.id"],
        use_alter=True,
    ),
    Index(None, "tenant_id", "updated_at"),
)

nodes = Table(
    "convotree_nodes",
    metadata,
    Column("conversation_id", Uuid(), nullable=False),
    Column("id", Uuid(), nullable=False),
    Column("parent_id", Uuid(), nullable=True),
    Column("depth", Integer(), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text(), nullable=True),
    Column("parts", JSONType, nullable=True),
    # Sizes of the non-text parts (image width/height/detail, audio and file bytes),
    # read once at insert so images can be priced per model without decoding again.
    Column("media", JSONType, nullable=True),
    Column("name", Text(), nullable=True),
    Column("tool_calls", JSONType, nullable=True),
    Column("tool_call_id", Text(), nullable=True),
    Column("model", Text(), nullable=True),
    # Tokens of the content alone, counted once at insert under ``encoding``.
    Column("token_count", Integer(), nullable=False),
    # Tokens the chat format adds around the content (per-message constant, role,
    # name, tool calls, tool_call_id), also counted at insert, so that assembling a
    # context only ever sums stored integers.
    Column("overhead_tokens", Integer(), nullable=False),
    Column("encoding", String(32), nullable=False),
    Column("input_tokens", Integer(), nullable=True),
    Column("output_tokens", Integer(), nullable=True),
    # What the API said about the answer this node holds (revision 0002): the response
    # id, why generation stopped, cached input and reasoning tokens, and the prompt
    # tokens convotree counted for the request (compare with ``input_tokens``).
    Column("response_id", Text(), nullable=True),
    Column("finish_reason", Text(), nullable=True),
    Column("cached_tokens", Integer(), nullable=True),
    Column("reasoning_tokens", Integer(), nullable=True),
    Column("counted_input_tokens", Integer(), nullable=True),
    # Responses API output items sent back verbatim on the next turn (reasoning items
    # with encrypted content, compaction items); NULL for everything else.
    Column("api_items", JSONType, nullable=True),
    # The answer's api_items hold an OpenAI compaction item (revision 0003): the
    # Responses API compacted the conversation in this answer, so a Responses context
    # of this branch starts here. Derived from api_items on write, never set by hand.
    Column("compacted", Boolean(), nullable=False, server_default=text("false")),
    Column("pinned", Boolean(), nullable=False, server_default=text("false")),
    # The nearest strict ancestor that pruning always keeps (system, developer or
    # pinned). Lets the assembler find every kept-always node above a cut by hopping
    # these pointers instead of walking the whole path.
    Column("pinned_ancestor_id", Uuid(), nullable=True),
    # For a summary node: the summary it extends (it covers that one's span plus the
    # messages after it, down to its parent); NULL when it covers from the root.
    Column("summary_base_id", Uuid(), nullable=True),
    Column("metadata", JSONType, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("conversation_id", "id"),
    ForeignKeyConstraint(["conversation_id"], ["convotree_conversations.id"], ondelete="CASCADE"),
    # A parent is always in the same conversation: the database, not only the code,
    # makes a cross-conversation edge impossible.
    ForeignKeyConstraint(
        ["conversation_id", "parent_id"],
        ["convotree_nodes.conversation_id", "convotree_nodes.id"],
    ),
    CheckConstraint("depth >= 0", name="depth_non_negative"),
    CheckConstraint(_in_list("kind", KINDS), name="kind"),
    CheckConstraint(_in_list("role", ROLES), name="role"),
    CheckConstraint("token_count >= 0 AND overhead_tokens >= 0", name="tokens_non_negative"),
    CheckConstraint("(parent_id IS NULL) = (depth = 0)", name="root_depth"),
    # Children of a node. ``parent_id`` first (revision 0004): a lookup of one node by
    # ``(conversation_id, id)`` then has no index to choose but the primary key, under
    # any statistics (see migrations/versions/0004_children_index.py).
    Index(None, "parent_id", "conversation_id"),
    # The UTC day convotree_usage_daily groups by (revision 0006), so a report on recent
    # days (``WHERE day >= ...``, pushed into the view by both planners) reads only those.
    Index("ix_convotree_nodes_utc_day", utc_day(text("created_at"))),
    # One summary per covered span: a summary hangs under the last node it covers, so
    # two processes summarizing the same prefix at once cannot both store one.
    Index(
        "uq_convotree_nodes_summary_parent",
        "conversation_id",
        "parent_id",
        unique=True,
        sqlite_where=text("kind = 'summary'"),
        postgresql_where=text("kind = 'summary'"),
    ),
)


# --- pydantic-ai's conversation store (revision 0005) -----------------------------------
# ``convotree.adapters.pydantic_ai`` keeps each pydantic-ai conversation record as a
# named head over one convotree tree; a fork is another head over the same tree, so an
# entry's parent is always in its own conversation. See migrations/versions/0005_*.py.

pydantic_ai_names = Table(
    "convotree_pydantic_ai_names",
    metadata,
    # The record's home: uuid5 of (tenant, name), computed from the name alone, so that
    # finding a record by its name is one statement on one distribution value.
    Column("conversation_id", Uuid(), nullable=False),
    Column("tenant_id", Text(), nullable=False),
    Column("name", Text(), nullable=False),
    # The convotree conversation (tree) that holds the record and its entries. No
    # foreign key: under Citus the home and the tree are different shards.
    Column("tree_id", Uuid(), nullable=False),
    PrimaryKeyConstraint("conversation_id"),
)

pydantic_ai_records = Table(
    "convotree_pydantic_ai_records",
    metadata,
    Column("conversation_id", Uuid(), nullable=False),   # the tree
    Column("name", Text(), nullable=False),               # pydantic-ai's conversation_id
    Column("tenant_id", Text(), nullable=False),
    Column("head_id", Uuid(), nullable=True),
    # Tips of the branches the record left, oldest first (node ids as strings).
    Column("branches", JSONType, nullable=False),
    Column("usage", JSONType, nullable=False),
    Column("deferred_tool_requests", JSONType, nullable=True),
    Column("scope", Text(), nullable=True),
    Column("forked_from", Text(), nullable=True),
    Column("forked_at", Uuid(), nullable=True),
    Column("revision", Text(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("format_version", Integer(), nullable=False),
    PrimaryKeyConstraint("conversation_id", "name"),
    ForeignKeyConstraint(["conversation_id"], ["convotree_conversations.id"], ondelete="CASCADE"),
    # A head is a node of the record's own tree: the database refuses a dangling head.
    ForeignKeyConstraint(
        ["conversation_id", "head_id"],
        ["convotree_nodes.conversation_id", "convotree_nodes.id"],
    ),
    Index(None, "tenant_id", "updated_at"),
    Index(None, "tenant_id", "scope", "updated_at"),
)

pydantic_ai_messages = Table(
    "convotree_pydantic_ai_messages",
    metadata,
    Column("conversation_id", Uuid(), nullable=False),
    Column("node_id", Uuid(), nullable=False),
    # The message as pydantic-ai's ModelMessagesTypeAdapter dumps it (one message).
    Column("message", JSONType, nullable=False),
    PrimaryKeyConstraint("conversation_id", "node_id"),
    ForeignKeyConstraint(["conversation_id"], ["convotree_conversations.id"], ondelete="CASCADE"),
    ForeignKeyConstraint(
        ["conversation_id", "node_id"],
        ["convotree_nodes.conversation_id", "convotree_nodes.id"],
        ondelete="CASCADE",
    ),
    # pydantic-ai names an entry by its id alone: a process that has not seen it finds
    # its tree here (an index, not a key: under Citus a query on every shard).
    Index(None, "node_id"),
)
