"""Open WebUI chat exports: a list of chats (or one), each with ``chat.history``.

``history.messages`` is keyed by message id with ``parentId``/``childrenIds``;
``history.currentId`` is the current node. Both the export row shape
``{id, title, chat: {...}, created_at, ...}`` and a bare ``chat`` object are read.
``parentId`` is the truth (``childrenIds`` is derived from it on export). The flat
``chat.messages`` list duplicates the current branch and is not imported; export
rebuilds it from the current branch. ``usage.prompt_tokens``/``completion_tokens``
become ``input_tokens``/``output_tokens``; every other message field is kept in
metadata.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

from ..errors import InvalidImport, InvalidRole
from ..models import Node
from ..store import ConversationRef, Store
from ._draft import (
    DraftConversation,
    DraftNode,
    content_digest,
    from_epoch,
    require,
    source_extras,
    source_key,
    source_meta,
)
from ._files import load_json
from ._runner import Item, attempt

FORMAT = "openwebui"
ROLES = ("system", "user", "assistant")
_STRUCTURE = ("id", "parentId", "childrenIds", "role", "content")


def _usage(extras: Mapping[str, Any], key: str) -> int | None:
    usage = extras.get("usage")
    value = usage.get(key) if isinstance(usage, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def _node(key: str, message: Mapping[str, Any]) -> DraftNode:
    what = f"message {key!r}"
    if not isinstance(message, Mapping):
        raise InvalidImport(f"{what} must be an object")
    role = message.get("role")
    if role not in ROLES:
        raise InvalidRole(f"{what}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
    parent = message.get("parentId")
    if parent is not None and not isinstance(parent, str):
        raise InvalidImport(f"{what}: 'parentId' must be a string or null")
    content = require(message, "content", str, what)
    extras = {k: v for k, v in message.items() if k not in _STRUCTURE}
    model = message.get("model")
    return DraftNode(key=key, parent=parent, role=role, content=content,
                     created_at=from_epoch(message.get("timestamp"), f"{what}: timestamp"),
                     metadata=source_meta(FORMAT, key, extras),
                     model=model if isinstance(model, str) else None,
                     input_tokens=_usage(extras, "prompt_tokens"),
                     output_tokens=_usage(extras, "completion_tokens"))


def _conversation(index: int, raw: Any) -> DraftConversation:
    if not isinstance(raw, Mapping):
        raise InvalidImport(f"a chat must be an object, not {type(raw).__name__}")
    chat = raw["chat"] if isinstance(raw.get("chat"), Mapping) else raw
    history = require(chat, "history", dict, "chat")
    messages = require(history, "messages", dict, "chat history")
    source_id = raw.get("id") or chat.get("id") or content_digest(raw)
    nodes = [_node(key, message) for key, message in messages.items()]
    outer = {k: v for k, v in raw.items() if k != "chat"} if chat is not raw else {}
    inner = {k: v for k, v in chat.items() if k not in ("history", "messages")}
    created = raw.get("created_at") if "created_at" in raw else chat.get("timestamp")
    title = raw.get("title") or chat.get("title")
    current = history.get("currentId")
    return DraftConversation(
        label=f"chat {index + 1} (id {source_id})", source_id=str(source_id),
        title=title if isinstance(title, str) else None,
        metadata=source_meta(FORMAT, str(source_id), {"export": outer, "chat": inner}),
        nodes=nodes, current=current if isinstance(current, str) else None,
        created_at=from_epoch(created, "created_at"),
        updated_at=from_epoch(raw.get("updated_at"), "updated_at"), progress=index + 1)


def read(path: str | os.PathLike[str]) -> Iterator[Item]:
    data = load_json(path)
    chats = data if isinstance(data, list) else [data]
    for index, raw in enumerate(chats):
        ident = raw.get("id") if isinstance(raw, Mapping) else None
        yield attempt(f"chat {index + 1} (id {ident})",
                      partial(_conversation, index, raw))


def _message(node: Node, keys: Mapping[Any, str], children: list[str]) -> dict[str, Any]:
    extras = source_extras(node.metadata, FORMAT)
    message: dict[str, Any] = {
        "id": keys[node.id],
        "parentId": keys[node.parent_id] if node.parent_id is not None else None,
        "childrenIds": children, "role": node.role, "content": node.content or "", **extras}
    message.setdefault("timestamp", int(node.created_at.timestamp()))
    if node.model is not None:
        message.setdefault("model", node.model)
    return message


def export(store: Store, conversation: ConversationRef) -> dict[str, Any]:
    """One export row: ``{id, title, chat: {title, history, messages, ...}, ...}``."""
    conv = store.get_conversation(conversation)
    tree = [node for node in store.tree(conv) if node.kind == "message"]
    keys = {node.id: source_key(node.metadata, FORMAT, node.id) for node in tree}
    children: dict[Any, list[str]] = {node.id: [] for node in tree}
    for node in tree:
        if node.parent_id is not None:
            children[node.parent_id].append(keys[node.id])
    messages = {keys[n.id]: _message(n, keys, children[n.id]) for n in tree}
    current = keys.get(conv.current_node_id) if conv.current_node_id else None
    branch: list[dict[str, Any]] = []
    by_key = {keys[n.id]: n for n in tree}
    key = current
    while key is not None:
        branch.append(messages[key])
        parent = by_key[key].parent_id
        key = keys[parent] if parent is not None else None
    branch.reverse()
    extras = source_extras(conv.metadata, FORMAT)
    outer: dict[str, Any] = extras.get("export") or {}
    inner: dict[str, Any] = extras.get("chat") or {}
    source_id = source_key(conv.metadata, FORMAT, conv.id)
    chat = {**inner, "title": conv.title,
            "history": {"messages": messages, "currentId": current}, "messages": branch}
    return {**outer, "id": source_id, "title": conv.title, "chat": chat,
            "created_at": outer.get("created_at", int(conv.created_at.timestamp())),
            "updated_at": outer.get("updated_at", int(conv.updated_at.timestamp()))}
