"""LangChain messages as convotree rows and back (pure: no database, no I/O).

One LangChain message is one node. The columns hold what OpenAI's chat format says
(role, content or content parts, name, tool calls, the tool result's call id, the
answer's usage), so budgets, tool-pair pruning and SQL reports work on it; what the
columns cannot say (the message's id and type, ``additional_kwargs``,
``response_metadata``, the exact ``usage_metadata``, content blocks OpenAI's chat
format has no part for, a tool result's ``status`` and ``artifact``) is kept under
``metadata["langchain"]``, so :func:`to_message` gives the message back as it was.

Each mirrored node also carries a **chain digest**: a hash of its message folded into
its parent's digest. Equal digests mean equal branches (every message from the root,
ids and content), so a mirror can tell from ONE node whether a thread's message list
is the branch ending there, without reading the branch.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
    convert_to_openai_data_block,
    is_data_content_block,
    messages_from_dict,
)

from ..errors import InvalidContent, InvalidRole
from ..models import Node

#: The key of a node's metadata that holds the LangChain side of the message.
KEY = "langchain"
#: Namespace of the ids given to messages that arrive without one.
MESSAGE_ID_NAMESPACE = uuid.UUID("0b7c4d52-6c4e-4f0e-9a4b-7d1c2f5e8a31")

_ROLES = ("system", "developer", "user", "assistant", "tool")
_TYPE_OF_ROLE = {"user": "human", "assistant": "ai", "system": "system",
                 "developer": "system", "tool": "tool"}
#: Fields rebuilt from the columns (or the digest entry), so not repeated in ``data``.
_FROM_COLUMNS = frozenset({"content", "type", "id", "tool_calls", "tool_call_id"})
#: The largest count a token column takes (32-bit INTEGER).
_MAX_COUNT = 2**31 - 1


def role_of(message: BaseMessage) -> str:
    """The OpenAI chat role of a LangChain message, or ``InvalidRole``/``InvalidContent``."""
    if isinstance(message, RemoveMessage):
        raise InvalidContent("a RemoveMessage is an instruction to the graph's reducer, "
                             "not a message: it cannot be stored")
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, SystemMessage):
        role = message.additional_kwargs.get("__openai_role__", "system")
        if role not in ("system", "developer"):
            raise InvalidRole(f"a SystemMessage's __openai_role__ must be 'system' or "
                              f"'developer', not {role!r}")
        return str(role)
    if isinstance(message, ChatMessage):
        if message.role not in _ROLES:
            raise InvalidRole(f"unknown role {message.role!r}; expected one of "
                              f"{', '.join(_ROLES)}")
        return message.role
    if isinstance(message, BaseMessage):
        raise InvalidContent(f"{type(message).__name__} has no place in OpenAI's chat format "
                             "(FunctionMessage: use tool calls and ToolMessage)")
    raise InvalidContent(f"expected a LangChain message, not {type(message).__name__}")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=repr)


def chain(previous: str | None, message: BaseMessage) -> str:
    """The digest of the branch ``previous`` extended by ``message`` (root: ``None``)."""
    calls = [[c.get("id"), c.get("name"), c.get("args")]
             for c in getattr(message, "tool_calls", None) or ()]
    invalid = [[c.get("id"), c.get("name"), c.get("args")]
               for c in getattr(message, "invalid_tool_calls", None) or ()]
    body = _canonical([message.type, message.id, message.content, message.name, calls,
                       invalid, getattr(message, "tool_call_id", None),
                       getattr(message, "role", None)])
    text = f"{previous or ''}\x1f{body}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()[:32]


def ensure_id(message: BaseMessage, previous: str | None) -> None:
    """Give a message without an id a stable one (derived from where it stands), so the
    thread and its mirror name it alike (LangGraph's reducer keeps an id it is given)."""
    if message.id is None:
        message.id = "convotree-" + str(uuid.uuid5(
            MESSAGE_ID_NAMESPACE, f"{previous or ''}\x1f{_canonical(message.content)}"))


def node_chain(node: Node) -> str | None:
    """The chain digest a mirrored node carries (None: not written by this adapter)."""
    entry = (node.metadata or {}).get(KEY)
    found = entry.get("chain") if isinstance(entry, Mapping) else None
    return found if isinstance(found, str) else None


def _content_columns(content: Any) -> tuple[str | list[dict[str, Any]], bool]:
    """(content for the columns, whether it is exactly the message's content)."""
    if isinstance(content, str):
        return content, True
    if not isinstance(content, list):
        raise InvalidContent(f"message content must be a string or a list of content "
                             f"blocks, not {type(content).__name__}")
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, str):
            parts.append({"type": "text", "text": block})
        elif not isinstance(block, Mapping):
            raise InvalidContent("a content block must be a string or an object")
        elif block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif block.get("type") in ("image_url", "input_audio", "file", "refusal"):
            parts.append(dict(block))
        elif is_data_content_block(dict(block)):
            try:
                parts.append(convert_to_openai_data_block(dict(block)))
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidContent(f"content block cannot be read: {exc}") from exc
        # Anything else (reasoning, provider tool blocks, ...) has no chat part: it is
        # kept verbatim in the metadata and not counted.
    exact = parts == content
    return parts, exact


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_COUNT:
        return value
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def append_fields(message: BaseMessage, digest: str | None) -> dict[str, Any]:
    """The ``Store.append`` keywords of one message (``digest``: its chain digest)."""
    role = role_of(message)
    content, exact = _content_columns(message.content)
    dumped = message.model_dump()
    data = {key: value for key, value in dumped.items()
            if key not in _FROM_COLUMNS and value not in (None, {}, [], "")}
    if not exact:
        data["content"] = message.content
    lossy = sorted(key for key, value in data.items() if not _jsonable(value))
    for key in lossy:
        del data[key]
    entry: dict[str, Any] = {"id": message.id, "type": message.type, "data": data}
    if digest is not None:
        entry["chain"] = digest
    if lossy:
        entry["lossy"] = lossy   # not JSON (an artifact object, ...): not kept
    fields: dict[str, Any] = {"role": role, "content": content, "metadata": {KEY: entry}}
    name = message.name or message.additional_kwargs.get("name")
    if role != "tool" and isinstance(name, str) and name:
        fields["name"] = name   # the chat format sends it (not for tool results)
    if isinstance(message, ToolMessage):
        fields["tool_call_id"] = message.tool_call_id
    if isinstance(message, AIMessage):
        _answer_fields(message, fields)
    return fields


def _answer_fields(message: AIMessage, fields: dict[str, Any]) -> None:
    calls = [{"id": call.get("id"), "type": "function",
              "function": {"name": call.get("name"),
                           "arguments": json.dumps(call.get("args"), ensure_ascii=False)}}
             for call in message.tool_calls]
    # Malformed calls still need their results paired (create_agent answers them).
    calls += [{"id": call.get("id"), "type": "function",
               "function": {"name": call.get("name") or "",
                            "arguments": call.get("args") or ""}}
              for call in message.invalid_tool_calls if call.get("id")]
    if calls:
        fields["tool_calls"] = calls
    usage: Mapping[str, Any] = message.usage_metadata or {}
    meta: Mapping[str, Any] = message.response_metadata or {}
    fields["input_tokens"] = _count(usage.get("input_tokens"))
    fields["output_tokens"] = _count(usage.get("output_tokens"))
    fields["cached_tokens"] = _count((usage.get("input_token_details") or {}).get("cache_read"))
    fields["reasoning_tokens"] = _count(
        (usage.get("output_token_details") or {}).get("reasoning"))
    fields["model"] = _text(meta.get("model_name")) or _text(meta.get("model"))
    fields["response_id"] = _text(meta.get("id"))
    fields["finish_reason"] = _text(meta.get("finish_reason")) or _text(
        meta.get("stop_reason"))


def to_message(node: Node) -> BaseMessage:
    """The LangChain message a node stands for (as it was stored, when this adapter
    stored it; built from the columns otherwise, with the node's id as message id)."""
    entry = (node.metadata or {}).get(KEY)
    entry = entry if isinstance(entry, Mapping) else {}
    data: dict[str, Any] = dict(entry.get("data") or {})
    kind = entry.get("type") or _TYPE_OF_ROLE[node.role]
    data.setdefault("content", node.parts if node.parts is not None else (node.content or ""))
    data["id"] = entry["id"] if "id" in entry else str(node.id)
    if kind == "system" and node.role == "developer":
        data.setdefault("additional_kwargs", {})["__openai_role__"] = "developer"
    if kind == "chat":
        data.setdefault("role", node.role)
    if node.name and "name" not in data and node.role != "tool":
        data["name"] = node.name
    if node.role == "tool":
        data["tool_call_id"] = node.tool_call_id
    if node.role == "assistant":
        invalid = {c.get("id") for c in data.get("invalid_tool_calls") or ()}
        data["tool_calls"] = [_tool_call(call) for call in node.tool_calls or ()
                              if call.get("id") not in invalid]
        if "usage_metadata" not in data and node.input_tokens is not None and (
                node.output_tokens is not None):
            data["usage_metadata"] = {
                "input_tokens": node.input_tokens, "output_tokens": node.output_tokens,
                "total_tokens": node.input_tokens + node.output_tokens}
    return messages_from_dict([{"type": kind, "data": data}])[0]


def _tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    body = call.get("function") or {}
    try:
        args = json.loads(body.get("arguments") or "{}")
    except ValueError:
        args = {"__raw__": body.get("arguments")}
    return {"name": body.get("name"), "args": args if isinstance(args, dict) else
            {"__raw__": args}, "id": call.get("id"), "type": "tool_call"}


def summary_message(node_id: uuid.UUID, text: str) -> SystemMessage:
    """A convotree summary, as the system message the model receives."""
    return SystemMessage(content=text, id=f"convotree-summary-{node_id}")


def from_chat_dict(message: Mapping[str, Any], node_id: uuid.UUID) -> BaseMessage:
    """A Chat Completions message of a context as a LangChain message."""
    role = message["role"]
    content = message.get("content")
    content = "" if content is None else content
    ident = str(node_id)
    if role == "user":
        return HumanMessage(content=content, id=ident, name=message.get("name"))
    if role == "assistant":
        calls = [_tool_call(call) for call in message.get("tool_calls") or ()]
        return AIMessage(content=content, id=ident, name=message.get("name"),
                         tool_calls=calls)
    if role == "tool":
        return ToolMessage(content=content, id=ident, tool_call_id=message["tool_call_id"])
    kwargs = {"__openai_role__": "developer"} if role == "developer" else {}
    return SystemMessage(content=content, id=ident, additional_kwargs=kwargs)
