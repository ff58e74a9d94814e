"""The OpenAI wire shapes: request arguments in, answers out. No I/O here.

``Chat`` (and, later, its async twin) only moves data between the store and the
user's client; everything that knows what a Chat Completions or Responses payload
looks like is here, as pure functions and small stream accumulators, so both the
sync and the async helper share it instead of copying it.

Responses are read by attribute with defaults (``_get``), not by exact type: the
typed objects of the ``openai`` package, dicts, and payloads from compatible servers
that omit optional fields all work.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

#: The two API shapes the chat helper speaks.
APIS = ("chat", "responses")


@dataclass(frozen=True, slots=True)
class Answer:
    """An assistant turn as the API gave it, ready to be stored as a node.

    ``complete`` is False when a stream ended early (the caller stopped reading, or
    the connection dropped): ``content`` then holds what arrived, and tool calls whose
    arguments were cut off are left out (a half-written call can never be answered).
    """

    content: str | None
    tool_calls: list[dict[str, Any]] | None = None
    model: str | None = None
    response_id: str | None = None
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    api_items: list[dict[str, Any]] | None = None
    refusal: str | None = None
    complete: bool = True
    dropped_tool_calls: int = 0


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """``obj.name`` or ``obj[name]``; ``default`` when absent or None."""
    if obj is None:
        return default
    value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return default if value is None else value


def _dump(obj: Any) -> dict[str, Any]:
    """A typed ``openai`` object (or a dict) as plain JSON-able data, Nones left out."""
    if isinstance(obj, Mapping):
        return {k: v for k, v in obj.items() if v is not None}
    return obj.model_dump(mode="json", exclude_none=True)  # type: ignore[no-any-return]


# --- requests -------------------------------------------------------------------------


def chat_request(model: str, messages: list[dict[str, Any]], tools: Any,
                 options: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
    """Arguments for ``client.chat.completions.create``."""
    request: dict[str, Any] = {"model": model, "messages": messages, **options}
    if tools is not None:
        request["tools"] = tools
    if stream:
        request["stream"] = True
        # Usage arrives in a last chunk only when asked for.
        request["stream_options"] = {**dict(options.get("stream_options") or {}),
                                     "include_usage": True}
    return request


def responses_request(model: str, items: list[dict[str, Any]], tools: Any,
                      options: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
    """Arguments for ``client.responses.create``.

    ``store=False`` unless the caller says otherwise: the conversation's state lives in
    the user's database, and OpenAI keeps nothing it would have to be asked to delete.
    """
    request: dict[str, Any] = {"model": model, "input": items, "store": False, **options}
    if tools is not None:
        request["tools"] = responses_tools(tools)
    if stream:
        request["stream"] = True
    return request


def responses_tools(tools: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tool definitions in the Responses shape (Chat Completions ones are flattened)."""
    converted = []
    for tool in tools:
        function = tool.get("function") if tool.get("type") == "function" else None
        converted.append({"type": "function", **function} if isinstance(function, Mapping)
                         else dict(tool))
    return converted


def output_reserve(options: Mapping[str, Any]) -> int:
    """Tokens the caller allowed for the answer, from the create() arguments."""
    for key in ("max_completion_tokens", "max_output_tokens", "max_tokens"):
        value = options.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


# --- whole answers ----------------------------------------------------------------------


class _Usage(TypedDict):
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None


def _chat_usage(usage: Any) -> _Usage:
    return {
        "input_tokens": _get(usage, "prompt_tokens"),
        "output_tokens": _get(usage, "completion_tokens"),
        "cached_tokens": _get(_get(usage, "prompt_tokens_details"), "cached_tokens"),
        "reasoning_tokens": _get(_get(usage, "completion_tokens_details"), "reasoning_tokens"),
    }


def _responses_usage(usage: Any) -> _Usage:
    return {
        "input_tokens": _get(usage, "input_tokens"),
        "output_tokens": _get(usage, "output_tokens"),
        "cached_tokens": _get(_get(usage, "input_tokens_details"), "cached_tokens"),
        "reasoning_tokens": _get(_get(usage, "output_tokens_details"), "reasoning_tokens"),
    }


def _chat_tool_call(call: Any) -> dict[str, Any]:
    if _get(call, "type", "function") == "custom":
        custom = _get(call, "custom")
        return {"id": _get(call, "id"), "type": "custom",
                "custom": {"name": _get(custom, "name"), "input": _get(custom, "input", "")}}
    function = _get(call, "function")
    return {"id": _get(call, "id"), "type": "function",
            "function": {"name": _get(function, "name"),
                         "arguments": _get(function, "arguments", "")}}


def parse_chat_completion(completion: Any) -> Answer:
    """A ``ChatCompletion`` (first choice) as an ``Answer``."""
    choices = _get(completion, "choices", [])
    choice = choices[0] if choices else None
    message = _get(choice, "message")
    calls = [_chat_tool_call(call) for call in _get(message, "tool_calls", [])]
    refusal = _get(message, "refusal")
    content = _get(message, "content")
    return Answer(
        content=content if content is not None else refusal,
        tool_calls=calls or None,
        model=_get(completion, "model"),
        response_id=_get(completion, "id"),
        finish_reason=_get(choice, "finish_reason"),
        refusal=refusal,
        **_chat_usage(_get(completion, "usage")),
    )


def _replayable(item: Mapping[str, Any]) -> bool:
    """Output items only the API can make, which must go back as they came.

    Reasoning is kept only with its encrypted content: without it (and with
    ``store=False``) the API cannot resolve the item and refuses the next request.
    """
    return item.get("type") == "reasoning" and bool(item.get("encrypted_content"))


def parse_response(response: Any) -> Answer:
    """A Responses API ``Response`` as an ``Answer``.

    Text of the ``message`` items becomes the content; ``function_call`` (and
    ``custom_tool_call``) items become Chat-shaped ``tool_calls`` (the store's one
    shape; the assembler turns them back into items); reasoning items with encrypted
    content are kept verbatim in ``api_items``. ``finish_reason`` is the response's
    ``status``, or the reason it is incomplete (``max_output_tokens``…).
    """
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[dict[str, Any]] = []
    replay: list[dict[str, Any]] = []
    for item in _get(response, "output", []):
        kind = _get(item, "type")
        if kind == "message":
            for part in _get(item, "content", []):
                if _get(part, "type") == "output_text":
                    texts.append(_get(part, "text", ""))
                elif _get(part, "type") == "refusal":
                    refusals.append(_get(part, "refusal", ""))
        elif kind == "function_call":
            calls.append({"id": _get(item, "call_id"), "type": "function",
                          "function": {"name": _get(item, "name"),
                                       "arguments": _get(item, "arguments", "")}})
        elif kind == "custom_tool_call":
            calls.append({"id": _get(item, "call_id"), "type": "custom",
                          "custom": {"name": _get(item, "name"),
                                     "input": _get(item, "input", "")}})
        else:
            dumped = _dump(item)
            if _replayable(dumped):
                replay.append(dumped)
    status = _get(response, "status")
    incomplete = _get(_get(response, "incomplete_details"), "reason")
    content = "".join(texts) if texts else ("".join(refusals) if refusals else None)
    return Answer(
        content=content,
        tool_calls=calls or None,
        model=_get(response, "model"),
        response_id=_get(response, "id"),
        finish_reason=incomplete or status,
        api_items=replay or None,
        refusal="".join(refusals) or None,
        **_responses_usage(_get(response, "usage")),
    )


# --- streams --------------------------------------------------------------------------


@dataclass
class _PartialCall:
    id: str | None = None
    type: str = "function"
    name: str = ""
    arguments: str = ""


@dataclass
class ChatStreamState:
    """Folds ``ChatCompletionChunk``s into an ``Answer``; ``feed`` returns the text delta."""

    texts: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    calls: dict[int, _PartialCall] = field(default_factory=dict)
    model: str | None = None
    response_id: str | None = None
    finish_reason: str | None = None
    usage: Any = None

    def feed(self, chunk: Any) -> str | None:
        self.model = _get(chunk, "model", self.model)
        self.response_id = _get(chunk, "id", self.response_id)
        self.usage = _get(chunk, "usage", self.usage)
        delta_text: str | None = None
        for choice in _get(chunk, "choices", []):
            if _get(choice, "index", 0) != 0:
                continue
            delta = _get(choice, "delta")
            text = _get(delta, "content")
            if text:
                self.texts.append(text)
                delta_text = text
            refusal = _get(delta, "refusal")
            if refusal:
                self.refusals.append(refusal)
            for call in _get(delta, "tool_calls", []):
                partial = self.calls.setdefault(_get(call, "index", 0), _PartialCall())
                partial.id = _get(call, "id", partial.id)
                partial.type = _get(call, "type", partial.type)
                function = _get(call, "function")
                partial.name += _get(function, "name", "")
                partial.arguments += _get(function, "arguments", "")
            self.finish_reason = _get(choice, "finish_reason", self.finish_reason)
        return delta_text

    def answer(self) -> Answer:
        # A stream that never said why it finished was cut off.
        complete = self.finish_reason is not None
        calls = [{"id": c.id, "type": "function",
                  "function": {"name": c.name, "arguments": c.arguments}}
                 for _, c in sorted(self.calls.items())] if complete else []
        refusal = "".join(self.refusals) or None
        return Answer(
            content="".join(self.texts) if self.texts else refusal,
            tool_calls=calls or None,
            model=self.model,
            response_id=self.response_id,
            finish_reason=self.finish_reason,
            refusal=refusal,
            complete=complete,
            dropped_tool_calls=0 if complete else len(self.calls),
            **_chat_usage(self.usage),
        )


@dataclass
class ResponsesStreamState:
    """Folds Responses stream events into an ``Answer``; ``feed`` returns the text delta."""

    texts: list[str] = field(default_factory=list)
    final: Any = None
    response_id: str | None = None
    model: str | None = None
    started_calls: int = 0
    failure: str | None = None

    def feed(self, event: Any) -> str | None:
        kind = _get(event, "type")
        if kind == "response.output_text.delta":
            delta: str = _get(event, "delta", "")
            self.texts.append(delta)
            return delta
        if kind in ("response.created", "response.in_progress"):
            response = _get(event, "response")
            self.response_id = _get(response, "id", self.response_id)
            self.model = _get(response, "model", self.model)
        elif kind == "response.output_item.added" and _get(
                _get(event, "item"), "type") in ("function_call", "custom_tool_call"):
            self.started_calls += 1
        elif kind in ("response.completed", "response.incomplete"):
            self.final = _get(event, "response")
        elif kind == "response.failed":
            response = _get(event, "response")
            self.failure = str(_get(_get(response, "error"), "message", "response failed"))
        elif kind == "error":
            self.failure = str(_get(event, "message", "stream error"))
        return None

    def answer(self) -> Answer:
        if self.final is not None:
            return parse_response(self.final)
        return Answer(content="".join(self.texts) if self.texts else None,
                      model=self.model, response_id=self.response_id, complete=False,
                      dropped_tool_calls=self.started_calls)


def tool_arguments(call: Mapping[str, Any]) -> Any:
    """The parsed JSON arguments of a function call (custom tools: the raw input)."""
    if call.get("type") == "custom":
        return call["custom"].get("input", "")
    raw = call["function"].get("arguments") or "{}"
    return json.loads(raw)


def call_name(call: Mapping[str, Any]) -> str:
    body = call.get("custom") if call.get("type") == "custom" else call.get("function")
    return str((body or {}).get("name", ""))


def pending_calls(tool_calls: Sequence[Mapping[str, Any]] | None) -> list[str]:
    return [str(call["id"]) for call in tool_calls or ()]
