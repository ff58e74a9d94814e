"""Write whole, already validated conversations with batched statements.

Importing a 100,000-message export through ``Store.append`` would cost a transaction,
a parent read and an update per message. Here a batch of conversations is written with
a handful of statements whatever its size: the advisory locks of all of them, one read
to see which are already there, one DELETE of those being replaced, executemany
INSERTs of the conversation rows and of their nodes (parents before children, so the
parent foreign key holds row by row on SQLite and per statement on PostgreSQL), and
one executemany UPDATE for the current nodes (the conversation row must exist before
its nodes, and its current node after them). Every statement names
``conversation_id``, as the Citus rule requires. Each conversation is still all or
nothing: the caller writes a batch in one transaction, and if the database refuses it,
writes its conversations again one savepoint each (``interchange._runner``).

The caller owns the transaction (``Store._transaction(write=True)``: SQLite's
``BEGIN IMMEDIATE`` and driver-error translation) and has validated the rows
(``interchange._build``); nothing here decides whether a message is acceptable.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, text, update

from ._ops import lock_conversation, lock_key
from ._schema import conversations, nodes
from .errors import InvalidImport

#: Rows per executemany batch: large enough to amortise round trips, small enough to
#: stay under SQLite's and psycopg's parameter limits with every column bound.
BATCH = 1_000

_EXISTING = select(conversations.c.id, conversations.c.tenant_id).where(
    conversations.c.id.in_(bindparam("ids", expanding=True)))
_DELETE = delete(conversations).where(
    conversations.c.id.in_(bindparam("ids", expanding=True)),
    conversations.c.tenant_id == bindparam("tenant"))
_INSERT_CONVERSATION = conversations.insert()
_INSERT_NODES = nodes.insert()
_SET_CURRENT = (update(conversations).where(conversations.c.id == bindparam("cid"))
                .values(current_node_id=bindparam("node")))
# One statement for a batch's locks, taken in key order (two importers of overlapping
# files then queue instead of deadlocking).
_LOCK_ALL = text("SELECT count(pg_advisory_xact_lock(key)) FROM "
                 "unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS k(key, n)")


def insert_conversation(
    conn: Connection,
    *,
    tenant: str,
    conversation: Mapping[str, Any],
    node_rows: Sequence[Mapping[str, Any]],
    current_node_id: uuid.UUID | None,
    aliases: Sequence[uuid.UUID] = (),
    replace: bool = False,
) -> str:
    """Insert the conversation and its nodes; returns ``"inserted"``, ``"skipped"``
    (this tenant already has it: nothing done) or ``"replaced"``.

    ``aliases`` are other ids under which the tenant may already hold this conversation
    (the same record imported from another format, or a conversation convotree made
    and exported); any of them counts as "already there". With ``replace``, the copies
    already there are deleted and this one is written, in the same transaction.
    An id already used by another tenant is refused (``InvalidImport``) without being
    touched, and without saying whose it is.
    """
    conversation_id = conversation["id"]
    # Two imports of one conversation at once (two processes, or two `convotree demo`)
    # queue here instead of both inserting; so does a summary being stored into it.
    lock_conversation(conn, conversation_id)
    ids = list(dict.fromkeys([conversation_id, *aliases]))
    existing = conn.execute(_EXISTING, {"ids": ids}).all()
    if any(row.id == conversation_id and row.tenant_id != tenant for row in existing):
        raise InvalidImport(f"conversation id {conversation_id} is already taken",
                            conversation_id=conversation_id)
    mine = [row.id for row in existing if row.tenant_id == tenant]
    if mine and not replace:
        return "skipped"
    if mine:
        conn.execute(_DELETE, {"ids": mine, "tenant": tenant})
    conn.execute(_INSERT_CONVERSATION, {**conversation, "tenant_id": tenant,
                                        "current_node_id": None})
    for start in range(0, len(node_rows), BATCH):
        conn.execute(_INSERT_NODES, list(node_rows[start:start + BATCH]))
    if current_node_id is not None:
        conn.execute(_SET_CURRENT, {"cid": conversation_id, "node": current_node_id})
    return "replaced" if mine else "inserted"


def insert_conversations(
    conn: Connection,
    *,
    tenant: str,
    batch: Sequence[Any],
    replace: bool = False,
) -> list[str | InvalidImport]:
    """Write a batch of built conversations (``interchange._build.Rows``), in order.

    Returns, per conversation, what ``insert_conversation`` would: ``"inserted"``,
    ``"skipped"``, ``"replaced"``, or the ``InvalidImport`` for an id another tenant
    holds (nothing written for that one). A database error aborts the whole batch: the
    caller's transaction then rolls back and it retries one conversation at a time.
    """
    if not batch:
        return []
    ids = [rows.conversation["id"] for rows in batch]
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_ALL, {"keys": sorted({lock_key(i) for i in ids})})
    wanted = list(dict.fromkeys(i for rows in batch
                                for i in (rows.conversation["id"], *rows.aliases)))
    owner: dict[uuid.UUID, str] = {}
    for start in range(0, len(wanted), BATCH):
        owner.update((row.id, row.tenant_id) for row in conn.execute(
            _EXISTING, {"ids": wanted[start:start + BATCH]}))
    outcomes: list[str | InvalidImport] = []
    doomed: list[uuid.UUID] = []
    writing: list[Any] = []
    for rows in batch:
        conversation_id = rows.conversation["id"]
        if owner.get(conversation_id, tenant) != tenant:
            outcomes.append(InvalidImport(f"conversation id {conversation_id} is already "
                                          "taken", conversation_id=conversation_id))
            continue
        mine = [i for i in (conversation_id, *rows.aliases) if owner.get(i) == tenant]
        if mine and not replace:
            outcomes.append("skipped")
            continue
        doomed += mine
        writing.append(rows)
        outcomes.append("replaced" if mine else "inserted")
    for start in range(0, len(doomed), BATCH):
        conn.execute(_DELETE, {"ids": doomed[start:start + BATCH], "tenant": tenant})
    if writing:
        conn.execute(_INSERT_CONVERSATION, [
            {**rows.conversation, "tenant_id": tenant, "current_node_id": None}
            for rows in writing])
        node_rows = [row for rows in writing for row in rows.nodes]
        for start in range(0, len(node_rows), BATCH):
            conn.execute(_INSERT_NODES, node_rows[start:start + BATCH])
        current = [{"cid": rows.conversation["id"], "node": rows.current_node_id}
                   for rows in writing if rows.current_node_id is not None]
        if current:
            conn.execute(_SET_CURRENT, current)
    return outcomes
