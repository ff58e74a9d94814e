"""The OpenAI wire shapes: request arguments in, answers out. No I/O here.

``Chat`` (and, later, its async twin) only moves data between the store and the
user's client; everything that knows what a Chat Completions or Responses payload
looks like is here, as pure functions and small stream accumulators, so both the
sync and the async helper share it instead of copying it.

Responses are read by attribute with defaults (``get``), not by exact type: the
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


def get(obj: Any, name: str, default: Any = None) -> Any:
    """``obj.name`` or ``obj[name]``; ``default`` when absent or None."""
    if obj is None:
        return default
    value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return default if value is None else value


def dump(obj: Any) -> dict[str, Any]:
    """A typed ``openai`` object (or a dict) as plain JSON-able data, Nones left out."""
    if isinstance(obj, Mapping):
        return {k: v for k, v in obj.items() if v is not None}
    return obj.model_dump(mode="json", exclude_none=True, warnings=False)  # type: ignore[no-any-return]


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
        "input_tokens": get(usage, "prompt_tokens"),
        "output_tokens": get(usage, "completion_tokens"),
        "cached_tokens": get(get(usage, "prompt_tokens_details"), "cached_tokens"),
        "reasoning_tokens": get(get(usage, "completion_tokens_details"), "reasoning_tokens"),
    }


def responses_usage(usage: Any) -> _Usage:
    return {
        "input_tokens": get(usage, "input_tokens"),
        "output_tokens": get(usage, "output_tokens"),
        "cached_tokens": get(get(usage, "input_tokens_details"), "cached_tokens"),
        "reasoning_tokens": get(get(usage, "output_tokens_details"), "reasoning_tokens"),
    }


def _chat_tool_call(call: Any) -> dict[str, Any]:
    if get(call, "type", "function") == "custom":
        custom = get(call, "custom")
        return {"id": get(call, "id"), "type": "custom",
                "custom": {"name": get(custom, "name"), "input": get(custom, "input", "")}}
    function = get(call, "function")
    return {"id": get(call, "id"), "type": "function",
            "function": {"name": get(function, "name"),
                         "arguments": get(function, "arguments", "")}}


def parse_chat_completion(completion: Any) -> Answer:
    """A ``ChatCompletion`` (first choice) as an ``Answer``."""
    choices = get(completion, "choices", [])
    choice = choices[0] if choices else None
    message = get(choice, "message")
    calls = [_chat_tool_call(call) for call in get(message, "tool_calls", [])]
    refusal = get(message, "refusal")
    content = get(message, "content")
    return Answer(
        content=content if content is not None else refusal,
        tool_calls=calls or None,
        model=get(completion, "model"),
        response_id=get(completion, "id"),
        finish_reason=get(choice, "finish_reason"),
        refusal=refusal,
        **_chat_usage(get(completion, "usage")),
    )


def _opaque(item: Mapping[str, Any]) -> bool:
    """An output item only the API can make: its presence means the turn is replayed.

    Reasoning counts only with its encrypted content (without it, and with
    ``store=False``, the API cannot resolve the item); compaction items always.
    """
    kind = item.get("type")
    return (kind == "reasoning" and bool(item.get("encrypted_content"))) or kind == "compaction"


def _replay_items(output: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The output to send back verbatim next turn, or None when columns suffice.

    When a turn holds opaque items, the whole output is kept as it came, ids included:
    the API pairs a reasoning item with the message or call that follows it, so
    rebuilding those from columns (without ids) would break the pair. OpenAI's own
    stateless pattern is the same: append ``response.output`` to the next input.
    Reasoning items are kept only when they can be replayed (encrypted content) and
    something follows them (the API refuses a reasoning item with no following item,
    which an answer cut off while reasoning would leave).
    """
    kept: list[dict[str, Any]] = []
    for index, item in enumerate(output):
        if item.get("type") == "reasoning":
            followed = any(later.get("type") in _FOLLOWERS for later in output[index + 1:])
            if not (item.get("encrypted_content") and followed):
                continue
        kept.append(item)
    return kept if any(_opaque(item) for item in kept) else None


#: Output items a reasoning item may precede.
_FOLLOWERS = frozenset({"message", "function_call", "custom_tool_call"})


def parse_response(response: Any) -> Answer:
    """A Responses API ``Response`` as an ``Answer``.

    Text of the ``message`` items becomes the content; ``function_call`` (and
    ``custom_tool_call``) items become Chat-shaped ``tool_calls`` (the store's one
    shape, so Chat Completions requests and the tool-pairing rules work on them). When
    the output holds reasoning with encrypted content or a compaction item, the whole
    output is also kept verbatim in ``api_items`` (see ``_replay_items``).
    ``finish_reason`` is the response's ``status``, or the reason it is incomplete
    (``max_output_tokens``…).
    """
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[dict[str, Any]] = []
    output = [dump(item) for item in get(response, "output", [])]
    for item in output:
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    texts.append(part.get("text", ""))
                elif part.get("type") == "refusal":
                    refusals.append(part.get("refusal", ""))
        elif kind == "function_call":
            calls.append({"id": item.get("call_id"), "type": "function",
                          "function": {"name": item.get("name"),
                                       "arguments": item.get("arguments", "")}})
        elif kind == "custom_tool_call":
            calls.append({"id": item.get("call_id"), "type": "custom",
                          "custom": {"name": item.get("name"),
                                     "input": item.get("input", "")}})
    status = get(response, "status")
    incomplete = get(get(response, "incomplete_details"), "reason")
    content = "".join(texts) if texts else ("".join(refusals) if refusals else None)
    return Answer(
        content=content,
        tool_calls=calls or None,
        model=get(response, "model"),
        response_id=get(response, "id"),
        finish_reason=incomplete or status,
        api_items=_replay_items(output),
        refusal="".join(refusals) or None,
        **responses_usage(get(response, "usage")),
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
        self.model = get(chunk, "model", self.model)
        self.response_id = get(chunk, "id", self.response_id)
        self.usage = get(chunk, "usage", self.usage)
        delta_text: str | None = None
        for choice in get(chunk, "choices", []):
            if get(choice, "index", 0) != 0:
                continue
            delta = get(choice, "delta")
            text = get(delta, "content")
            if text:
                self.texts.append(text)
                delta_text = text
            refusal = get(delta, "refusal")
            if refusal:
                self.refusals.append(refusal)
            for call in get(delta, "tool_calls", []):
                partial = self.calls.setdefault(get(call, "index", 0), _PartialCall())
                partial.id = get(call, "id", partial.id)
                partial.type = get(call, "type", partial.type)
                function = get(call, "function")
                partial.name += get(function, "name", "")
                partial.arguments += get(function, "arguments", "")
            self.finish_reason = get(choice, "finish_reason", self.finish_reason)
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
        kind = get(event, "type")
        if kind == "response.output_text.delta":
            delta: str = get(event, "delta", "")
            self.texts.append(delta)
            return delta
        if kind in ("response.created", "response.in_progress"):
            response = get(event, "response")
            self.response_id = get(response, "id", self.response_id)
            self.model = get(response, "model", self.model)
        elif kind == "response.output_item.added" and get(
                get(event, "item"), "type") in ("function_call", "custom_tool_call"):
            self.started_calls += 1
        elif kind in ("response.completed", "response.incomplete"):
            self.final = get(event, "response")
        elif kind == "response.failed":
            response = get(event, "response")
            self.failure = str(get(get(response, "error"), "message", "response failed"))
        elif kind == "error":
            self.failure = str(get(event, "message", "stream error"))
        return None

    def answer(self) -> Answer:
        if self.final is not None:
            return parse_response(self.final)
        return Answer(content="".join(self.texts) if self.texts else None,
                      model=self.model, response_id=self.response_id, complete=False,
                      dropped_tool_calls=self.started_calls)


#: How a compaction reads in a Chat Completions request (which cannot take its item).
COMPACTION_HEADER = "Earlier in this conversation the user said:\n"
#: The input item that makes ``responses.create`` compact now (it must come last).
COMPACTION_TRIGGER: dict[str, Any] = {"type": "compaction_trigger"}


def compaction_items(output: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """What to replay of a compaction's output: everything from its first item up to
    and including the last compaction item (``/responses/compact`` returns the kept
    user messages, then the item; a trigger, the item alone), or None without one."""
    ends = [i for i, item in enumerate(output) if item.get("type") == "compaction"]
    return [dict(item) for item in output[:ends[-1] + 1]] if ends else None


def compaction_text(items: Sequence[Mapping[str, Any]]) -> str:
    """The readable part of a compaction's output: the user messages it keeps."""
    said = []
    for item in items:
        if item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            said.append(content)
        else:
            said.extend(str(part.get("text", "")) for part in content or ()
                        if isinstance(part, Mapping) and "text" in part)
    return COMPACTION_HEADER + "\n".join(f"- {text}" for text in said if text)


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
