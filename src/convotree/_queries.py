"""Statement builders: every SQL statement convotree runs on the tree, and nothing else.

Pure: these functions build SQLAlchemy constructs and touch no engine. Each one is
built once at import (SQLAlchemy caches the compiled form) and takes its values as
bound parameters.

The Citus rule, kept by every statement here: each reference to ``convotree_nodes``
filters ``conversation_id = :conversation_id`` itself, including the recursive member
of every recursive CTE (passing the value along a CTE column is not enough for Citus).
A test listens to every statement the store emits and fails on one that does not.

The plan rule, kept by every tree walk here: on PostgreSQL each step of a walk is a
``LATERAL`` subquery that looks one node up by its full primary key (or its children
by ``(parent_id, conversation_id)``), fenced with ``LIMIT``/``OFFSET`` so the planner
cannot flatten it into a join. The walk is then an index probe per step under ANY
plan: a generic plan of a statement psycopg prepared, or a custom plan made from
statistics taken when the table was small. (As a plain join, PostgreSQL may scan the
whole conversation per step when it believes the conversation has one row: minutes
for a path of 10,000.) SQLite processes a recursive CTE one queued row at a time
through the primary key, so it keeps the plain join (it has no LATERAL). Builders take
``lateral`` and callers pick the statement for their dialect (:class:`PerDialect`).
A test EXPLAINs every statement under ``plan_cache_mode = force_generic_plan`` over
misleading statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    Boolean,
    CompoundSelect,
    Delete,
    Select,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.engine import Connection

from ._schema import conversations, nodes

C = bindparam("conversation_id", type_=nodes.c.conversation_id.type)
TENANT = bindparam("tenant_id", type_=conversations.c.tenant_id.type)
NODE = bindparam("node_id", type_=nodes.c.id.type)

NODE_ID_TYPE = nodes.c.id.type
NODE_COLUMNS = [column for column in nodes.c if column.name != "pinned_ancestor_id"]
NODE_COLUMN_NAMES = tuple(column.name for column in NODE_COLUMNS)

_S = TypeVar("_S")


class PerDialect(Generic[_S]):
    """A statement built once per dialect: LATERAL steps on PostgreSQL, joins on SQLite."""

    def __init__(self, build: Callable[[bool], _S]) -> None:
        self._build = build
        self._made: dict[str, _S] = {}

    def __call__(self, conn: Connection) -> _S:
        name = conn.dialect.name
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = self._build(name == "postgresql")
        return made


def _step_up(walk: Any, link: Any, names: Sequence[str], lateral: bool,
             *, alias: str = "up") -> tuple[Any, Any, list[Any]]:
    """The node whose id is ``link`` (a column of ``walk``), for one step of a walk.

    Returns ``(columns, from_clause, where)``: the node's columns, what to select them
    from, and the conditions to add. With ``lateral``, a LATERAL subquery bounded by
    ``LIMIT 1`` on the full primary key: an index probe whatever the statistics say.
    Otherwise a plain join, filtered on ``conversation_id`` in ``where``.
    """
    up = nodes.alias(alias)
    if lateral:
        probe = (select(*[up.c[name] for name in names])
                 .where(up.c.conversation_id == C, up.c.id == link)
                 .limit(literal_column("1")).lateral(f"{alias}_row"))
        return probe.c, walk.join(probe, true()), []
    return up.c, up.join(walk, up.c.id == link), [up.c.conversation_id == C]


def _tenant_ok() -> Any:
    return exists().where(conversations.c.id == C, conversations.c.tenant_id == TENANT)


def _conversation_of_tenant() -> Select[Any]:
    return select(conversations.c.id).where(
        conversations.c.id == C, conversations.c.tenant_id == TENANT
    )


def conversation_exists() -> Select[Any]:
    """The conversation's id if it exists for the tenant."""
    return _conversation_of_tenant()


def parent_for_append() -> Select[Any]:
    """What an append needs to know about its parent, tenant-checked, in one row."""
    return (
        select(
            nodes.c.depth,
            nodes.c.kind,
            nodes.c.role,
            nodes.c.tool_calls,
            nodes.c.pinned,
            nodes.c.pinned_ancestor_id,
        )
        .join(conversations, conversations.c.id == nodes.c.conversation_id)
        .where(
            nodes.c.conversation_id == C,
            nodes.c.id == NODE,
            conversations.c.id == C,
            conversations.c.tenant_id == TENANT,
        )
    )


#: Columns the tool-call pairing check reads along a run of tool results.
TOOL_CHAIN_COLUMNS = ("id", "parent_id", "role", "depth", "tool_calls", "tool_call_id")


#: An append's own parameter names: an INSERT or UPDATE reserves its columns' names.
APPEND_CONVERSATION = bindparam("a_conversation", type_=nodes.c.conversation_id.type)
APPEND_TENANT = bindparam("a_tenant", type_=conversations.c.tenant_id.type)
APPEND_PARENT = bindparam("a_parent", type_=nodes.c.id.type)


def append_under_parent() -> Any:
    """Insert a message under its parent in ONE statement, when the parent allows it.

    ``INSERT ... SELECT`` from the parent's row (tenant-checked): the depth and the
    ``pinned_ancestor_id`` pointer are computed from it in SQL, so an append needs no
    separate read of the parent. The row is only inserted if the parent is a message
    that is neither a tool result nor an assistant message with tool calls (then the
    tool-call pairing rule has nothing to say about a non-tool message below it);
    otherwise nothing is inserted and the caller takes the long way (read the parent,
    say precisely what is wrong, or walk the run of tool results). ``RETURNING`` the
    computed columns. Values are bound as ``v_<column>``, the rest as ``a_...``.
    (Citus accepts ``INSERT ... SELECT`` from the same conversation.)
    """
    parent = nodes.alias("p")
    kept = _always_kept(parent.c)
    computed = {
        # The parent's own column (equal to the parameter, by the WHERE below): Citus
        # then sees an INSERT ... SELECT that keeps each row on its shard and runs it
        # on the worker, instead of pulling the row through the coordinator.
        "conversation_id": parent.c.conversation_id,
        "parent_id": parent.c.id,
        "depth": parent.c.depth + literal_column("1"),
        "pinned_ancestor_id": case((kept, parent.c.id), else_=parent.c.pinned_ancestor_id),
    }
    names = [column.name for column in nodes.c]
    values = [computed.get(column.name, bindparam(f"v_{column.name}", type_=column.type))
              for column in nodes.c]
    source = (
        select(*values)
        .select_from(parent.join(conversations, conversations.c.id == parent.c.conversation_id))
        .where(parent.c.conversation_id == APPEND_CONVERSATION, parent.c.id == APPEND_PARENT,
               conversations.c.id == APPEND_CONVERSATION,
               conversations.c.tenant_id == APPEND_TENANT,
               parent.c.kind == literal_column("'message'"),
               parent.c.role != literal_column("'tool'"),
               or_(parent.c.role != literal_column("'assistant'"),
                   parent.c.tool_calls.is_(None)))
    )
    return nodes.insert().from_select(names, source).returning(
        nodes.c.depth, nodes.c.pinned_ancestor_id, nodes.c.id, nodes.c.conversation_id)


def append_and_move(set_current: bool) -> Any:
    """PostgreSQL: :func:`append_under_parent` and the conversation's update as ONE
    statement (the insert in a ``WITH``, the update joined to what it inserted: nothing
    inserted, nothing updated). Run alone it is its own transaction: an append is one
    round trip. The foreign key from the conversation to its new current node is
    checked at the end of the statement, when the inserted row is there."""
    inserted = append_under_parent().cte("inserted")
    values: dict[str, Any] = {
        "updated_at": bindparam("a_now", type_=conversations.c.updated_at.type)}
    if set_current:
        values["current_node_id"] = inserted.c.id
    return (update(conversations)
            .where(conversations.c.id == APPEND_CONVERSATION,
                   conversations.c.id == inserted.c.conversation_id)
            .values(**values)
            .returning(inserted.c.depth, inserted.c.pinned_ancestor_id))


def tool_chain(lateral: bool) -> Select[Any]:
    """From a node up through consecutive tool messages to the first non-tool node.

    Used to pair tool results with the assistant message whose calls they answer. The
    walk is bounded by the number of parallel calls, not by the conversation's length.
    Rows in no particular order (the caller sorts them by depth).
    """
    names = TOOL_CHAIN_COLUMNS
    anchor = (
        select(*[nodes.c[name] for name in names])
        .where(nodes.c.conversation_id == C, nodes.c.id == NODE)
        .cte("tool_chain", recursive=True)
    )
    up, source, where = _step_up(anchor, anchor.c.parent_id, names, lateral)
    chain = anchor.union_all(
        select(*[up[name] for name in names]).select_from(source)
        .where(anchor.c.role == literal_column("'tool'"), *where))
    return select(chain.c.id, chain.c.role, chain.c.tool_calls, chain.c.tool_call_id,
                  chain.c.depth)


def path(lateral: bool) -> Select[Any]:
    """Every node from a node up to the root: one recursive CTE carrying the columns.

    Rows in no particular order (they come leaf first): the caller sorts them by depth,
    in linear time for a reversed list, which spares the server a sort of the whole
    path (beyond ``work_mem`` at depth 100,000). The tenant is checked in the anchor.
    """
    names = NODE_COLUMN_NAMES
    anchor = (
        select(*[nodes.c[name] for name in names])
        .where(nodes.c.conversation_id == C, nodes.c.id == NODE, _tenant_ok())
        .cte("path", recursive=True)
    )
    up, source, where = _step_up(anchor, anchor.c.parent_id, names, lateral)
    walk = anchor.union_all(select(*[up[name] for name in names]).select_from(source)
                            .where(*where))
    return select(*[walk.c[name] for name in names])


#: The most nodes one ``tail`` reads (its limit is bound as a parameter).
TAIL_LIMIT = bindparam("tail_limit", type_=nodes.c.depth.type)


def tail(lateral: bool, *, from_current: bool = False) -> Select[Any]:
    """The newest ``:tail_limit`` nodes of a branch: from a node up toward the root,
    one recursive CTE that stops after that many steps (its cost follows the limit, not
    the branch's depth). ``from_current``: start at the conversation's current node,
    read in the anchor itself, so "the tail of the branch the conversation is on" is
    one statement too. Rows in no particular order (the caller sorts them by depth);
    the tenant is checked in the anchor.
    """
    names = NODE_COLUMN_NAMES
    start = (select(conversations.c.current_node_id)
             .where(conversations.c.id == C, conversations.c.tenant_id == TENANT)
             .scalar_subquery()) if from_current else NODE
    anchor = (
        select(*[nodes.c[name] for name in names], literal_column("1").label("tail_n"))
        .where(nodes.c.conversation_id == C, nodes.c.id == start, _tenant_ok())
        .cte("tail", recursive=True)
    )
    up, source, where = _step_up(anchor, anchor.c.parent_id, names, lateral)
    walk = anchor.union_all(
        select(*[up[name] for name in names], anchor.c.tail_n + literal_column("1"))
        .select_from(source).where(anchor.c.tail_n < TAIL_LIMIT, *where))
    return select(*[walk.c[name] for name in names])


def _tenant_nodes() -> Select[Any]:
    return (
        select(*NODE_COLUMNS)
        .join(conversations, conversations.c.id == nodes.c.conversation_id)
        .where(nodes.c.conversation_id == C, conversations.c.id == C,
               conversations.c.tenant_id == TENANT)
    )


def node() -> Select[Any]:
    """One node by id, tenant-checked."""
    return _tenant_nodes().where(nodes.c.id == NODE)


def children() -> Select[Any]:
    """A node's children, oldest first (creation time, then id)."""
    return _tenant_nodes().where(nodes.c.parent_id == NODE).order_by(
        nodes.c.created_at, nodes.c.id
    )


def roots() -> Select[Any]:
    """A conversation's roots, oldest first."""
    return _tenant_nodes().where(nodes.c.parent_id.is_(None)).order_by(
        nodes.c.created_at, nodes.c.id
    )


def tree() -> Select[Any]:
    """Every node of a conversation, parents before children, siblings oldest first."""
    return _tenant_nodes().order_by(nodes.c.depth, nodes.c.created_at, nodes.c.id)


def shape() -> Select[Any]:
    """Id, parent and kind of every node of a conversation, tenant-checked: what
    ``leaves`` needs to tell which nodes end a branch.

    Leaves are found from this in Python rather than with ``NOT EXISTS (a child)``:
    PostgreSQL turns that into an anti join whose inner side, over statistics that
    think the conversation has one row, reads the whole conversation per node. This
    reads it once, through the primary key, under any plan.
    """
    return select(nodes.c.id, nodes.c.parent_id, nodes.c.kind).where(
        nodes.c.conversation_id == C, _tenant_ok())


def leaves_by_anti_join() -> Select[Any]:
    """A conversation's message leaves in one statement, for SQLite: every message node
    with no message child, oldest first. SQLite's planner probes the
    ``(parent_id, conversation_id)`` index once per node, whatever its statistics, so
    this reads the conversation once (the PostgreSQL plan of the same anti join is why
    ``shape`` exists there)."""
    child = nodes.alias("child")
    return (_tenant_nodes()
            .where(nodes.c.kind == "message",
                   ~exists().where(child.c.parent_id == nodes.c.id,
                                   child.c.conversation_id == C,
                                   child.c.kind == "message"))
            .order_by(nodes.c.created_at, nodes.c.id))


def nodes_by_id() -> Select[Any]:
    """Nodes of one conversation by id (``:ids``, expanding), tenant-checked."""
    return _tenant_nodes().where(nodes.c.id.in_(bindparam("ids", expanding=True)))


def subtree_ids(lateral: bool) -> Select[Any]:
    """Ids of a node and all its descendants (one recursive CTE, down the tree).

    On PostgreSQL each step reads a node's children through a LATERAL subquery fenced
    with ``OFFSET 0``: a probe of the ``(parent_id, conversation_id)`` index per node.
    """
    anchor = (
        select(nodes.c.id)
        .where(nodes.c.conversation_id == C, nodes.c.id == NODE)
        .cte("subtree", recursive=True, nesting=True)
    )
    down = nodes.alias("down")
    member: Select[Any]
    if lateral:
        kids = (select(down.c.id).where(down.c.conversation_id == C,
                                        down.c.parent_id == anchor.c.id)
                .offset(literal_column("0")).lateral("down_rows"))
        member = select(kids.c.id).select_from(anchor.join(kids, true()))
    else:
        member = (select(down.c.id).join(anchor, down.c.parent_id == anchor.c.id)
                  .where(down.c.conversation_id == C))
    sub = anchor.union_all(member)
    return select(sub.c.id)


def _in_subtree(column: Any, lateral: bool) -> Any:
    """``column`` is the id of a node in the subtree of ``:node_id``.

    On PostgreSQL as ``= ANY(ARRAY(walk))``: the walk runs once, as an init plan, and
    the rows are then found by index probes. (As ``IN (walk)`` the planner may instead
    read the whole conversation and match it against the walk, when it believes the
    conversation is small.)
    """
    walk = subtree_ids(lateral)
    if lateral:
        return column == any_(func.array(walk.scalar_subquery()))
    return column.in_(walk)


def delete_subtree(lateral: bool) -> Delete:
    """Delete a node and all its descendants in one statement."""
    return delete(nodes).where(nodes.c.conversation_id == C,
                               _in_subtree(nodes.c.id, lateral))


def delete_summaries_below(lateral: bool) -> Delete:
    """Delete the summaries in a node's subtree: those that cover the node."""
    return delete(nodes).where(nodes.c.conversation_id == C, nodes.c.kind == "summary",
                               _in_subtree(nodes.c.parent_id, lateral))


def current_in_subtree(lateral: bool) -> Select[Any]:
    """1 if the conversation's current node is inside the subtree about to go."""
    return select(literal(1)).where(
        conversations.c.id == C,
        conversations.c.current_node_id.in_(subtree_ids(lateral)),
    )


def count_nodes() -> Select[Any]:
    """Number of nodes of one conversation."""
    return select(func.count()).select_from(nodes).where(nodes.c.conversation_id == C)


#: Columns the assembler needs to build and price a message.
WINDOW_COLUMNS = ("id", "depth", "kind", "role", "content", "parts", "media",
                  "name", "tool_calls", "tool_call_id", "token_count", "overhead_tokens",
                  "encoding", "pinned", "api_items", "compacted")


def _always_kept(c: Any) -> Any:
    # Literal SQL, not bound values: the statement compiles once, with no parameters
    # but the five it really takes.
    return or_(c.pinned, c.role == literal_column("'system'"),
               c.role == literal_column("'developer'"))


def _running_cost(c: Any) -> Any:
    """What a node (its columns ``c``) adds to the walk's running sum: kept-always
    nodes are free."""
    return case((_always_kept(c), literal_column("0")),
                else_=c.token_count + c.overhead_tokens)


def _summary_under(source: Any, node_id: Any, lateral: bool) -> tuple[Any, Any]:
    """``source`` outer-joined to the summary hanging under ``node_id``, if any: returns
    the new from clause and the summary's id column. The partial unique index on
    ``(conversation_id, parent_id) WHERE kind = 'summary'`` answers it."""
    summary = nodes.alias("up_summary")
    on = and_(summary.c.conversation_id == C, summary.c.parent_id == node_id,
              summary.c.kind == literal_column("'summary'"))
    if lateral:
        found = (select(summary.c.id).where(on).limit(literal_column("1"))
                 .lateral("up_summary_row"))
        return source.outerjoin(found, true()), found.c.id
    return source.outerjoin(summary, on), summary.c.id


def context_window(lateral: bool) -> CompoundSelect[Any]:
    """The rows a context is built from, in ONE statement of two recursive CTEs.

    ``walk`` climbs from the leaf and stops at the first node whose running token sum
    (stored counts, kept-always nodes free) passes ``:token_limit``, or that has a
    summary under it (a summary covers everything from the root down to the node it
    hangs under), or, when ``:at_compaction`` is true (Responses requests), at an
    answer the API compacted (its compaction item carries everything above it): its
    cost follows the budget, not the conversation's length. ``kept``
    hops the ``pinned_ancestor_id`` pointers from the leaf, so every system, developer
    and pinned node above the cut is found in as many steps as there are such nodes.
    Every reference to the nodes table filters ``conversation_id`` (Citus), in anchors
    and recursive members; the tenant is checked in the anchors. ``source`` says which
    part a row came from: ``walk``, ``kept`` or ``summary``. Each step is an index
    probe under any plan (see the module's plan rule).
    """
    tenant_ok = _tenant_ok()
    carried = (*WINDOW_COLUMNS, "parent_id")
    # A summary under the leaf itself serves the leaf's children, not the leaf.
    walk_anchor = (
        select(*[nodes.c[name] for name in carried], _running_cost(nodes.c).label("running"),
               cast(null(), nodes.c.id.type).label("summary_id"))
        .where(nodes.c.conversation_id == C, nodes.c.id == NODE, tenant_ok)
        .cte("walk", recursive=True)
    )
    up, source, where = _step_up(walk_anchor, walk_anchor.c.parent_id, carried, lateral)
    source, summary_id = _summary_under(source, up.id, lateral)
    walk = walk_anchor.union_all(
        select(*[up[name] for name in carried], walk_anchor.c.running + _running_cost(up),
               summary_id)
        .select_from(source)
        .where(walk_anchor.c.running <= bindparam("token_limit"),
               walk_anchor.c.summary_id.is_(None),
               or_(~walk_anchor.c.compacted, ~bindparam("at_compaction", type_=Boolean())),
               *where)
    )
    hopped = (*WINDOW_COLUMNS, "pinned_ancestor_id")
    kept_anchor = (
        select(*[nodes.c[name] for name in hopped])
        .where(nodes.c.conversation_id == C, nodes.c.id == NODE, tenant_ok)
        .cte("kept", recursive=True)
    )
    hop, hop_source, hop_where = _step_up(kept_anchor, kept_anchor.c.pinned_ancestor_id,
                                          hopped, lateral, alias="hop")
    kept = kept_anchor.union_all(
        select(*[hop[name] for name in hopped]).select_from(hop_source).where(*hop_where))
    summary, summary_source, summary_where = _step_up(
        walk, walk.c.summary_id, WINDOW_COLUMNS, lateral, alias="summary")
    return union_all(
        select(*[walk.c[name] for name in WINDOW_COLUMNS],
               literal_column("'walk'").label("source")),
        select(*[kept.c[name] for name in WINDOW_COLUMNS],
               literal_column("'kept'").label("source")),
        select(*[summary[name] for name in WINDOW_COLUMNS],
               literal_column("'summary'").label("source"))
        .select_from(summary_source)
        .where(walk.c.summary_id.is_not(None), *summary_where),
    )
