"""The database half of the pydantic-ai adapter: records as named heads over one tree.

No pydantic-ai import here: these functions take plain values (ids, JSON, prepared
messages) and run inside one transaction of a ``Store`` each, so the sync ``Store`` and
the ``AsyncStore`` (through SQLAlchemy's greenlet bridge) run the very same code.

The mapping (docs: "Architecture note" of the adapter's page):

- a **tree** is one convotree conversation; a pydantic-ai record and every fork made
  from it are rows of ``convotree_pydantic_ai_records`` keyed by (tree, name), each a
  head pointing at a node of that tree, so every parent stays inside one conversation;
- a record's name finds its tree through ``convotree_pydantic_ai_names``, whose key is
  computed from (tenant, name) alone (``home_id``): one statement on one distribution
  value, never a scan;
- an entry is a node of the tree (role, content and token columns filled, so SQL
  reports and ``Store.context`` work on it) plus its pydantic-ai JSON in
  ``convotree_pydantic_ai_messages``.

Every statement on ``convotree_nodes`` and the adapter's tables filters the
conversation (tree or home) by a parameter, as Citus requires; the only statements that
span conversations are the listing of records (``read_records``), as
``Store.list_conversations`` does.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from .. import _ops
from .. import _queries as q
from .._schema import conversations, nodes
from .._schema import pydantic_ai_messages as messages
from .._schema import pydantic_ai_names as names
from .._schema import pydantic_ai_records as records
from .._validate import PreparedMessage
from ..errors import NodeNotFound
from ..store import Store

__all__ = ["Conflict", "NewEntry", "RecordRow", "delete_record", "home_id", "read_history",
           "read_record", "read_records", "write_record"]

#: The namespace of ``home_id``: fixed forever (changing it would lose every record).
NAMESPACE = uuid.UUID("6f1c2f5e-8a4b-5d0e-9c7a-2b3d4e5f6a70")
#: What ``read_history`` reads when no limit is given (the tail statement needs one).
NO_LIMIT = 2**31 - 1


class Conflict(Exception):
    """The record changed (or vanished) since it was read: the adapter raises
    pydantic-ai's ``ConversationConflict`` for it. Raised inside the transaction, so
    nothing of the write is kept."""


def home_id(tenant: str, name: str) -> uuid.UUID:
    """Where a record's name lives: computed from (tenant, name) alone. NUL cannot occur
    in either (refused before this), so the separator makes the pair unambiguous."""
    return uuid.uuid5(NAMESPACE, f"{tenant}\x00{name}")


@dataclass(frozen=True, slots=True)
class RecordRow:
    """A stored record, as plain values (the adapter turns it into pydantic-ai's)."""

    tree_id: uuid.UUID
    name: str
    head_id: uuid.UUID | None
    branches: list[str]
    usage: Any
    deferred_tool_requests: Any
    scope: str | None
    forked_from: str | None
    forked_at: uuid.UUID | None
    revision: str
    updated_at: datetime
    format_version: int


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to store: its node id, parent, the checked message and its JSON."""

    id: uuid.UUID
    parent_id: uuid.UUID | None
    message: PreparedMessage
    json: Any


def _row(row: Mapping[Any, Any]) -> RecordRow:
    return RecordRow(
        tree_id=row["conversation_id"], name=row["name"], head_id=row["head_id"],
        branches=list(row["branches"]), usage=row["usage"],
        deferred_tool_requests=row["deferred_tool_requests"], scope=row["scope"],
        forked_from=row["forked_from"], forked_at=row["forked_at"], revision=row["revision"],
        updated_at=row["updated_at"], format_version=row["format_version"])


def _tree_of(conn: Connection, tenant: str, name: str) -> uuid.UUID | None:
    found = conn.execute(
        select(names.c.tree_id).where(names.c.conversation_id == home_id(tenant, name),
                                      names.c.tenant_id == tenant, names.c.name == name)
    ).scalar()
    return found if isinstance(found, uuid.UUID) else None


def tree_of_entry(store: Store, entry_id: uuid.UUID) -> uuid.UUID | None:
    """The tree of the tenant's entry ``entry_id``, found by the id alone (one indexed
    statement; under Citus a query on every shard), or None when the tenant has no such
    entry or, hand-made ids reused, more than one tree holds it."""
    query = (select(messages.c.conversation_id)
             .join(conversations, conversations.c.id == messages.c.conversation_id)
             .where(messages.c.node_id == entry_id, conversations.c.tenant_id == store.tenant)
             .limit(2))
    with store._transaction(write=False) as conn:
        found = list(conn.execute(query).scalars())
    return found[0] if len(found) == 1 and isinstance(found[0], uuid.UUID) else None


def _record(conn: Connection, tenant: str, tree_id: uuid.UUID, name: str, *,
            lock: bool = False) -> RecordRow | None:
    query = select(records).where(records.c.conversation_id == tree_id,
                                  records.c.name == name, records.c.tenant_id == tenant)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()   # SQLite: BEGIN IMMEDIATE already serializes
    row = conn.execute(query).first()
    return None if row is None else _row(row._mapping)


def read_record(store: Store, name: str) -> RecordRow | None:
    """The record called ``name``, or None: two statements, each on one key."""
    with store._transaction(write=False) as conn:
        tree_id = _tree_of(conn, store.tenant, name)
        return None if tree_id is None else _record(conn, store.tenant, tree_id, name)


def read_records(store: Store, scope: str | None, limit: int | None) -> list[RecordRow]:
    """The tenant's records (of ``scope``), most recently saved first. Spans every tree,
    like ``Store.list_conversations`` (under Citus: a query on every shard)."""
    query = select(records).where(records.c.tenant_id == store.tenant)
    if scope is not None:
        query = query.where(records.c.scope == scope)
    query = query.order_by(records.c.updated_at.desc(), records.c.name.desc())
    if limit is not None:
        query = query.limit(limit)
    with store._transaction(write=False) as conn:
        return [_row(row._mapping) for row in conn.execute(query)]


# --- history: one statement ----------------------------------------------------------------


def _history(lateral: bool) -> Any:
    """The newest ``:tail_limit`` entries up to a head with their JSON: convotree's own
    tail walk (``_queries.tail``, bounded by the limit, tenant-checked) joined to the
    messages of the same tree. A node without JSON comes back with NULL (reported)."""
    walk = q.tail(lateral).subquery("walk")
    return (select(walk.c.id, walk.c.parent_id, walk.c.depth, messages.c.message)
            .select_from(walk.outerjoin(messages, and_(
                messages.c.conversation_id == q.C, messages.c.node_id == walk.c.id))))


_HISTORY = q.PerDialect(_history)


def read_history(store: Store, tree_id: uuid.UUID, head_id: uuid.UUID, limit: int | None
                 ) -> list[tuple[uuid.UUID, uuid.UUID | None, Any]]:
    """(id, parent id, JSON) of the entries from the root (or the ``limit``-th newest)
    to ``head_id``, oldest first; ``NodeNotFound`` (a ``LookupError``) when the head is
    not in the tree (released by a concurrent delete, which pydantic-ai retries)."""
    if limit == 0:
        return []
    with store._one_read() as conn:
        found = conn.execute(_HISTORY(conn), {
            "conversation_id": tree_id, "node_id": head_id, "tenant_id": store.tenant,
            "tail_limit": NO_LIMIT if limit is None else limit}).all()
    rows = sorted(found, key=lambda row: row[2])
    if not rows:
        raise NodeNotFound(f"no entry {head_id} in conversation tree {tree_id}",
                           conversation_id=tree_id, node_id=head_id)
    for row in rows:
        if row[3] is None:
            raise NodeNotFound(
                f"node {row[0]} on the history of {head_id} is not a pydantic-ai entry "
                "(it was appended to the tree by other code)",
                conversation_id=tree_id, node_id=row[0])
    return [(row[0], row[1], row[3]) for row in rows]


# --- writing -------------------------------------------------------------------------------


def _node_in_tree(conn: Connection, tenant: str, tree_id: uuid.UUID, node_id: uuid.UUID
                  ) -> bool:
    return conn.execute(q.node(), {"conversation_id": tree_id, "node_id": node_id,
                                   "tenant_id": tenant}).first() is not None


def write_record(store: Store, *, name: str, record: Mapping[str, Any],
                 entries: Sequence[NewEntry], expected_revision: str | None,
                 tree_hint: uuid.UUID | None) -> uuid.UUID:
    """Store ``record`` and its new entries in ONE transaction, replacing the record of
    ``expected_revision`` (None: there must be none). Raises ``Conflict`` (nothing
    written) when the stored revision differs, or the head or a parent is not in the
    tree (a concurrent delete released it). Returns the tree.

    ``tree_hint``: for a new record, the tree its head or first parent is in (a fork);
    None makes it a tree of its own at ``home_id(name)``.
    """
    tenant = store.tenant
    head_id: uuid.UUID | None = record["head_id"]
    with store._transaction(write=True) as conn:
        if expected_revision is None:
            tree_id = tree_hint or home_id(tenant, name)
            known = _tree_of(conn, tenant, name)
            if known is not None:
                if _record(conn, tenant, known, name) is not None:
                    raise Conflict(name)
                # A name whose tree was deleted through Store.delete_conversation (the
                # cascade took the record, not the name, which lives on another key).
                conn.execute(delete(names).where(
                    names.c.conversation_id == home_id(tenant, name),
                    names.c.tenant_id == tenant))
            try:
                # The name first: of two concurrent creators, the second fails here.
                with conn.begin_nested():
                    conn.execute(insert(names).values(
                        conversation_id=home_id(tenant, name), tenant_id=tenant, name=name,
                        tree_id=tree_id))
            except IntegrityError:
                raise Conflict(name) from None
            if tree_hint is None:
                if conn.execute(select(conversations.c.id).where(
                        conversations.c.id == tree_id)).first() is None:
                    _ops.create_conversation(
                        conn, tenant=tenant, title=name,
                        metadata={"pydantic_ai_conversation_id": name},
                        conversation_id=tree_id, created_at=record["updated_at"])
            elif not _node_in_tree(conn, tenant, tree_id, _anchor(record, entries, tree_id)):
                raise Conflict(name)
            stored = None
        else:
            found = _tree_of(conn, tenant, name)
            if found is None:
                raise Conflict(name)
            tree_id = found
            stored = _record(conn, tenant, tree_id, name, lock=True)
            if stored is None or stored.revision != expected_revision:
                raise Conflict(name)
        try:
            made = {entry.id for entry in entries}
            for entry in entries:
                try:
                    _ops.append(conn, tenant=tenant, conversation_id=tree_id,
                                parent_id=entry.parent_id, message=entry.message,
                                set_current=True, node_id=entry.id)
                except NodeNotFound:
                    raise Conflict(name) from None   # the parent was released meanwhile
            if entries:   # the JSON of every new entry in one executemany
                conn.execute(insert(messages), [
                    {"conversation_id": tree_id, "node_id": entry.id, "message": entry.json}
                    for entry in entries])
            if head_id is not None and head_id not in made and not _node_in_tree(
                    conn, tenant, tree_id, head_id):
                raise Conflict(name)
            for tip in record["branches"]:
                if not _node_in_tree(conn, tenant, tree_id, uuid.UUID(tip)):
                    raise Conflict(name)
            values = {**record, "tenant_id": tenant}
            if stored is None:
                conn.execute(insert(records).values(conversation_id=tree_id, name=name, **values))
            else:
                conn.execute(update(records).where(
                    records.c.conversation_id == tree_id, records.c.name == name,
                    records.c.tenant_id == tenant).values(**values))
        except IntegrityError:
            # A foreign key found the head or a parent gone: a concurrent delete of the
            # record that reached it released it after the checks above.
            raise Conflict(name) from None
        return tree_id


def _anchor(record: Mapping[str, Any], entries: Sequence[NewEntry], tree_id: uuid.UUID
            ) -> uuid.UUID:
    """The existing node a new record over another record's tree hangs from."""
    anchor = entries[0].parent_id if entries else record["head_id"]
    if anchor is None:   # (the caller passes a hint only with an anchor)
        raise Conflict(str(tree_id))
    return anchor


# --- deleting, and the garbage collection of entries -------------------------------------


def _gc(lateral: bool) -> Any:
    """Delete every node of the tree that no head or branch tip reaches (walking up
    from them), except summaries hanging under a reached node. One statement."""
    reach_anchor = (select(nodes.c.id, nodes.c.parent_id)
                    .where(nodes.c.conversation_id == q.C,
                           nodes.c.id.in_(bindparam("keep", expanding=True)))
                    .cte("reach", recursive=True))
    # Each step up is an index probe on the full key (LATERAL on PostgreSQL), as in
    # every convotree walk: no plan can read the conversation once per step.
    up, source, where = q._step_up(reach_anchor, reach_anchor.c.parent_id,
                                   ["id", "parent_id"], lateral)
    reach = reach_anchor.union(select(up["id"], up["parent_id"]).select_from(source)
                               .where(*where))
    reached = select(reach.c.id)
    return (delete(nodes)
            .where(nodes.c.conversation_id == q.C,
                   nodes.c.id.not_in(reached),
                   ~and_(nodes.c.kind == "summary", nodes.c.parent_id.in_(reached)))
            .add_cte(reach))


_GC = q.PerDialect(_gc)


def delete_record(store: Store, name: str, expected_revision: str) -> None:
    """Delete the record of ``expected_revision`` (else ``Conflict``) and, in the same
    transaction, every entry of its tree that no remaining record's head or branch
    reaches; the whole tree when no record is left over it."""
    tenant = store.tenant
    with store._transaction(write=True) as conn:
        tree_id = _tree_of(conn, tenant, name)
        if tree_id is None:
            raise Conflict(name)
        stored = _record(conn, tenant, tree_id, name, lock=True)
        if stored is None or stored.revision != expected_revision:
            raise Conflict(name)
        conn.execute(delete(records).where(
            records.c.conversation_id == tree_id, records.c.name == name,
            records.c.tenant_id == tenant))
        conn.execute(delete(names).where(names.c.conversation_id == home_id(tenant, name),
                                         names.c.tenant_id == tenant))
        # Lock the other heads of the tree: a concurrent save over it waits, then
        # finds its parents either kept (reachable) or gone (Conflict, it retries).
        others = (select(records.c.head_id, records.c.branches)
                  .where(records.c.conversation_id == tree_id, records.c.tenant_id == tenant))
        if conn.dialect.name == "postgresql":
            others = others.with_for_update()
        remaining = conn.execute(others).all()
        if not remaining:
            _ops.delete_conversation(conn, tenant=tenant, conversation_id=tree_id)
            return
        keep = {head for head, _ in remaining if head is not None}
        keep.update(uuid.UUID(tip) for _, tips in remaining for tip in tips)
        # The conversation's current node must survive (foreign key): move it to a head.
        current = conn.execute(select(conversations.c.current_node_id).where(
            conversations.c.id == tree_id, conversations.c.tenant_id == tenant)).scalar()
        if current is not None and current not in keep:
            heads = [head for head, _ in remaining if head is not None]
            conn.execute(update(conversations).where(conversations.c.id == tree_id)
                         .values(current_node_id=heads[0] if heads else None))
        if not keep:
            conn.execute(delete(nodes).where(nodes.c.conversation_id == tree_id))
            return
        conn.execute(_GC(conn), {"conversation_id": tree_id, "keep": sorted(keep)})

