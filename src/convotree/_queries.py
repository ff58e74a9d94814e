"""Statement builders: every SQL statement convotree runs on the tree, and nothing else.

Pure: these functions build SQLAlchemy constructs and touch no engine. Each one is
built once at import (SQLAlchemy caches the compiled form) and takes its values as
bound parameters.

The Citus rule, kept by every statement here: each reference to ``convotree_nodes``
filters ``conversation_id = :conversation_id`` itself, including the recursive member
of every recursive CTE (passing the value along a CTE column is not enough for Citus).
A test listens to every statement the store emits and fails on one that does not.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    CTE,
    Boolean,
    CompoundSelect,
    Delete,
    Select,
    and_,
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
    union_all,
)

from ._schema import conversations, nodes

C = bindparam("conversation_id", type_=nodes.c.conversation_id.type)
TENANT = bindparam("tenant_id", type_=conversations.c.tenant_id.type)
NODE = bindparam("node_id", type_=nodes.c.id.type)

NODE_ID_TYPE = nodes.c.id.type
NODE_COLUMNS = [column for column in nodes.c if column.name != "pinned_ancestor_id"]


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


def tool_chain() -> Select[Any]:
    """From a node up through consecutive tool messages to the first non-tool node.

    Used to pair tool results with the assistant message whose calls they answer. The
    walk is bounded by the number of parallel calls, not by the conversation's length.
    """
    anchor = (
        select(nodes.c.id, nodes.c.parent_id, nodes.c.role, nodes.c.depth)
        .where(nodes.c.conversation_id == C, nodes.c.id == NODE)
        .cte("tool_chain", recursive=True)
    )
    up = nodes.alias("up")
    recursive = (
        select(up.c.id, up.c.parent_id, up.c.role, up.c.depth)
        .join(anchor, and_(up.c.id == anchor.c.parent_id, anchor.c.role == "tool"))
        .where(up.c.conversation_id == C)
    )
    chain = anchor.union_all(recursive)
    n = nodes.alias("n")
    return (
        select(n.c.id, n.c.role, n.c.tool_calls, n.c.tool_call_id)
        .join(chain, chain.c.id == n.c.id)
        .where(n.c.conversation_id == C)
        .order_by(chain.c.depth)
    )


def _path_cte(name: str) -> CTE:
    anchor = (
        select(nodes.c.id, nodes.c.parent_id, nodes.c.depth)
        .where(nodes.c.conversation_id == C, nodes.c.id == NODE)
        .cte(name, recursive=True)
    )
    up = nodes.alias("up")
    recursive = (
        select(up.c.id, up.c.parent_id, up.c.depth)
        .join(anchor, up.c.id == anchor.c.parent_id)
        .where(up.c.conversation_id == C)
    )
    return anchor.union_all(recursive)


def path() -> Select[Any]:
    """Every node from the root down to a node: one recursive CTE, root first.

    The final join to conversations applies the tenant check in the same statement.
    """
    walk = _path_cte("path")
    n = nodes.alias("n")
    return (
        select(*[n.c[column.name] for column in NODE_COLUMNS])
        .join(walk, walk.c.id == n.c.id)
        .join(conversations, conversations.c.id == n.c.conversation_id)
        .where(n.c.conversation_id == C, conversations.c.id == C,
               conversations.c.tenant_id == TENANT)
        .order_by(walk.c.depth)
    )


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


def leaves() -> Select[Any]:
    """Message nodes with no message children: each one identifies a whole branch."""
    child = nodes.alias("child")
    has_child = exists().where(
        child.c.conversation_id == C,
        child.c.parent_id == nodes.c.id,
        child.c.kind == "message",
    )
    return (
        _tenant_nodes()
        .where(nodes.c.kind == "message", ~has_child)
        .order_by(nodes.c.created_at, nodes.c.id)
    )


def subtree_ids() -> Select[Any]:
    """Ids of a node and all its descendants (one recursive CTE, down the tree)."""
    anchor = (
        select(nodes.c.id)
        .where(nodes.c.conversation_id == C, nodes.c.id == NODE)
        .cte("subtree", recursive=True, nesting=True)
    )
    down = nodes.alias("down")
    recursive = (
        select(down.c.id)
        .join(anchor, down.c.parent_id == anchor.c.id)
        .where(down.c.conversation_id == C)
    )
    sub = anchor.union_all(recursive)
    return select(sub.c.id)


def delete_subtree() -> Delete:
    """Delete a node and all its descendants in one statement."""
    return delete(nodes).where(nodes.c.conversation_id == C, nodes.c.id.in_(subtree_ids()))


def delete_summaries_below() -> Delete:
    """Delete the summaries in a node's subtree: those that cover the node."""
    return delete(nodes).where(nodes.c.conversation_id == C, nodes.c.kind == "summary",
                               nodes.c.parent_id.in_(subtree_ids()))


def current_in_subtree() -> Select[Any]:
    """1 if the conversation's current node is inside the subtree about to go."""
    return select(literal(1)).where(
        conversations.c.id == C,
        conversations.c.current_node_id.in_(subtree_ids()),
    )


def count_nodes() -> Select[Any]:
    """Number of nodes of one conversation."""
    return select(func.count()).select_from(nodes).where(nodes.c.conversation_id == C)


#: Columns the assembler needs to build and price a message.
WINDOW_COLUMNS = ("id", "depth", "kind", "role", "content", "parts", "media",
                  "name", "tool_calls", "tool_call_id", "token_count", "overhead_tokens",
                  "encoding", "pinned", "api_items", "compacted")


def _always_kept(table: Any) -> Any:
    # Literal SQL, not bound values: the statement compiles once, with no parameters
    # but the four it really takes.
    return or_(table.c.pinned, table.c.role == literal_column("'system'"),
               table.c.role == literal_column("'developer'"))


def _running_cost(table: Any) -> Any:
    """What a node adds to the walk's running sum: kept-always nodes are free."""
    return case((_always_kept(table), literal_column("0")),
                else_=table.c.token_count + table.c.overhead_tokens)


def _summary_of(table: Any, alias: str) -> tuple[Any, Any]:
    """An outer join to the summary hanging under ``table``'s row, if there is one."""
    summary = nodes.alias(alias)
    on = and_(summary.c.conversation_id == C, summary.c.parent_id == table.c.id,
              summary.c.kind == literal_column("'summary'"))
    return summary, on


def context_window() -> CompoundSelect[Any]:
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
    part a row came from: ``walk``, ``kept`` or ``summary``.
    """
    cost = _running_cost(nodes)
    tenant_ok = exists().where(conversations.c.id == C, conversations.c.tenant_id == TENANT)
    # A summary under the leaf itself serves the leaf's children, not the leaf.
    walk_anchor = (
        select(*[nodes.c[name] for name in WINDOW_COLUMNS], nodes.c.parent_id,
               cost.label("running"), cast(null(), nodes.c.id.type).label("summary_id"))
        .where(nodes.c.conversation_id == C, nodes.c.id == NODE, tenant_ok)
        .cte("walk", recursive=True)
    )
    up = nodes.alias("up")
    up_summary, up_on = _summary_of(up, "up_summary")
    walk = walk_anchor.union_all(
        select(*[up.c[name] for name in WINDOW_COLUMNS], up.c.parent_id,
               (walk_anchor.c.running + _running_cost(up)), up_summary.c.id)
        .select_from(up.join(walk_anchor, up.c.id == walk_anchor.c.parent_id)
                     .outerjoin(up_summary, up_on))
        .where(up.c.conversation_id == C, walk_anchor.c.running <= bindparam("token_limit"),
               walk_anchor.c.summary_id.is_(None),
               or_(~walk_anchor.c.compacted, ~bindparam("at_compaction", type_=Boolean())))
    )
    kept_anchor = (
        select(*[nodes.c[name] for name in WINDOW_COLUMNS], nodes.c.pinned_ancestor_id)
        .where(nodes.c.conversation_id == C, nodes.c.id == NODE, tenant_ok)
        .cte("kept", recursive=True)
    )
    hop = nodes.alias("hop")
    kept = kept_anchor.union_all(
        select(*[hop.c[name] for name in WINDOW_COLUMNS], hop.c.pinned_ancestor_id)
        .join(kept_anchor, hop.c.id == kept_anchor.c.pinned_ancestor_id)
        .where(hop.c.conversation_id == C)
    )
    summary = nodes.alias("summary")
    return union_all(
        select(*[walk.c[name] for name in WINDOW_COLUMNS],
               literal_column("'walk'").label("source")),
        select(*[kept.c[name] for name in WINDOW_COLUMNS],
               literal_column("'kept'").label("source")),
        select(*[summary.c[name] for name in WINDOW_COLUMNS],
               literal_column("'summary'").label("source"))
        .join(walk, summary.c.id == walk.c.summary_id)
        .where(summary.c.conversation_id == C),
    )
