"""Reporting views: the SQL interface analysts and dashboards query.

Why: the two tables answer every question about conversation history, but anything about
branches (leaves, regenerations, the current branch) means a recursive CTE or an
anti-join written by hand. These five views are the stable, documented public interface
(docs/reporting.md lists every column); ``convotree.reporting`` and ``convotree report``
read them too, so Python, the CLI and SQL users see the same numbers.

Nothing is precomputed: every column is derived from the tree when queried, so no view
can disagree with the tables. The definitions differ per backend where the planners
differ, with the same columns and the same answers:

- PostgreSQL walks a conversation's current branch in a ``LATERAL`` subquery correlated
  with the conversation row, so ``WHERE conversation_id = ...`` on
  ``convotree_current_branch`` (and on ``convotree_messages.on_current_branch``) reaches
  the recursion's anchor: one conversation's branch is walked, not every one's. The
  per-conversation aggregates are ``LATERAL`` too, so a page of conversations (a tenant,
  newest first, ``LIMIT``) aggregates only that page's nodes.
- SQLite has no ``LATERAL``: its current branch is one recursive CTE over every
  conversation (filtered afterwards), and its per-conversation aggregates are grouped
  subqueries. docs/reporting.md says what each costs.

The columns that need a look at other rows (``is_leaf``, ``siblings``,
``is_regeneration``, ``is_edit``, ``on_current_branch`` of ``convotree_messages``) are
computed only when a query selects them: both planners drop unused view columns, and
PostgreSQL removes the current-branch join when it is not read.

Indexes: the UTC day of each node's ``created_at`` (the expression
``convotree_usage_daily`` groups by; both planners push ``WHERE day >= ...`` into the
view), so a report on recent days reads only those (measured: the last week of 1M nodes
on PostgreSQL in 58 ms instead of 250 ms; 6 weeks of 200,000 on SQLite in 33 ms instead
of 240 ms). The children index ``(parent_id, conversation_id)`` of revision 0004 already serves the
sibling and leaf probes, the primary key every per-conversation aggregate, and
``(tenant_id, updated_at)`` of conversations the pages.

Citus: every view joins nodes to conversations on the distribution column, and every
subquery is correlated on it, so each runs on every shard and is combined on the
coordinator. Citus plans no recursive CTE across shards, nor one whose
``conversation_id`` filter reaches it only through a join: on a distributed database
(``convotree db distribute`` re-creates the views with ``create_views``)
``convotree_messages.on_current_branch`` is NULL and ``convotree_current_branch`` is
refused by Citus; docs/scale-out.md gives the single-shard walk to use instead.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import Connection

from convotree._citus import is_distributed

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Created in this order, dropped in the reverse (later views read earlier ones).
VIEWS = ("convotree_current_branch", "convotree_messages", "convotree_conversation_stats",
         "convotree_usage_daily", "convotree_branch_points")
#: The same expressions as ``PG_DAY`` and ``SQLITE_DAY`` (see the module docstring).
DAY_INDEX = "ix_convotree_nodes_utc_day"

# --- pieces shared by both backends ------------------------------------------------------


def _earlier_sibling(role: str) -> str:
    """A message of ``role`` under the same parent as ``n``, stored before it: ``n`` is
    then a regeneration (assistant) or an edit (user). Two forms so that each probe is
    an index lookup (a root's "parent" is NULL, which ``=`` never matches)."""
    earlier = (f"s.conversation_id = n.conversation_id AND s.kind = 'message' "
               f"AND s.role = '{role}' AND (s.created_at < n.created_at "
               f"OR (s.created_at = n.created_at AND s.id < n.id))")
    return (f"(n.kind = 'message' AND n.role = '{role}' AND CASE WHEN n.parent_id IS NULL "
            f"THEN EXISTS (SELECT 1 FROM convotree_nodes s WHERE {earlier} "
            f"AND s.parent_id IS NULL) "
            f"ELSE EXISTS (SELECT 1 FROM convotree_nodes s WHERE {earlier} "
            f"AND s.parent_id = n.parent_id) END)")


SIBLINGS = (
    "CASE WHEN n.kind <> 'message' THEN NULL "
    "WHEN n.parent_id IS NULL THEN (SELECT count(*) FROM convotree_nodes s "
    "WHERE s.conversation_id = n.conversation_id AND s.parent_id IS NULL "
    "AND s.kind = 'message') - 1 "
    "ELSE (SELECT count(*) FROM convotree_nodes s WHERE s.conversation_id = "
    "n.conversation_id AND s.parent_id = n.parent_id AND s.kind = 'message') - 1 END")

IS_LEAF = (
    "(n.kind = 'message' AND NOT EXISTS (SELECT 1 FROM convotree_nodes k "
    "WHERE k.conversation_id = n.conversation_id AND k.parent_id = n.id "
    "AND k.kind = 'message'))")

NODE_COLUMNS = (
    "n.id, n.parent_id, n.depth, n.kind, n.role, n.name, n.content, n.model, "
    "n.tool_calls, n.tool_call_id, n.finish_reason, n.response_id, "
    "n.token_count AS content_tokens, n.overhead_tokens, "
    "n.token_count + n.overhead_tokens AS tokens, n.input_tokens, n.output_tokens, "
    "n.cached_tokens, n.reasoning_tokens, n.counted_input_tokens, n.pinned, n.compacted, "
    "n.summary_base_id, n.metadata, n.created_at")


def _messages(dialect: str) -> str:
    """PostgreSQL removes the LEFT JOIN to the current branch when a query does not read
    ``on_current_branch`` (the joined side is DISTINCT on the join key), and pushes a
    ``conversation_id`` filter through it into the walk. SQLite does neither for a join,
    but never evaluates an unread scalar subquery, and evaluates a read one against the
    current branches walked once per statement."""
    if dialect == "citus":
        # Citus plans no recursive CTE across shards (nor one whose filter reaches it
        # through a join): a distributed database has no walk here, and says so with
        # NULL rather than a guess. Per conversation, the walk written with the id in
        # both halves (docs/reporting.md) is a single-shard query Citus accepts.
        current = "CAST(NULL AS boolean)"
        join = ""
    elif dialect == "postgresql":
        current = "(b.id IS NOT NULL)"
        join = """
  LEFT JOIN (SELECT DISTINCT conversation_id, id FROM convotree_current_branch) b
         ON b.conversation_id = n.conversation_id AND b.id = n.id"""
    else:
        current = ("EXISTS (SELECT 1 FROM convotree_current_branch b "
                   "WHERE b.conversation_id = n.conversation_id AND b.id = n.id)")
        join = ""
    return f"""
SELECT n.conversation_id, c.tenant_id, c.title AS conversation_title, {NODE_COLUMNS},
       {IS_LEAF} AS is_leaf,
       {current} AS on_current_branch,
       {SIBLINGS} AS siblings,
       {_earlier_sibling('assistant')} AS is_regeneration,
       {_earlier_sibling('user')} AS is_edit
  FROM convotree_nodes n
  JOIN convotree_conversations c ON c.id = n.conversation_id{join}"""


#: Aggregates of one conversation's nodes grouped by parent (``g``), summed again per
#: conversation (``p``). A message's parent is always a message (summaries have no
#: children), so the messages with a message child are the distinct non-NULL parents of
#: messages, and the branches (message leaves) are the messages less those.
PER_PARENT = """
       count(CASE WHEN g.kind = 'message' THEN 1 END) AS messages,
       count(CASE WHEN g.kind = 'summary' THEN 1 END) AS summaries,
       count(CASE WHEN g.kind = 'message' AND g.role = 'assistant' THEN 1 END) AS answers,
       count(CASE WHEN g.kind = 'message' AND g.role = 'user' THEN 1 END) AS prompts,
       max(CASE WHEN g.kind = 'message' THEN g.depth END) AS max_depth,
       sum(CASE WHEN g.kind = 'message' THEN g.token_count ELSE 0 END) AS content_tokens,
       sum(CASE WHEN g.kind = 'summary' THEN g.token_count ELSE 0 END) AS summary_tokens,
       sum(g.input_tokens) AS input_tokens, sum(g.output_tokens) AS output_tokens,
       sum(g.cached_tokens) AS cached_tokens, sum(g.reasoning_tokens) AS reasoning_tokens,
       min(g.created_at) AS first_at, max(g.created_at) AS last_at"""

_COUNTS = ("messages", "summaries", "branches", "branch_points", "regenerations", "edits")
_TOKENS = ("content_tokens", "summary_tokens", "input_tokens", "output_tokens",
           "cached_tokens", "reasoning_tokens")

PER_CONVERSATION = f"""
       {", ".join(f"CAST(coalesce({e}, 0) AS BIGINT) AS {name}" for name, e in (
           ("messages", "sum(p.messages)"), ("summaries", "sum(p.summaries)"),
           ("branches", "sum(p.messages) - count(CASE WHEN p.parent_id IS NOT NULL "
                        "AND p.messages > 0 THEN 1 END)"),
           ("branch_points", "count(CASE WHEN p.parent_id IS NOT NULL "
                             "AND p.messages > 1 THEN 1 END)"),
           ("regenerations", "sum(CASE WHEN p.answers > 1 THEN p.answers - 1 ELSE 0 END)"),
           ("edits", "sum(CASE WHEN p.prompts > 1 THEN p.prompts - 1 ELSE 0 END)")))},
       max(p.max_depth) AS max_depth,
       {", ".join(f"CAST(coalesce(sum(p.{name}), 0) AS BIGINT) AS {name}"
                  for name in _TOKENS)},
       min(p.first_at) AS first_at, max(p.last_at) AS last_at"""

STATS_COLUMNS = f"""
       {", ".join(f"s.{name}" for name in _COUNTS)}, s.max_depth,
       {", ".join(f"s.{name}" for name in _TOKENS)},
       coalesce(s.first_at, s.created_at) AS first_activity,
       coalesce(s.last_at, s.created_at) AS last_activity"""

CONVERSATION = "conversation_id, tenant_id, title, created_at, updated_at, current_node_id"


def _usage_daily(day: str) -> str:
    return f"""
SELECT {day} AS day, c.tenant_id, n.model,
       count(CASE WHEN n.kind = 'message' THEN 1 END) AS messages,
       count(CASE WHEN n.kind = 'message' AND n.role = 'assistant' THEN 1 END) AS answers,
       count(CASE WHEN n.kind = 'summary' THEN 1 END) AS summaries,
       sum(n.token_count) AS content_tokens,
       coalesce(sum(n.input_tokens), 0) AS input_tokens,
       coalesce(sum(n.output_tokens), 0) AS output_tokens,
       coalesce(sum(n.cached_tokens), 0) AS cached_tokens,
       coalesce(sum(n.reasoning_tokens), 0) AS reasoning_tokens,
       count(CASE WHEN n.input_tokens IS NOT NULL AND n.counted_input_tokens IS NOT NULL
                  THEN 1 END) AS compared_answers,
       coalesce(sum(CASE WHEN n.input_tokens IS NOT NULL
                         THEN n.counted_input_tokens END), 0) AS counted_input_tokens,
       coalesce(sum(CASE WHEN n.counted_input_tokens IS NOT NULL
                         THEN n.input_tokens - n.counted_input_tokens END), 0)
           AS counting_error
  FROM convotree_nodes n
  JOIN convotree_conversations c ON c.id = n.conversation_id
 GROUP BY {day}, c.tenant_id, n.model"""


CHILD_GROUP = """
SELECT k.conversation_id, k.parent_id, count(*) AS children,
       count(CASE WHEN k.role = 'assistant' THEN 1 END) AS answers,
       count(CASE WHEN k.role = 'user' THEN 1 END) AS prompts,
       min(k.created_at) AS first_child_at, max(k.created_at) AS last_child_at
  FROM convotree_nodes k"""

BRANCH_POINT_COLUMNS = """
SELECT p.conversation_id, c.tenant_id, p.id AS node_id, p.depth, p.role, p.model,
       g.children,
       CASE WHEN g.answers > 1 THEN g.answers - 1 ELSE 0 END AS regenerations,
       CASE WHEN g.prompts > 1 THEN g.prompts - 1 ELSE 0 END AS edits,
       g.first_child_at, g.last_child_at"""

# --- PostgreSQL ----------------------------------------------------------------------------

#: The columns of ``convotree_current_branch`` (``c``: the conversation, ``n``: a node
#: of its current branch), the same on both backends.
CURRENT_BRANCH_COLUMNS = """
SELECT c.id AS conversation_id, c.tenant_id, c.title AS conversation_title,
       n.id, n.parent_id, n.depth, n.kind, n.role, n.name, n.content, n.model,
       n.tool_calls, n.tool_call_id, n.token_count AS content_tokens, n.overhead_tokens,
       n.input_tokens, n.output_tokens, n.created_at,
       (n.id = c.current_node_id) AS is_current"""

PG_CURRENT_BRANCH = f"""{CURRENT_BRANCH_COLUMNS}
  FROM convotree_conversations c
 CROSS JOIN LATERAL (
       WITH RECURSIVE branch(id, parent_id) AS (
            SELECT a.id, a.parent_id FROM convotree_nodes a
             WHERE a.conversation_id = c.id AND a.id = c.current_node_id
            UNION ALL
            SELECT p.id, p.parent_id FROM branch b
              JOIN convotree_nodes p ON p.id = b.parent_id
             WHERE p.conversation_id = c.id)
       SELECT branch.id FROM branch) b
  JOIN convotree_nodes n ON n.conversation_id = c.id AND n.id = b.id"""

PG_STATS = f"""
SELECT {CONVERSATION}, {STATS_COLUMNS}
  FROM (SELECT c.id AS conversation_id, c.tenant_id, c.title, c.created_at, c.updated_at,
               c.current_node_id, a.*
          FROM convotree_conversations c
          LEFT JOIN LATERAL (
               SELECT {PER_CONVERSATION}
                 FROM (SELECT g.parent_id, {PER_PARENT}
                         FROM convotree_nodes g
                        WHERE g.conversation_id = c.id
                        GROUP BY g.parent_id) p) a ON true) s"""

PG_BRANCH_POINTS = f"""{BRANCH_POINT_COLUMNS}
  FROM convotree_conversations c
 CROSS JOIN LATERAL ({CHILD_GROUP}
         WHERE k.conversation_id = c.id AND k.kind = 'message' AND k.parent_id IS NOT NULL
         GROUP BY k.conversation_id, k.parent_id
        HAVING count(*) > 1) g
  JOIN convotree_nodes p ON p.conversation_id = c.id AND p.id = g.parent_id"""

PG_DAY_OF_CREATED_AT = "CAST((created_at AT TIME ZONE 'UTC') AS date)"
PG_DAY = PG_DAY_OF_CREATED_AT.replace("created_at", "n.created_at")

# --- SQLite --------------------------------------------------------------------------------

SQLITE_CURRENT_BRANCH = f"""
WITH RECURSIVE branch(conversation_id, id, parent_id) AS (
     SELECT a.conversation_id, a.id, a.parent_id
       FROM convotree_conversations h
       JOIN convotree_nodes a ON a.conversation_id = h.id AND a.id = h.current_node_id
     UNION ALL
     SELECT p.conversation_id, p.id, p.parent_id FROM branch b
       JOIN convotree_nodes p ON p.conversation_id = b.conversation_id AND p.id = b.parent_id)
{CURRENT_BRANCH_COLUMNS}
  FROM branch b
  JOIN convotree_conversations c ON c.id = b.conversation_id
  JOIN convotree_nodes n ON n.conversation_id = b.conversation_id AND n.id = b.id"""

def _of_conversation(expression: str, where: str = "") -> str:
    return (f"(SELECT {expression} FROM convotree_nodes k "
            f"WHERE k.conversation_id = c.id{where})")


def _repeats(role: str) -> str:
    """Children of one role beyond the first, summed over the conversation's parents."""
    return (f"(SELECT coalesce(sum(r.n - 1), 0) FROM (SELECT count(*) AS n "
            f"FROM convotree_nodes k WHERE k.conversation_id = c.id AND k.kind = 'message' "
            f"AND k.role = '{role}' GROUP BY k.parent_id HAVING count(*) > 1) r)")


def _children(expression: str, role: str | None = None) -> str:
    of_role = f" AND k.role = '{role}'" if role else ""
    return (f"(SELECT {expression} FROM convotree_nodes k WHERE k.conversation_id = "
            f"p.conversation_id AND k.parent_id = p.id AND k.kind = 'message'{of_role})")


_MESSAGE = " AND k.kind = 'message'"
_SUMMARY = " AND k.kind = 'summary'"

#: SQLite has no LATERAL and does not push a WHERE term into a grouped subquery that
#: holds a LEFT JOIN (which an empty conversation's row needs), but it
#: evaluates a correlated scalar subquery only for the rows a query keeps and only when
#: the query reads that column: each aggregate is one, an index range of the
#: conversation's nodes, so ``WHERE tenant_id = ...`` or ``conversation_id IN (...)``
#: aggregates only those conversations, and only the columns asked for.
SQLITE_STATS = f"""
SELECT c.id AS conversation_id, c.tenant_id, c.title, c.created_at, c.updated_at,
       c.current_node_id,
       {_of_conversation("count(*)", _MESSAGE)} AS messages,
       {_of_conversation("count(*)", _SUMMARY)} AS summaries,
       {_of_conversation("count(*)", _MESSAGE)}
         - {_of_conversation("count(DISTINCT k.parent_id)", _MESSAGE)} AS branches,
       (SELECT count(*) FROM (SELECT 1 FROM convotree_nodes k
         WHERE k.conversation_id = c.id AND k.kind = 'message' AND k.parent_id IS NOT NULL
         GROUP BY k.parent_id HAVING count(*) > 1) r) AS branch_points,
       {_repeats("assistant")} AS regenerations,
       {_repeats("user")} AS edits,
       {_of_conversation("max(k.depth)", _MESSAGE)} AS max_depth,
       {_of_conversation("coalesce(sum(k.token_count), 0)", _MESSAGE)} AS content_tokens,
       {_of_conversation("coalesce(sum(k.token_count), 0)", _SUMMARY)} AS summary_tokens,
       {", ".join(f"{_of_conversation(f'coalesce(sum(k.{name}), 0)')} AS {name}" for name in (
           "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"))},
       coalesce({_of_conversation("min(k.created_at)")}, c.created_at) AS first_activity,
       coalesce({_of_conversation("max(k.created_at)")}, c.created_at) AS last_activity
  FROM convotree_conversations c"""

#: Each node with more than one message child, found by one probe of the children
#: index per node (a filter on the tenant or the conversation applies first).
SQLITE_BRANCH_POINTS = f"""
SELECT p.conversation_id, c.tenant_id, p.id AS node_id, p.depth, p.role, p.model,
       {_children("count(*)")} AS children,
       max({_children("count(*)", "assistant")} - 1, 0) AS regenerations,
       max({_children("count(*)", "user")} - 1, 0) AS edits,
       {_children("min(k.created_at)")} AS first_child_at,
       {_children("max(k.created_at)")} AS last_child_at
  FROM convotree_nodes p
  JOIN convotree_conversations c ON c.id = p.conversation_id
 WHERE {_children("count(*)")} > 1"""

SQLITE_DAY_OF_CREATED_AT = "date(created_at)"
SQLITE_DAY = "date(n.created_at)"


def definitions(dialect: str) -> dict[str, str]:
    """Each view's SELECT on this backend, in creation order.

    ``citus`` is PostgreSQL with distributed tables: the same views, except that
    ``convotree_messages`` computes no ``on_current_branch`` (NULL), since Citus plans
    no recursive CTE across shards; ``convotree_current_branch`` stays as it is and
    Citus refuses it with its own message (docs/scale-out.md says what to use)."""
    postgresql = dialect in ("postgresql", "citus")
    return {
        "convotree_current_branch": PG_CURRENT_BRANCH if postgresql else SQLITE_CURRENT_BRANCH,
        "convotree_messages": _messages(dialect),
        "convotree_conversation_stats": PG_STATS if postgresql else SQLITE_STATS,
        "convotree_usage_daily": _usage_daily(PG_DAY if postgresql else SQLITE_DAY),
        "convotree_branch_points": PG_BRANCH_POINTS if postgresql else SQLITE_BRANCH_POINTS,
    }


def _under_row_level_security() -> bool:
    """Whether ``convotree db enable-rls`` was run on this database (PostgreSQL)."""
    return bool(op.get_bind().exec_driver_sql(
        "SELECT relrowsecurity FROM pg_class WHERE oid = 'convotree_nodes'::regclass"
    ).scalar())


def _readers_of_nodes() -> list[str]:
    """The roles that may read ``convotree_nodes`` (quoted; PUBLIC as is)."""
    bind = op.get_bind()
    quote = bind.dialect.identifier_preparer.quote_identifier
    rows = bind.exec_driver_sql(
        "SELECT DISTINCT grantee FROM information_schema.role_table_grants "
        "WHERE table_schema = current_schema() AND table_name = 'convotree_nodes' "
        "AND privilege_type = 'SELECT' ORDER BY 1").scalars()
    return ["PUBLIC" if role == "PUBLIC" else quote(role) for role in rows]


def create_views(bind: Connection, *, replace: bool = False) -> None:
    """Create the views in the form this database needs; ``replace``: re-create them
    in place (``convotree db distribute`` does, after distributing the tables), keeping
    their grants and ``security_invoker``."""
    # On tables distributed by Citus (`convotree db distribute`): the distributed form.
    dialect = "citus" if is_distributed(bind) else bind.dialect.name
    for name, body in definitions(dialect).items():
        if not replace:
            bind.exec_driver_sql(f"CREATE VIEW {name} AS {body}")
            continue
        options = bind.exec_driver_sql(
            f"SELECT reloptions FROM pg_class WHERE oid = '{name}'::regclass").scalar()
        bind.exec_driver_sql(f"CREATE OR REPLACE VIEW {name} AS {body}")
        if options:   # CREATE OR REPLACE resets a view's options
            bind.exec_driver_sql(f"ALTER VIEW {name} SET ({', '.join(options)})")


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    day = PG_DAY_OF_CREATED_AT if dialect == "postgresql" else SQLITE_DAY_OF_CREATED_AT
    op.execute(f"CREATE INDEX {DAY_INDEX} ON convotree_nodes ({day})")
    create_views(bind)
    if dialect == "postgresql" and _under_row_level_security():
        # A database that already has row-level security (enable-rls ran before this
        # upgrade) gets its views the way enable-rls would leave them: filtered as the
        # role that queries (otherwise they would show every tenant's rows), and
        # readable by whoever may read the nodes, so the reports keep working.
        readers = _readers_of_nodes()
        for name in VIEWS:
            op.execute(f"ALTER VIEW {name} SET (security_invoker = true)")
            if readers:
                op.execute(f"GRANT SELECT ON {name} TO {', '.join(readers)}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.execute(f"DROP INDEX IF EXISTS {DAY_INDEX}")
