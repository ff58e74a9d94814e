"""Checking and normalizing a message before it is stored. Pure: no database here.

Everything that can be decided from the message alone is decided here, before a
transaction opens, so a bad message never holds a write lock and never reaches SQL.

NUL characters and lone surrogates are refused everywhere (content, name, ids and
inside JSON values): PostgreSQL ``text`` and ``jsonb`` cannot hold ``\\x00`` and
UTF-8 cannot encode a lone surrogate, so accepting them on SQLite alone would make
the two backends disagree about what a conversation contains. Refusing is the one
behaviour that is the same on both and loses nothing silently.
"""

from __future__ import annotations

import binascii
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import _args, tokens
from ._media import media_facts
from ._schema import KINDS, ROLES
from .errors import (
    ContentTooLarge,
    InvalidArgument,
    InvalidContent,
    InvalidKind,
    InvalidRole,
    ToolCallMismatch,
)

#: Default upper bound of one message: UTF-8 bytes of its text plus its JSON fields.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024

Content = str | Sequence[Mapping[str, Any]] | None


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A validated message with its token counts, ready to become a row."""

    kind: str
    role: str
    content: str | None
    parts: list[dict[str, Any]] | None
    media: list[dict[str, Any]] | None
    name: str | None
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    model: str | None
    token_count: int
    overhead_tokens: int
    encoding: str
    input_tokens: int | None
    output_tokens: int | None
    pinned: bool
    metadata: dict[str, Any] | None
    created_at: datetime | None
    response_id: str | None = None
    finish_reason: str | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    counted_input_tokens: int | None = None
    api_items: list[dict[str, Any]] | None = None

    @property
    def compacted(self) -> bool:
        """An answer whose replayed output holds an OpenAI compaction item: Responses
        contexts of its branch start at that item (the ``compacted`` column)."""
        return self.kind == "message" and any(
            item.get("type") == "compaction" for item in self.api_items or ())

    @property
    def call_ids(self) -> tuple[str, ...]:
        return tuple(str(call["id"]) for call in self.tool_calls or ())


def check_text(value: str, what: str) -> None:
    """Refuse strings that one of the backends cannot store faithfully."""
    if "\x00" in value:
        raise InvalidContent(f"{what} contains a NUL character (\\x00), which is not stored")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidContent(f"{what} contains a lone surrogate and is not valid UTF-8") from exc


def check_json(value: Any, what: str) -> str:
    """Check a JSON value (every string in it storable, only JSON types, string keys);
    return its compact serialization.

    Fast path: one C-level ``json.dumps`` (it refuses other types, NaN and cycles) and
    a round trip that must give the value back (it would not for a non-string key or a
    tuple); only when something looks off does the exact check below walk the value to
    say what. Every message's metadata goes through here on import, so this matters.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except RecursionError as exc:
        raise InvalidContent(f"{what} is nested too deeply to be stored") from exc
    except (TypeError, ValueError):
        text = None
    if text is not None and "\\u0000" not in text and _round_trips(text, value):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidContent(f"{what} contains a lone surrogate and is not valid "
                                 "UTF-8") from exc
        if _nesting(text) > MAX_JSON_DEPTH:
            raise InvalidContent(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
        return text
    return _check_json_exactly(value, what)


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _nesting(text: str) -> int:
    """How deeply the JSON ``text`` nests, or a bound of it no greater than
    ``MAX_JSON_DEPTH`` when it cannot nest deeper than that (C-speed counts and
    regexes; a Python loop only over the brackets, when there are enough to matter)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return MAX_JSON_DEPTH   # cannot be deeper (brackets inside strings count too)
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if len(brackets) <= 2 * MAX_JSON_DEPTH:
        return len(brackets) // 2
    return max(itertools.accumulate(1 if c in "[{" else -1 for c in brackets))


def _round_trips(text: str, value: Any) -> bool:
    try:
        return bool(json.loads(text) == value)
    except RecursionError:
        return False


#: Deepest nesting a JSON value may have (Python's json would hit its recursion limit).
MAX_JSON_DEPTH = 500


def _check_json_exactly(value: Any, what: str) -> str:
    """The slow, exact check: walk the value without recursion and name what is wrong
    (tuples are accepted as lists). A value that contains itself is refused; one object
    used twice side by side is not a cycle."""
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        item, leaving = stack.pop()
        if leaving:
            on_path.discard(id(item))
            continue
        if isinstance(item, str):
            check_text(item, what)
            continue
        if isinstance(item, Mapping | list | tuple):
            if id(item) in on_path:
                raise InvalidContent(f"{what} contains itself (a cycle), which is not JSON")
            if len(on_path) >= MAX_JSON_DEPTH:
                raise InvalidContent(f"{what} is nested more than {MAX_JSON_DEPTH} levels "
                                     "deep")
            on_path.add(id(item))
            stack.append((item, True))
        if isinstance(item, Mapping):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise InvalidContent(f"{what} has a non-string key {key!r}")
                check_text(key, what)
                stack.append((inner, False))
        elif isinstance(item, list | tuple):
            stack.extend((inner, False) for inner in item)
        elif item is not None and not isinstance(item, bool | int | float):
            raise InvalidContent(f"{what} holds a {type(item).__name__}, which is not JSON")
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except RecursionError as exc:
        raise InvalidContent(f"{what} is nested too deeply to be stored") from exc
    except ValueError as exc:
        raise InvalidContent(f"{what} is not valid JSON: {exc}") from exc


def _check_tool_calls(tool_calls: Any) -> list[dict[str, Any]]:
    if not isinstance(tool_calls, list | tuple) or not tool_calls:
        raise InvalidContent("tool_calls must be a non-empty list of tool call objects")
    seen: set[str] = set()
    for call in tool_calls:
        if not isinstance(call, Mapping) or not isinstance(call.get("id"), str) or not call["id"]:
            raise InvalidContent("every tool call needs a non-empty string 'id'")
        call_type = call.get("type", "function")
        body = call.get(call_type) if isinstance(call_type, str) else None
        if not isinstance(body, Mapping) or not isinstance(body.get("name"), str):
            raise InvalidContent(f"tool call {call['id']!r} needs '{call_type}' with a 'name'")
        arguments = body.get("arguments")
        if call_type == "function" and arguments is not None and not isinstance(arguments, str):
            raise InvalidContent(f"tool call {call['id']!r}: function.arguments must be the "
                                 "JSON text the model wrote (a string), not a "
                                 f"{type(arguments).__name__}")
        if call["id"] in seen:
            raise ToolCallMismatch(f"tool call id {call['id']!r} appears twice in one message")
        seen.add(call["id"])
    return [dict(call) for call in tool_calls]


def _split_content(content: Any) -> tuple[str | None, list[dict[str, Any]] | None, list[str]]:
    """Return (text for the content column, parts as given, text pieces to count)."""
    if content is None:
        return None, None, []
    if isinstance(content, str):
        return content, None, [content]
    if not isinstance(content, Sequence) or isinstance(content, bytes | bytearray):
        raise InvalidContent("content must be a string, a list of content parts, or None "
                             "(decode bytes first)")
    parts: list[dict[str, Any]] = []
    texts: list[str] = []
    for index, part in enumerate(content):
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise InvalidContent("every content part must be an object with a string 'type'")
        text = _check_part(part, f"content part {index}")
        if text is not None:
            texts.append(text)
        parts.append(dict(part))
    return "\n".join(texts), parts, texts


#: The content part types of Chat Completions and Responses input, by what they hold.
_TEXT_PARTS = {"text": "text", "input_text": "text", "output_text": "text",
               "refusal": "refusal"}
_MEDIA_PARTS = ("image_url", "input_image", "input_audio", "file", "input_file")
_IMAGE_DETAILS = ("auto", "low", "high", "original")
_AUDIO_FORMATS = ("wav", "mp3")


def _check_part(part: Mapping[str, Any], what: str) -> str | None:
    """Check one content part against the shape the OpenAI APIs accept (so a broken
    part is refused here, not by the API on every later request of the branch);
    return its text for text parts."""
    kind = part["type"]
    if kind in _TEXT_PARTS:
        text = part.get(_TEXT_PARTS[kind])
        if not isinstance(text, str):
            raise InvalidContent(f"{what}: a {kind!r} part needs a string "
                                 f"{_TEXT_PARTS[kind]!r}")
        return text
    if kind not in _MEDIA_PARTS:
        raise InvalidContent(f"{what}: unknown content part type {kind!r}; known: "
                             f"{', '.join((*_TEXT_PARTS, *_MEDIA_PARTS))}")
    if kind == "image_url":
        body = part.get("image_url")
        if not isinstance(body, Mapping):
            raise InvalidContent(f"{what}: an 'image_url' part needs an object "
                                 "{'url': ..., 'detail'?: ...} under 'image_url'")
        _check_url(body.get("url"), f"{what}: image_url.url")
        _check_detail(body.get("detail"), what)
    elif kind == "input_image":
        if part.get("image_url") is None and part.get("file_id") is None:
            raise InvalidContent(f"{what}: an 'input_image' part needs 'image_url' or "
                                 "'file_id'")
        if part.get("image_url") is not None:
            _check_url(part.get("image_url"), f"{what}: image_url")
        _check_string(part.get("file_id"), f"{what}: file_id")
        _check_detail(part.get("detail"), what)
    elif kind == "input_audio":
        body = part.get("input_audio")
        if not isinstance(body, Mapping) or not isinstance(body.get("data"), str) or (
                body.get("format") not in _AUDIO_FORMATS):
            raise InvalidContent(f"{what}: an 'input_audio' part needs {{'data': <base64>, "
                                 f"'format': {' or '.join(map(repr, _AUDIO_FORMATS))}}}")
    else:   # file (Chat Completions) or input_file (Responses)
        body = part.get("file") if kind == "file" else part
        keys = ("file_data", "file_id") if kind == "file" else (
            "file_data", "file_id", "file_url")
        if not isinstance(body, Mapping) or not any(body.get(key) for key in keys):
            raise InvalidContent(f"{what}: a {kind!r} part needs one of "
                                 f"{', '.join(keys)}" + (" under 'file'" if kind == "file"
                                                         else ""))
        for key in (*keys, "filename"):
            _check_string(body.get(key), f"{what}: {key}")
    return None


def _check_url(url: Any, what: str) -> None:
    if not isinstance(url, str) or not url.startswith(("https://", "http://", "data:")):
        raise InvalidContent(f"{what} must be an http(s) URL or a data: URL, not "
                             f"{str(url)[:60]!r}")
    if url.startswith("data:"):
        header, comma, payload = url.partition(",")
        if not comma or not header.endswith(";base64"):
            raise InvalidContent(f"{what}: a data: URL must be data:<type>;base64,<data>")
        try:   # C speed; the API would refuse a payload that is not base64
            binascii.a2b_base64(payload, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidContent(f"{what}: the data: URL's payload is not base64 ({exc})"
                                 ) from exc


def _check_detail(detail: Any, what: str) -> None:
    if detail is not None and detail not in _IMAGE_DETAILS:
        raise InvalidContent(f"{what}: detail must be one of {', '.join(_IMAGE_DETAILS)}")


def _check_string(value: Any, what: str) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidContent(f"{what} must be a string")


def prepare_message(
    *,
    kind: str,
    role: str,
    content: Content,
    name: str | None,
    tool_calls: Any,
    tool_call_id: str | None,
    model: str | None,
    encoding: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    pinned: bool,
    metadata: Mapping[str, Any] | None,
    created_at: datetime | None,
    max_message_bytes: int,
    response_id: str | None = None,
    finish_reason: str | None = None,
    cached_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    counted_input_tokens: int | None = None,
    api_items: Any = None,
    known_counts: Mapping[str, int] | None = None,
) -> PreparedMessage:
    """Validate one message and count its tokens, or raise a typed ``InvalidInput``.

    ``known_counts`` maps texts to their tokens under ``encoding``, counted beforehand
    in a batch (an import counts a whole conversation at once, across threads); texts
    not in it are counted here.
    """
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidKind(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRole(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if not isinstance(pinned, bool):
        raise InvalidArgument(f"pinned must be True or False, not {pinned!r}")
    created_at = _args.timestamp(created_at, "created_at")

    text, parts, texts = _split_content(content)
    for field, value in (("content", text), ("name", name), ("tool_call_id", tool_call_id),
                         ("model", model), ("response_id", response_id),
                         ("finish_reason", finish_reason)):
        if value is not None:
            if not isinstance(value, str):
                raise InvalidContent(f"{field} must be a string")
            check_text(value, field)

    size = (len(text.encode("utf-8")) if text else 0) + sum(
        len(value.encode("utf-8")) for value in (name, tool_call_id, model, response_id,
                                                 finish_reason) if value)
    calls: list[dict[str, Any]] | None = None
    if tool_calls is not None:
        if role != "assistant":
            raise ToolCallMismatch(f"only assistant messages carry tool_calls, not {role!r}")
        calls = _check_tool_calls(tool_calls)
        size += len(check_json(calls, "tool_calls").encode("utf-8"))
    if parts is not None:
        size += len(check_json(parts, "content parts").encode("utf-8"))
    items: list[dict[str, Any]] | None = None
    if api_items is not None:
        if not isinstance(api_items, Sequence) or isinstance(api_items, str) or not all(
                isinstance(item, Mapping) for item in api_items):
            raise InvalidContent("api_items must be a list of JSON objects")
        items = [dict(item) for item in api_items]
        size += len(check_json(items, "api_items").encode("utf-8"))
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise InvalidContent("metadata must be a JSON object")
        size += len(check_json(metadata, "metadata").encode("utf-8"))
    if size > max_message_bytes:
        raise ContentTooLarge(
            f"message is {size} bytes; this store accepts at most {max_message_bytes} "
            "(Store(max_message_bytes=...))",
            size=size,
            limit=max_message_bytes,
        )

    if role == "tool":
        if not tool_call_id:
            raise ToolCallMismatch("a tool message needs the tool_call_id of the call it answers")
        if content is None:
            raise InvalidContent("a tool message needs content (the tool's result)")
    elif tool_call_id is not None:
        raise ToolCallMismatch(f"only tool messages carry tool_call_id, not {role!r}")
    if content is None and not (role == "assistant" and calls):
        raise InvalidContent(f"a {role} message needs content (only tool-calling assistant "
                             "messages may omit it)")
    if pinned and (role == "tool" or calls):
        raise ToolCallMismatch("tool calls and tool results cannot be pinned alone: pruning "
                               "keeps a call and its results together")
    usage: tuple[tuple[str, object], ...] = (
        ("input_tokens", input_tokens), ("output_tokens", output_tokens),
        ("cached_tokens", cached_tokens), ("reasoning_tokens", reasoning_tokens),
        ("counted_input_tokens", counted_input_tokens))
    for label, count in usage:
        _args.count(count, label, optional=True)

    enc = encoding or tokens.encoding_for_model(model)
    known = known_counts or {}
    token_count = sum(known[piece] if piece in known else tokens.count_text(piece, enc)
                      for piece in texts)
    overhead = tokens.message_overhead(
        role=role, name=name, tool_calls=calls, tool_call_id=tool_call_id, encoding=enc
    )
    return PreparedMessage(
        kind=kind,
        role=role,
        content=text,
        parts=parts,
        media=media_facts(parts),
        name=name,
        tool_calls=calls,
        tool_call_id=tool_call_id,
        model=model,
        token_count=token_count,
        overhead_tokens=overhead,
        encoding=enc,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        pinned=bool(pinned),
        metadata=dict(metadata) if metadata is not None else None,
        created_at=created_at,
        response_id=response_id,
        finish_reason=finish_reason,
        cached_tokens=cached_tokens,
        reasoning_tokens=reasoning_tokens,
        counted_input_tokens=counted_input_tokens,
        api_items=items,
    )


def check_tool_definition(tool: Mapping[str, Any], index: int) -> None:
    """A tool definition sent with a request: JSON, and a function tool names its
    function (both API shapes: Chat Completions nests it under 'function', Responses
    puts 'name' at the top)."""
    what = f"tools[{index}]"
    check_json(tool, what)
    kind = tool.get("type", "function")
    if not isinstance(kind, str):
        raise InvalidArgument(f"{what}: 'type' must be a string")
    if kind == "function":
        body = tool.get("function", tool)
        if not isinstance(body, Mapping) or not isinstance(body.get("name"), str) or not (
                body.get("name")):
            raise InvalidArgument(f"{what}: a function tool needs a function 'name' "
                                  "(under 'function' for Chat Completions)")


def check_title(title: str | None) -> None:
    if title is not None:
        if not isinstance(title, str):
            raise InvalidContent("title must be a string")
        check_text(title, "title")


def check_metadata(metadata: Mapping[str, Any] | None) -> None:
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise InvalidContent("metadata must be a JSON object")
        check_json(metadata, "metadata")
