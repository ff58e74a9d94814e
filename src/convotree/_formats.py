"""Stored nodes as request payloads: Chat Completions messages or Responses input items.

Pure functions over the assembler's rows (mappings with the node columns).

Responses mapping (documented in docs/context.md):
- system / developer / user / assistant text -> ``{"role": ..., "content": ...}`` input
  messages (roles kept as they are; nothing is moved to ``instructions``, so the order of
  several system messages is kept). Content parts become ``input_text``,
  ``input_image``, ``input_file`` and ``input_audio`` parts (``output_text`` for the
  assistant). ``name`` has no place in Responses input and is dropped.
- an assistant message's tool calls -> one ``function_call`` item each (``custom_tool_call``
  for custom tools), after its text message if it has text.
- a tool result -> ``function_call_output`` (``custom_tool_call_output``) with its call id.
- a node with ``api_items`` (an answer received through the Responses API whose output
  held encrypted reasoning or a compaction item; a stored OpenAI compaction summary)
  -> those items, exactly as the API returned them (ids included: the API pairs a
  reasoning item with the item after it); for an answer the API compacted, from its
  last compaction item on. Chat Completions requests get the columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol


class NodeRow(Protocol):
    """The columns of a node the assembler reads (a SQLAlchemy ``Row`` fits)."""

    @property
    def depth(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str | None: ...
    @property
    def parts(self) -> Any: ...
    @property
    def media(self) -> Any: ...
    @property
    def name(self) -> str | None: ...
    @property
    def tool_calls(self) -> Any: ...
    @property
    def tool_call_id(self) -> str | None: ...
    @property
    def token_count(self) -> int: ...
    @property
    def overhead_tokens(self) -> int: ...
    @property
    def encoding(self) -> str: ...
    @property
    def pinned(self) -> Any: ...
    @property
    def api_items(self) -> Any: ...


def from_json(value: Any) -> Any:
    """A JSON list column as Python: SQLite hands back its text, psycopg the value.

    The list columns (parts, media, tool_calls) never hold a bare JSON string, so a
    ``str`` here is always serialized JSON.
    """
    return json.loads(value) if isinstance(value, str) else value


def chat_message(row: NodeRow) -> dict[str, Any]:
    """One Chat Completions message (once per message sent: kept lean)."""
    parts = row.parts
    message: dict[str, Any] = {
        "role": row.role,
        "content": row.content if parts is None else from_json(parts),
    }
    name, calls, call_id = row.name, row.tool_calls, row.tool_call_id
    if name is not None:
        message["name"] = name
    if calls is not None:
        message["tool_calls"] = from_json(calls)
    if call_id is not None:
        message["tool_call_id"] = call_id
    return message


def _response_part(part: Mapping[Any, Any], assistant: bool) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):
        return {"type": "output_text" if assistant else "input_text", "text": part["text"]}
    if kind == "refusal":
        return {"type": "refusal", "refusal": part.get("refusal", part.get("text", ""))}
    if kind == "image_url":
        body = part["image_url"]
        url = body.get("url") if isinstance(body, Mapping) else body
        detail = (body.get("detail") if isinstance(body, Mapping) else None) or "auto"
        return {"type": "input_image", "image_url": url, "detail": detail}
    if kind == "file":
        return {"type": "input_file", **dict(part.get("file") or {})}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": part["input_audio"]}
    return dict(part)


def response_items(row: NodeRow, call_types: Mapping[str, str]) -> list[dict[str, Any]]:
    """The Responses input items for one node (a tool call can become several)."""
    role = row.role
    # A turn that came from the Responses API with opaque items (encrypted reasoning,
    # compaction) goes back exactly as the API returned it, ids and all; so does a
    # stored OpenAI compaction summary.
    replay = from_json(row.api_items)
    if replay:
        if row.kind == "message":
            # An answer the API compacted: what came before its (last) compaction item
            # is inside that item (OpenAI's compaction guide: items before the latest
            # compaction item may be dropped), so the replay starts at it.
            starts = [i for i, item in enumerate(replay) if item.get("type") == "compaction"]
            replay = replay[starts[-1]:] if starts else replay
        return [dict(item) for item in replay]
    if role == "tool":
        custom = call_types.get(row.tool_call_id or "") == "custom"
        return [{"type": "custom_tool_call_output" if custom else "function_call_output",
                 "call_id": row.tool_call_id, "output": row.content or ""}]
    items: list[dict[str, Any]] = []
    parts, tool_calls = from_json(row.parts), from_json(row.tool_calls)
    if parts is not None:
        items.append({"role": role, "content": [
            _response_part(p, role == "assistant") for p in parts]})
    elif row.content is not None and (row.content or not tool_calls):
        items.append({"role": role, "content": row.content})
    for call in tool_calls or ():
        if call.get("type", "function") == "custom":
            body = call["custom"]
            items.append({"type": "custom_tool_call", "call_id": call["id"],
                          "name": body["name"], "input": body.get("input", "")})
        else:
            body = call["function"]
            items.append({"type": "function_call", "call_id": call["id"],
                          "name": body["name"], "arguments": body.get("arguments", "")})
    return items


def render(rows: Iterable[NodeRow], fmt: str) -> list[dict[str, Any]]:
    """All rows (path order) in the requested format."""
    if fmt == "chat":
        return [chat_message(row) for row in rows]
    call_types: dict[str, str] = {}
    items: list[dict[str, Any]] = []
    for row in rows:
        for call in from_json(row.tool_calls) or ():
            call_types[str(call["id"])] = str(call.get("type", "function"))
        items.extend(response_items(row, call_types))
    return items
