"""Write a whole, already validated conversation in one transaction with batched inserts.

Importing a 100,000-message export through ``Store.append`` would cost a transaction,
a parent read and an update per message. Here a conversation is one transaction: one
read to see whether it is already there, one INSERT of the conversation row, batched
executemany INSERTs of its nodes (parents before children, so the parent foreign key
holds row by row on SQLite and per statement on PostgreSQL), and one UPDATE for the
current node (the conversation row must exist before its nodes, and its current node
after them). Every statement names ``conversation_id``, as the Citus rule requires.

The caller owns the transaction (``Store._transaction(write=True)``: SQLite's
``BEGIN IMMEDIATE`` and driver-error translation) and has validated the rows
(``interchange._build``); nothing here decides whether a message is acceptable.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update

from ._ops import lock_conversation
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
