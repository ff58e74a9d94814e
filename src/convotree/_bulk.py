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

from sqlalchemy import Connection, bindparam, select, update

from ._schema import conversations, nodes
from .errors import InvalidImport

#: Rows per executemany batch: large enough to amortise round trips, small enough to
#: stay under SQLite's and psycopg's parameter limits with every column bound.
BATCH = 1_000

_EXISTING = select(conversations.c.tenant_id).where(conversations.c.id == bindparam("cid"))
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
) -> bool:
    """Insert the conversation and its nodes; False if it is already there (nothing done).

    An id already used by another tenant is refused (``InvalidImport``) without being
    touched, and without saying whose it is.
    """
    conversation_id = conversation["id"]
    existing = conn.execute(_EXISTING, {"cid": conversation_id}).first()
    if existing is not None:
        if existing.tenant_id == tenant:
            return False
        raise InvalidImport(f"conversation id {conversation_id} is already taken",
                            conversation_id=conversation_id)
    conn.execute(_INSERT_CONVERSATION, {**conversation, "tenant_id": tenant,
                                        "current_node_id": None})
    for start in range(0, len(node_rows), BATCH):
        conn.execute(_INSERT_NODES, list(node_rows[start:start + BATCH]))
    if current_node_id is not None:
        conn.execute(_SET_CURRENT, {"cid": conversation_id, "node": current_node_id})
    return True
