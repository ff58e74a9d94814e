"""The shape every format reader produces: a conversation as plain values, not yet checked.

Readers only translate fields (role names, timestamps, where the text lives); all the
checking that decides whether a conversation can be written (ids, parents, cycles,
roles, content, tool-call pairing) happens once, in ``_build``, for every format alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidImport

#: Namespace of the ids derived from source ids (UUIDv5), so re-imports find them.
ID_NAMESPACE = uuid.UUID("6f1b9a52-3c1e-4d1b-9a43-0e4e8f3b2c71")


@dataclass
class DraftNode:
    """One message as a reader understood it; ``key`` is its id in the source file."""

    key: str
    parent: str | None
    role: str
    content: Any
    created_at: datetime | None = None
    metadata: dict[str, Any] | None = None
    model: str | None = None
    name: str | None = None
    tool_calls: Any = None
    tool_call_id: str | None = None
    kind: str = "message"
    pinned: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: The exact id to store (native format); None: derived from the conversation and key.
    id: uuid.UUID | None = None
    #: Native format only: every stored column as exported, written back unchanged.
    columns: dict[str, Any] | None = None


@dataclass
class DraftConversation:
    """One conversation of a file, with a label that names it in failure reports."""

    label: str
    source_id: str
    title: str | None
    metadata: dict[str, Any] | None
    nodes: list[DraftNode]
    current: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: The exact id to store (native format); None: derived from tenant, format, source_id.
    id: uuid.UUID | None = None
    #: How far the reader got (conversations, or lines for JSONL), for progress reports.
    progress: int = 0
    #: Native format only: the exported conversation columns.
    columns: dict[str, Any] = field(default_factory=dict)


def derived_conversation_id(tenant: str, fmt: str, source_id: str) -> uuid.UUID:
    """A stable id for an imported conversation: the same file imports to the same id.

    The tenant is part of the name because conversation ids are unique across the
    whole table: two tenants importing the same export get two conversations.
    """
    return uuid.uuid5(ID_NAMESPACE, f"{tenant}\x1f{fmt}\x1f{source_id}")


#: Formats whose records carry an id an import derives from (``native`` keeps its own).
DERIVING_FORMATS = ("chatgpt", "oasst", "librechat", "openwebui", "openai")


def known_as(tenant: str, source_id: str) -> list[uuid.UUID]:
    """Every id under which this tenant may already hold the record ``source_id``.

    Exports write a conversation's source id (the id it was imported with, from any
    format, or convotree's own id for a conversation made in convotree), so the same
    conversation comes back under the id derived for another format, or as convotree's
    own id. Each of those means "already imported": an export re-imported in any format
    is skipped, not copied.
    """
    ids = [derived_conversation_id(tenant, fmt, source_id) for fmt in DERIVING_FORMATS]
    with contextlib.suppress(ValueError):   # not a UUID: no convotree id to look for
        ids.append(uuid.UUID(source_id))
    return ids


def derived_node_id(conversation_id: uuid.UUID, key: str) -> uuid.UUID:
    return uuid.uuid5(conversation_id, key)


def content_digest(value: Any) -> str:
    """A stable id for a record that has none (hash of its canonical JSON)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def from_epoch(value: Any, what: str) -> datetime | None:
    """Seconds (or, above 10^11, milliseconds) since the epoch as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidImport(f"{what} must be a number of seconds since 1970, not {value!r}")
    seconds = value / 1000 if value > 1e11 else value
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidImport(f"{what} {value!r} is not a valid time") from exc


def from_iso(value: Any, what: str) -> datetime | None:
    """An ISO 8601 string as an aware UTC datetime (no offset given: UTC)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidImport(f"{what} must be an ISO 8601 string, not {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidImport(f"{what} {value!r} is not an ISO 8601 time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def iso(value: datetime) -> str:
    """UTC, ISO 8601 with a ``Z``: what the JSON-based tools write."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def require(record: Mapping[str, Any], key: str, kinds: type | tuple[type, ...], what: str
            ) -> Any:
    """``record[key]`` if it has the expected type, else a failure naming the record."""
    value = record.get(key)
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        names = " or ".join(kind.__name__ for kind in allowed)
        raise InvalidImport(f"{what}: {key!r} must be {names}, not {type(value).__name__}")
    return value


def source_meta(fmt: str, source_id: str, extras: Mapping[str, Any] | None) -> dict[str, Any]:
    """Node or conversation metadata that lets an export reproduce the source record."""
    meta: dict[str, Any] = {"source": fmt, "source_id": source_id}
    if extras:
        meta[fmt] = dict(extras)
    return meta


def source_extras(metadata: Mapping[str, Any] | None, fmt: str) -> dict[str, Any]:
    """The fields a reader kept for ``fmt`` (empty when the node came from elsewhere)."""
    if metadata and metadata.get("source") == fmt and isinstance(metadata.get(fmt), dict):
        return dict(metadata[fmt])
    return {}


def source_key(metadata: Mapping[str, Any] | None, fmt: str, fallback: uuid.UUID) -> str:
    """The record's id in ``fmt``: the id it was imported with (from any format: they
    are all opaque strings), else convotree's own id."""
    del fmt
    if metadata and isinstance(metadata.get("source_id"), str):
        return str(metadata["source_id"])
    return str(fallback)
