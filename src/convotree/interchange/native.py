"""convotree's own JSON: every column of the conversation row and of every node.

The lossless backup format. The columns are read from the tables in ``_schema`` (not
listed here), so a column added by a migration is exported and imported without
touching this module. Ids are kept exactly; a conversation whose id this tenant
already has is skipped (re-importing a backup writes nothing). A file may hold one
document ``{"format": "convotree", "version": 1, "conversation": {...}, "nodes":
[...]}`` or a list of them. A column the database does not have is refused (it would
be lost); a nullable column the file lacks (an older backup) is left empty.
Every message still goes through ``prepare_message`` and the tree checks; the stored
token counts, depth and pinned-ancestor pointers are the database's own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Boolean, Column, Integer, Uuid, select

from .._schema import conversations, nodes
from .._types import UTCDateTime
from ..errors import InvalidImport
from ..store import ConversationRef, Store, _conversation_id
from ._draft import DraftConversation, DraftNode, from_iso
from ._files import load_json
from ._runner import Item, attempt

FORMAT = "native"
MARK = "convotree"
VERSION = 1
#: Columns the store recomputes (depth, pinned_ancestor_id) or sets (tenant_id).
_DERIVED = ("conversation_id",)


def _encode(column: Column[Any], value: Any) -> Any:
    if value is None:
        return None
    if isinstance(column.type, Uuid):
        return str(value)
    if isinstance(column.type, UTCDateTime):
        return value.isoformat()
    return value


def _decode(column: Column[Any], value: Any, what: str) -> Any:
    if value is None:
        if not column.nullable and column.server_default is None:
            raise InvalidImport(f"{what}: column {column.name!r} cannot be null")
        return None
    try:
        if isinstance(column.type, Uuid):
            return uuid.UUID(value) if isinstance(value, str) else _bad(value)
        if isinstance(column.type, UTCDateTime):
            return from_iso(value, f"{what}: {column.name}")
    except ValueError as exc:
        raise InvalidImport(f"{what}: column {column.name!r}: {value!r} is not a UUID") from exc
    wrong_bool = isinstance(column.type, Boolean) and not isinstance(value, bool)
    wrong_int = isinstance(column.type, Integer) and (
        isinstance(value, bool) or not isinstance(value, int))
    if wrong_bool or wrong_int:
        raise InvalidImport(f"{what}: column {column.name!r} must be a "
                            f"{type(column.type).__name__.lower()}, not {value!r}")
    return value


def _bad(value: Any) -> Any:
    raise ValueError(value)


def _columns(table_columns: Any, record: Any, what: str) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise InvalidImport(f"{what} must be an object")
    known = {column.name: column for column in table_columns}
    unknown = sorted(set(record) - set(known))
    if unknown:
        raise InvalidImport(f"{what}: column(s) {', '.join(unknown)} do not exist in this "
                            "database (a newer convotree?); importing would lose them")
    return {name: _decode(column, record.get(name), what) for name, column in known.items()
            if name in record or column.nullable}


def _node(record: Any) -> DraftNode:
    ident = record.get("id") if isinstance(record, Mapping) else None
    cols = _columns(nodes.c, record, f"node {ident}")
    for required in ("id", "role", "kind", "created_at"):
        if cols.get(required) is None:
            raise InvalidImport(f"node {ident}: {required!r} is missing")
    parent = cols.get("parent_id")
    return DraftNode(
        key=str(cols["id"]), parent=str(parent) if parent else None, role=cols["role"],
        content=cols.get("parts") if cols.get("parts") is not None else cols.get("content"),
        created_at=cols["created_at"], metadata=cols.get("metadata"), model=cols.get("model"),
        name=cols.get("name"), tool_calls=cols.get("tool_calls"),
        tool_call_id=cols.get("tool_call_id"), kind=cols["kind"],
        pinned=bool(cols.get("pinned")), input_tokens=cols.get("input_tokens"),
        output_tokens=cols.get("output_tokens"), id=cols["id"], columns=cols)


def _conversation(index: int, document: Any) -> DraftConversation:
    if not isinstance(document, Mapping) or document.get("format") != MARK:
        raise InvalidImport(f"not a convotree document (\"format\": {MARK!r} missing)")
    if document.get("version") != VERSION:
        raise InvalidImport(f"unsupported native version {document.get('version')!r}")
    cols = _columns(conversations.c, document.get("conversation"), "conversation")
    if cols.get("id") is None:
        raise InvalidImport("conversation: 'id' is missing")
    records = document.get("nodes")
    if not isinstance(records, list):
        raise InvalidImport("'nodes' must be a list")
    current = cols.get("current_node_id")
    created: datetime | None = cols.get("created_at")
    return DraftConversation(
        label=f"conversation {index + 1} (id {cols['id']})", source_id=str(cols["id"]),
        title=cols.get("title"), metadata=cols.get("metadata"),
        nodes=[_node(record) for record in records],
        current=str(current) if current else None, created_at=created,
        updated_at=cols.get("updated_at"), id=cols["id"], progress=index + 1, columns=cols)


def read(path: str | os.PathLike[str]) -> Iterator[Item]:
    data = load_json(path)
    documents = data if isinstance(data, list) else [data]
    for index, document in enumerate(documents):
        conv = document.get("conversation") if isinstance(document, Mapping) else None
        ident = conv.get("id") if isinstance(conv, Mapping) else None
        yield attempt(f"conversation {index + 1} (id {ident})",
                      partial(_conversation, index, document))


def export(store: Store, conversation: ConversationRef) -> dict[str, Any]:
    conv = store.get_conversation(_conversation_id(conversation))  # tenant check
    query = (select(nodes).where(nodes.c.conversation_id == conv.id)
             .order_by(nodes.c.depth, nodes.c.created_at, nodes.c.id))
    with store._transaction(write=False) as conn:
        row = conn.execute(select(conversations).where(
            conversations.c.id == conv.id, conversations.c.tenant_id == store.tenant)).one()
        rows = conn.execute(query).all()
    return {
        "format": MARK, "version": VERSION,
        "conversation": {c.name: _encode(c, row._mapping[c.name]) for c in conversations.c},
        "nodes": [{c.name: _encode(c, r._mapping[c.name]) for c in nodes.c
                   if c.name not in _DERIVED} for r in rows],
    }
