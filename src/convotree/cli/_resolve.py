"""Ids as people type them: a full UUID, or any unique part of one.

UUIDv7 ids begin with a millisecond timestamp, so ids made in the same minute share
their first 8-10 digits; only their last digits are random. The CLI therefore shows
the last 8 hex digits as the short id, and accepts any part of an id that is unique
(at least 4 hex digits, dashes ignored): the short id, its start, or the id's start.
Nodes are looked up inside their conversation only (the schema is sharded by
conversation; a node id alone would have to be searched on every shard).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import Text, cast, func, select

from .._schema import conversations, nodes
from ..models import Node
from ..store import Store
from ._common import CliError

__all__ = ["resolve_conversation", "resolve_node", "short"]

_HEX = re.compile(r"[0-9a-f]{4,32}")
_MATCHES = 3


def short(value: uuid.UUID | None) -> str:
    """The random tail of an id: what the CLI shows and accepts."""
    return "-" if value is None else value.hex[-8:]


def _fragment(text: str, what: str) -> str | uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    fragment = text.strip().lower().replace("-", "").lstrip(".…")
    if not _HEX.fullmatch(fragment):
        raise CliError(f"not a {what} id: {text!r} (give the id, or at least 4 of its "
                       "hex digits)")
    return fragment


def _hex(column: Any) -> Any:
    # SQLite stores 32 hex digits, PostgreSQL's uuid prints with dashes: compare both
    # without dashes.
    return func.replace(cast(column, Text), "-", "")


def _pick(rows: list[uuid.UUID], text: str, what: str) -> uuid.UUID:
    if not rows:
        raise CliError(f"no {what} matches {text!r}")
    if len(rows) > 1:
        listed = ", ".join(str(r) for r in rows[:_MATCHES])
        raise CliError(f"{text!r} matches several {what}s ({listed}, ...): give more digits")
    return rows[0]


def resolve_conversation(store: Store, text: str) -> uuid.UUID:
    """The id of the store tenant's conversation that ``text`` names."""
    fragment = _fragment(text, "conversation")
    if isinstance(fragment, uuid.UUID):
        return store.get_conversation(fragment).id  # ConversationNotFound if unknown
    column = _hex(conversations.c.id)
    query = (select(conversations.c.id)
             .where(conversations.c.tenant_id == store.tenant,
                    column.contains(fragment))
             .limit(_MATCHES + 1))
    with store._transaction(write=False) as conn:   # tenant-scoped (RLS)
        rows = list(conn.scalars(query))
    return _pick(rows, text, "conversation")


def resolve_node(store: Store, conversation_id: uuid.UUID, text: str | None) -> Node:
    """The node ``text`` names in the conversation; its current node when ``text`` is None."""
    if text is None:
        node = store.current(conversation_id)
        if node is None:
            raise CliError(f"conversation {conversation_id} has no messages")
        return node
    fragment = _fragment(text, "node")
    if isinstance(fragment, uuid.UUID):
        return store.node(conversation_id, fragment)  # NodeNotFound if unknown
    column = _hex(nodes.c.id)
    query = (select(nodes.c.id)
             .where(nodes.c.conversation_id == conversation_id,
                    column.contains(fragment))
             .limit(_MATCHES + 1))
    with store._transaction(write=False) as conn:   # tenant-scoped (RLS)
        rows = list(conn.scalars(query))
    return store.node(conversation_id, _pick(rows, text, "node"))
