"""Database operations, each written once as a function over a SQLAlchemy ``Connection``.

The sync ``Store`` calls these directly inside a transaction it opens; an async store
runs the very same functions through ``AsyncConnection.run_sync``. Nothing here opens
or commits a transaction: the caller decides the boundary, so every multi-row change
is one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, exists, select, text, update

from . import _queries as q
from ._driver import Statement
from ._ids import uuid7
from ._rows import reader
from ._schema import conversations, nodes
from ._validate import PreparedMessage
from .errors import (
    ConversationExists,
    ConversationNotFound,
    InvalidParent,
    NodeNotFound,
    ToolCallMismatch,
)
from .models import Conversation, Node

#: Roles the pruning policy always keeps, like pinned nodes.
ALWAYS_KEPT_ROLES = ("system", "developer")

_PATH = Statement(q.path)
_TAIL = Statement(q.tail)
_TAIL_OF_CURRENT = Statement(lambda lateral: q.tail(lateral, from_current=True))
_NODE = q.node()
_CHILDREN = q.children()
_ROOTS = q.roots()
_TREE = q.tree()
_SHAPE = q.shape()
_NODES_BY_ID = q.nodes_by_id()
_LEAVES_SQLITE = q.leaves_by_anti_join()
#: Ids per statement when reading nodes by id: under every driver's parameter limit.
_IDS_PER_STATEMENT = 500
_PARENT_FOR_APPEND = q.parent_for_append()
_TOOL_CHAIN = q.PerDialect(q.tool_chain)
_CONVERSATION_EXISTS = q.conversation_exists()
_DELETE_SUBTREE = q.PerDialect(q.delete_subtree)
_SUBTREE_IDS = q.PerDialect(q.subtree_ids)
_DELETE_SUMMARIES_BELOW = q.PerDialect(q.delete_summaries_below)
# Built once: appends are the write hot path, and a statement built per call costs
# more than the INSERT itself.
_INSERT_NODE = nodes.insert()
_TOUCH = (update(conversations).where(conversations.c.id == bindparam("cid"))
          .values(updated_at=bindparam("now")))
_MOVE_CURRENT = _TOUCH.values(current_node_id=bindparam("node"))
# The append's statements run on the driver's cursor (see ``_driver``).
_APPEND_UNDER_PARENT = Statement(lambda _: q.append_under_parent())
_APPEND_AND_MOVE = {True: Statement(lambda _: q.append_and_move(True)),
                    False: Statement(lambda _: q.append_and_move(False))}
_TOUCH_FAST = Statement(lambda _: _TOUCH)
_MOVE_CURRENT_FAST = Statement(lambda _: _MOVE_CURRENT)
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


class _Unset:
    """Marks an argument that was not given (None is a value: "clear the title")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def utcnow() -> datetime:
    return datetime.now(UTC)


def _params(tenant: str, conversation_id: uuid.UUID, node_id: uuid.UUID | None = None
            ) -> dict[str, Any]:
    params: dict[str, Any] = {"tenant_id": tenant, "conversation_id": conversation_id}
    if node_id is not None:
        params["node_id"] = node_id
    return params


# --- conversations -----------------------------------------------------------------


def create_conversation(
    conn: Connection,
    *,
    tenant: str,
    title: str | None,
    metadata: Mapping[str, Any] | None,
    conversation_id: uuid.UUID | None = None,
    created_at: datetime | None = None,
) -> Conversation:
    if conversation_id is not None and conn.execute(
            select(conversations.c.id).where(conversations.c.id == conversation_id)
    ).first() is not None:
        # Any tenant's: ids are unique across tenants, and the error does not say whose.
        raise id_in_use(conversation_id)
    now = created_at or utcnow()
    values = {
        "id": conversation_id or uuid7(),
        "tenant_id": tenant,
        "title": title,
        "metadata": dict(metadata) if metadata is not None else None,
        "current_node_id": None,
        "created_at": now,
        "updated_at": now,
    }
    conn.execute(conversations.insert().values(**values))
    return Conversation.from_row(values)


def id_in_use(conversation_id: uuid.UUID) -> ConversationExists:
    """The one error for a chosen id that is taken, whoever holds it."""
    return ConversationExists(
        f"the conversation id {conversation_id} is already in use; choose another id "
        "(or omit id= to get a new one)")


def get_conversation(conn: Connection, *, tenant: str, conversation_id: uuid.UUID
                     ) -> Conversation:
    row = conn.execute(
        select(conversations).where(
            conversations.c.id == conversation_id, conversations.c.tenant_id == tenant
        )
    ).first()
    if row is None:
        raise ConversationNotFound(
            f"no conversation {conversation_id}", conversation_id=conversation_id
        )
    return Conversation.from_row(row._mapping)


def list_conversations(
    conn: Connection, *, tenant: str, limit: int, before: Conversation | None
) -> list[Conversation]:
    """Newest activity first; ``before`` continues a listing (keyset, no OFFSET)."""
    query = select(conversations).where(conversations.c.tenant_id == tenant)
    if before is not None:
        query = query.where(
            (conversations.c.updated_at < before.updated_at)
            | and_(conversations.c.updated_at == before.updated_at,
                   conversations.c.id < before.id)
        )
    query = query.order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
    return [Conversation.from_row(row._mapping) for row in conn.execute(query.limit(limit))]


def update_conversation(
    conn: Connection,
    *,
    tenant: str,
    conversation_id: uuid.UUID,
    title: str | _Unset | None = UNSET,
    metadata: Mapping[str, Any] | _Unset | None = UNSET,
) -> Conversation:
    values: dict[str, Any] = {"updated_at": utcnow()}
    if not isinstance(title, _Unset):
        values["title"] = title
    if not isinstance(metadata, _Unset):
        values["metadata"] = dict(metadata) if metadata is not None else None
    result = conn.execute(
        update(conversations)
        .where(conversations.c.id == conversation_id, conversations.c.tenant_id == tenant)
        .values(**values)
    )
    if result.rowcount == 0:
        raise ConversationNotFound(
            f"no conversation {conversation_id}", conversation_id=conversation_id
        )
    return get_conversation(conn, tenant=tenant, conversation_id=conversation_id)


def delete_conversation(conn: Connection, *, tenant: str, conversation_id: uuid.UUID) -> None:
    """Delete a conversation and, by the cascading foreign key, all of its nodes."""
    result = conn.execute(
        conversations.delete().where(
            conversations.c.id == conversation_id, conversations.c.tenant_id == tenant
        )
    )
    if result.rowcount == 0:
        raise ConversationNotFound(
            f"no conversation {conversation_id}", conversation_id=conversation_id
        )


def _require_conversation(conn: Connection, tenant: str, conversation_id: uuid.UUID) -> None:
    if conn.execute(_CONVERSATION_EXISTS, _params(tenant, conversation_id)).first() is None:
        raise ConversationNotFound(
            f"no conversation {conversation_id}", conversation_id=conversation_id
        )


def _missing_node(conn: Connection, tenant: str, conversation_id: uuid.UUID,
                  node_id: uuid.UUID) -> NodeNotFound:
    """Say precisely what is missing: the conversation, or the node inside it."""
    _require_conversation(conn, tenant, conversation_id)
    return NodeNotFound(
        f"no node {node_id} in conversation {conversation_id}",
        conversation_id=conversation_id,
        node_id=node_id,
    )


# --- appending -----------------------------------------------------------------------


def check_tool_pairing(
    chain: Sequence[Mapping[Any, Any]], message: PreparedMessage, *,
    conversation_id: uuid.UUID,
) -> None:
    """Refuse a message that would break the tool call protocol on its branch.

    ``chain`` runs from the nearest non-tool ancestor down to the parent, through
    the tool results already given. OpenAI rejects a ``tool`` message that answers
    no call of the assistant message right above its run of results, and a new turn
    while calls of that message are still unanswered; both are refused here.
    """
    pending: list[str] = []
    if chain and chain[0]["role"] == "assistant" and chain[0]["tool_calls"]:
        answered = {row["tool_call_id"] for row in chain[1:]}
        pending = [str(c["id"]) for c in chain[0]["tool_calls"] if c["id"] not in answered]
    if message.role == "tool":
        if message.tool_call_id not in pending:
            why = (f"pending calls are {', '.join(pending)}" if pending
                   else "the parent is not an assistant tool call or its results")
            raise ToolCallMismatch(
                f"tool_call_id {message.tool_call_id!r} answers no pending call: {why}",
                conversation_id=conversation_id,
            )
    elif pending and message.kind == "message":
        raise ToolCallMismatch(
            f"tool calls {', '.join(pending)} are not answered yet: append their tool "
            "results before the next message",
            conversation_id=conversation_id,
        )


def append(
    conn: Connection,
    *,
    tenant: str,
    conversation_id: uuid.UUID,
    parent_id: uuid.UUID | None,
    message: PreparedMessage,
    set_current: bool,
    node_id: uuid.UUID | None = None,
) -> Node:
    """Insert one node under ``parent_id`` (or as a root) and return it.

    The common case is two statements: ``INSERT ... SELECT`` from the parent (which
    checks the tenant, computes depth and pointer, and inserts only under a parent the
    tool-call rule cannot object to) and one update of the conversation's clock and
    current node. Otherwise (a root, a tool result, a parent that is a tool call, a
    summary or missing): one read of the parent (tenant-checked), one bounded walk when
    the parent is a tool result, one insert, the update.
    """
    now = utcnow()
    new_id = node_id or uuid7()
    moves = set_current and message.kind == "message"
    if conn.dialect.name == "postgresql" and _quick(parent_id, message):
        made = append_in_one(conn, tenant=tenant, conversation_id=conversation_id,
                             parent_id=parent_id, message=message, set_current=set_current,
                             node_id=new_id, now=now)
        if made is not None:
            return made
    values: dict[str, Any] | None = None
    if _quick(parent_id, message) and conn.dialect.insert_returning:
        values = node_values(conversation_id, new_id, parent_id, 0, None, message, now)
        compiled = _APPEND_UNDER_PARENT.compiled(conn.dialect)
        made_row = compiled.first(conn, _append_params(
            values, tenant, conversation_id, parent_id))
        if made_row is None:
            values = None            # the parent said no: find out why the long way
        else:
            values["depth"] = made_row[0]
            values["pinned_ancestor_id"] = compiled.node_id(made_row[1])
    if values is None:
        values = _insert_the_long_way(conn, tenant, conversation_id, parent_id, message,
                                      new_id, now)
    if moves:
        _MOVE_CURRENT_FAST.run(conn, {"cid": conversation_id, "now": now, "node": new_id})
    else:
        _TOUCH_FAST.run(conn, {"cid": conversation_id, "now": now})
    return Node.from_row(values)


def _quick(parent_id: uuid.UUID | None, message: PreparedMessage) -> bool:
    """Whether the one-statement append may apply (the parent decides the rest)."""
    return parent_id is not None and message.role != "tool" and message.kind == "message"


def _append_params(values: Mapping[str, Any], tenant: str, conversation_id: uuid.UUID,
                   parent_id: uuid.UUID | None) -> dict[str, Any]:
    bound = {f"v_{name}": value for name, value in values.items()}
    bound.update(a_conversation=conversation_id, a_tenant=tenant, a_parent=parent_id)
    return bound


def append_in_one(conn: Connection, *, tenant: str, conversation_id: uuid.UUID,
                  parent_id: uuid.UUID | None, message: PreparedMessage, set_current: bool,
                  node_id: uuid.UUID | None = None, now: datetime | None = None
                  ) -> Node | None:
    """PostgreSQL: the whole append as one statement (``_queries.append_and_move``), or
    None, having written nothing, when the parent does not allow it that way (then
    ``append`` says why, or takes the long way). On a connection in autocommit mode
    the statement is its own transaction: one round trip."""
    if not _quick(parent_id, message):
        return None
    now = now or utcnow()
    values = node_values(conversation_id, node_id or uuid7(), parent_id, 0, None, message, now)
    bound = _append_params(values, tenant, conversation_id, parent_id)
    bound["a_now"] = now
    compiled = _APPEND_AND_MOVE[set_current].compiled(conn.dialect)
    made = compiled.first(conn, bound)
    if made is None:
        return None
    values["depth"], values["pinned_ancestor_id"] = made[0], compiled.node_id(made[1])
    return Node.from_row(values)


def _insert_the_long_way(conn: Connection, tenant: str, conversation_id: uuid.UUID,
                         parent_id: uuid.UUID | None, message: PreparedMessage,
                         new_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    """Read the parent, refuse what it does not allow (precisely), insert; the row."""
    chain: Sequence[Mapping[Any, Any]] = []
    if parent_id is None:
        _require_conversation(conn, tenant, conversation_id)
        depth, pinned_ancestor = 0, None
    else:
        row = conn.execute(_PARENT_FOR_APPEND, _params(tenant, conversation_id, parent_id)).first()
        if row is None:
            raise _missing_node(conn, tenant, conversation_id, parent_id)
        parent = row._mapping
        if parent["kind"] == "summary":
            raise InvalidParent("a summary node cannot have children",
                                conversation_id=conversation_id, node_id=parent_id)
        depth = parent["depth"] + 1
        pinned_ancestor = pinned_anchor(parent_id, parent)
        if parent["role"] == "tool":
            chain = sorted((r._mapping for r in conn.execute(
                _TOOL_CHAIN(conn), _params(tenant, conversation_id, parent_id))),
                key=lambda row: row["depth"])
        else:
            chain = [{**parent, "tool_call_id": None}]
    check_tool_pairing(chain, message, conversation_id=conversation_id)
    values = node_values(conversation_id, new_id, parent_id, depth, pinned_ancestor, message,
                         now)
    conn.execute(_INSERT_NODE, values)
    return values


def pinned_anchor(parent_id: uuid.UUID, parent: Mapping[Any, Any]) -> uuid.UUID | None:
    """``pinned_ancestor_id`` of a child of ``parent``: the parent itself when pruning
    always keeps it (pinned, system, developer), else the parent's own pointer."""
    kept = parent["pinned"] or parent["role"] in ALWAYS_KEPT_ROLES
    return parent_id if kept else parent["pinned_ancestor_id"]


def node_values(conversation_id: uuid.UUID, node_id: uuid.UUID, parent_id: uuid.UUID | None,
                 depth: int, pinned_ancestor: uuid.UUID | None, message: PreparedMessage,
                 now: datetime, summary_base_id: uuid.UUID | None = None) -> dict[str, Any]:
    """The row for a new node."""
    return {
        "conversation_id": conversation_id,
        "id": node_id,
        "parent_id": parent_id,
        "depth": depth,
        "kind": message.kind,
        "role": message.role,
        "content": message.content,
        "parts": message.parts,
        "media": message.media,
        "name": message.name,
        "tool_calls": message.tool_calls,
        "tool_call_id": message.tool_call_id,
        "model": message.model,
        "token_count": message.token_count,
        "overhead_tokens": message.overhead_tokens,
        "encoding": message.encoding,
        "input_tokens": message.input_tokens,
        "output_tokens": message.output_tokens,
        "response_id": message.response_id,
        "finish_reason": message.finish_reason,
        "cached_tokens": message.cached_tokens,
        "reasoning_tokens": message.reasoning_tokens,
        "counted_input_tokens": message.counted_input_tokens,
        "api_items": message.api_items,
        "compacted": message.compacted,
        "pinned": message.pinned,
        "pinned_ancestor_id": pinned_ancestor,
        "summary_base_id": summary_base_id,
        "metadata": message.metadata,
        "created_at": message.created_at or now,
    }


def lock_conversation(conn: Connection, conversation_id: uuid.UUID) -> None:
    """Queue behind any transaction that is replacing this conversation (an import with
    ``replace=True`` holds this lock until it commits). PostgreSQL only: SQLite's
    writers are already serialized by BEGIN IMMEDIATE."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK, {"key": lock_key(conversation_id)})


def lock_key(conversation_id: uuid.UUID) -> int:
    """The 64-bit advisory lock key of a conversation: its id's first 64 bits."""
    return int.from_bytes(conversation_id.bytes[:8], "big", signed=True)


def insert_summary(conn: Connection, *, tenant: str, conversation_id: uuid.UUID,
                   covered_id: uuid.UUID, base_id: uuid.UUID | None,
                   message: PreparedMessage) -> bool:
    """Store a summary under the last node it covers, unless one is already there.

    Insert-or-reuse: the partial unique index on (conversation_id, parent_id) for
    summaries makes a concurrent second insert a no-op (``ON CONFLICT DO NOTHING``).
    Returns whether this call stored it. The conversation's clock is not touched: a
    summary is bookkeeping, not activity. The summarizer ran outside any transaction,
    so the conversation may be being replaced (a re-import) meanwhile: the lock makes
    this wait for that and read the rows as they are after it.
    """
    lock_conversation(conn, conversation_id)
    row = conn.execute(_PARENT_FOR_APPEND, _params(tenant, conversation_id, covered_id)).first()
    if row is None:
        raise _missing_node(conn, tenant, conversation_id, covered_id)
    if row._mapping["kind"] != "message":   # the stored row decides, not the caller's copy
        raise InvalidParent("a summary covers messages, not another summary",
                            conversation_id=conversation_id, node_id=covered_id)
    values = node_values(conversation_id, uuid7(), covered_id, row._mapping["depth"] + 1, None,
                          message, utcnow(), summary_base_id=base_id)
    statement: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        statement = postgresql_insert(nodes)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(nodes)
    stored = conn.execute(
        statement.values(values).on_conflict_do_nothing().returning(nodes.c.id)).first()
    return stored is not None


def check_summary_base(conn: Connection, *, tenant: str, conversation_id: uuid.UUID,
                       covered_id: uuid.UUID, base_id: uuid.UUID) -> None:
    """A caller-given ``base`` must be a summary of the same branch, above ``covered``:
    the summary made from it claims to extend exactly that one. (One walk of the branch;
    only ``add_summary`` pays it, the assembler's own bases are taken from the path.)"""
    try:
        base = get_node(conn, tenant=tenant, conversation_id=conversation_id, node_id=base_id)
    except NodeNotFound:
        raise NodeNotFound(f"base {base_id} is no summary of this conversation",
                           conversation_id=conversation_id, node_id=base_id) from None
    if base.kind != "summary":
        raise InvalidParent(f"base {base_id} is a {base.role} message, not a summary",
                            conversation_id=conversation_id, node_id=base_id)
    branch = {node.id for node in path(conn, tenant=tenant, conversation_id=conversation_id,
                                       node_id=covered_id)}
    if base.parent_id not in branch or base.parent_id == covered_id:
        raise InvalidParent(f"base {base_id} summarizes a span that is not above "
                            f"{covered_id} on its branch", conversation_id=conversation_id,
                            node_id=base_id)


def redact(conn: Connection, *, tenant: str, conversation_id: uuid.UUID, node_id: uuid.UUID,
           message: PreparedMessage) -> int:
    """Replace a node's content in place and drop every summary that covers it.

    A summary covers everything from the root down to the node it hangs under, so the
    summaries covering ``node_id`` are exactly those in its subtree (its own included).
    Returns how many summaries went. One transaction, with the caller's.
    """
    get_node(conn, tenant=tenant, conversation_id=conversation_id, node_id=node_id)
    # The API's own items go too: a replayed Responses output holds the original text
    # (and encrypted reasoning may hold it as well), so keeping them would send it again.
    conn.execute(
        update(nodes).where(nodes.c.conversation_id == conversation_id, nodes.c.id == node_id)
        .values(content=message.content, parts=message.parts, media=message.media,
                token_count=message.token_count, overhead_tokens=message.overhead_tokens,
                encoding=message.encoding, api_items=None, compacted=False))
    params = _params(tenant, conversation_id, node_id)
    return int(conn.execute(_DELETE_SUMMARIES_BELOW(conn), params).rowcount)


# --- reading -------------------------------------------------------------------------


def _nodes(conn: Connection, statement: Any, params: dict[str, Any]) -> list[Node]:
    return [Node.from_row(row._mapping) for row in conn.execute(statement, params).all()]


def get_node(conn: Connection, *, tenant: str, conversation_id: uuid.UUID,
             node_id: uuid.UUID) -> Node:
    found = _nodes(conn, _NODE, _params(tenant, conversation_id, node_id))
    if not found:
        raise _missing_node(conn, tenant, conversation_id, node_id)
    return found[0]


def path(conn: Connection, *, tenant: str, conversation_id: uuid.UUID,
         node_id: uuid.UUID) -> list[Node]:
    rows = _PATH.run(conn, _params(tenant, conversation_id, node_id)).fetchall()
    found = reader(conn.dialect).nodes(rows, conversation_id)
    if not found:
        raise _missing_node(conn, tenant, conversation_id, node_id)
    found.sort(key=_depth)   # leaf first from the walk: linear for a reversed list
    return found


def tail(conn: Connection, *, tenant: str, conversation_id: uuid.UUID,
         node_id: uuid.UUID | None, limit: int) -> list[Node]:
    """The newest ``limit`` nodes of the branch ending at ``node_id`` (None: at the
    conversation's current node), oldest first: one statement bounded by ``limit``."""
    params: dict[str, Any] = {**_params(tenant, conversation_id, node_id), "tail_limit": limit}
    statement = _TAIL if node_id is not None else _TAIL_OF_CURRENT
    rows = statement.run(conn, params).fetchall()
    found = reader(conn.dialect).nodes(rows, conversation_id)
    if not found:
        if node_id is not None:
            raise _missing_node(conn, tenant, conversation_id, node_id)
        _require_conversation(conn, tenant, conversation_id)   # or no current node yet
    found.sort(key=_depth)
    return found


def _depth(node: Node) -> int:
    return node.depth


def children(conn: Connection, *, tenant: str, conversation_id: uuid.UUID,
             node_id: uuid.UUID) -> list[Node]:
    found = _nodes(conn, _CHILDREN, _params(tenant, conversation_id, node_id))
    if not found:
        get_node(conn, tenant=tenant, conversation_id=conversation_id, node_id=node_id)
    return found


def conversation_nodes(conn: Connection, *, tenant: str, conversation_id: uuid.UUID,
                       which: str) -> list[Node]:
    """All nodes (``tree``), the ``roots`` or the ``leaves`` of a conversation."""
    if which == "leaves":
        return leaves(conn, tenant=tenant, conversation_id=conversation_id)
    statement = {"tree": _TREE, "roots": _ROOTS}[which]
    found = _nodes(conn, statement, _params(tenant, conversation_id))
    if not found:
        _require_conversation(conn, tenant, conversation_id)
    return found


def leaves(conn: Connection, *, tenant: str, conversation_id: uuid.UUID) -> list[Node]:
    """Message nodes with no message child, oldest first. SQLite: one anti join. PostgreSQL:
    one read of the tree's shape, then the leaves themselves (see ``_queries.shape``
    for why not the anti join there)."""
    params = _params(tenant, conversation_id)
    if conn.dialect.name == "sqlite":
        leaves_found = _nodes(conn, _LEAVES_SQLITE, params)
        if not leaves_found:
            _require_conversation(conn, tenant, conversation_id)
        return leaves_found
    rows = conn.execute(_SHAPE, params).all()
    if not rows:
        _require_conversation(conn, tenant, conversation_id)
        return []
    parents = {row.parent_id for row in rows if row.kind == "message"}
    ids = [row.id for row in rows if row.kind == "message" and row.id not in parents]
    found: list[Node] = []
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        found += _nodes(conn, _NODES_BY_ID,
                        {**params, "ids": ids[start:start + _IDS_PER_STATEMENT]})
    found.sort(key=_age)
    return found


def _age(node: Node) -> tuple[datetime, uuid.UUID]:
    return node.created_at, node.id


# --- moving and deleting ---------------------------------------------------------------


def set_current(conn: Connection, *, tenant: str, conversation_id: uuid.UUID,
                node_id: uuid.UUID | None) -> None:
    """Point the conversation at a message node of its own (or at nothing)."""
    statement = update(conversations).where(
        conversations.c.id == conversation_id, conversations.c.tenant_id == tenant
    )
    if node_id is not None:
        statement = statement.where(
            exists().where(
                nodes.c.conversation_id == conversation_id,
                nodes.c.id == node_id,
                nodes.c.kind == "message",
            )
        )
    result = conn.execute(statement.values(current_node_id=node_id, updated_at=utcnow()))
    if result.rowcount == 0:
        if node_id is None:
            raise ConversationNotFound(f"no conversation {conversation_id}",
                                       conversation_id=conversation_id)
        found = get_node(conn, tenant=tenant, conversation_id=conversation_id,
                         node_id=node_id)   # NodeNotFound / ConversationNotFound
        raise InvalidParent(f"a {found.kind} cannot be the current node: the current node "
                            "is a message (a branch's leaf)", conversation_id=conversation_id,
                            node_id=node_id)


def delete_subtree(conn: Connection, *, tenant: str, conversation_id: uuid.UUID,
                   node_id: uuid.UUID) -> int:
    """Delete a node and all its descendants; returns how many nodes went.

    If the conversation's current node was inside the subtree, the conversation moves
    to the deleted node's parent (or to nothing, for a root), in the same transaction.
    """
    target = get_node(conn, tenant=tenant, conversation_id=conversation_id, node_id=node_id)
    # Only the walk's own parameters: in an UPDATE, a key named like a column of the
    # table (``tenant_id``) would become a SET value.
    params = {"conversation_id": conversation_id, "node_id": node_id}
    conn.execute(
        update(conversations)
        .where(conversations.c.id == conversation_id,
               conversations.c.current_node_id.in_(_SUBTREE_IDS(conn)))
        .values(current_node_id=target.parent_id),
        params,
    )
    conn.execute(
        update(conversations).where(conversations.c.id == conversation_id)
        .values(updated_at=utcnow())
    )
    return conn.execute(_DELETE_SUBTREE(conn), params).rowcount
