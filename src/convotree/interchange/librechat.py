"""LibreChat conversation exports (the JSON of "Export conversation").

LibreChat writes ``{conversationId, endpoint, title, exportAt, branches, recursive,
options?, messages}``; with "recursive" the messages are a tree (``messagesTree``, or
``messages`` holding root messages with nested ``children``). Both shapes are read,
and so is a list of such documents. A message is ``{messageId, parentMessageId,
isCreatedByUser, sender, text, model, endpoint, createdAt, ...}``; a root's parent is
the all-zero UUID (or null). ``isCreatedByUser`` decides the role (user/assistant);
when it is missing, ``sender == "User"`` does. ``parentMessageId`` is the truth: a
nested child that names another parent fails. LibreChat exports have no current
node: it is set to the most recently created leaf (what LibreChat shows by default).
Agent messages whose ``text`` is empty take the text of their ``content`` parts; the
parts are kept in metadata.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

from ..errors import InvalidImport
from ..store import ConversationRef, Store
from ._draft import (
    DraftConversation,
    DraftNode,
    content_digest,
    from_iso,
    iso,
    require,
    source_extras,
    source_key,
    source_meta,
)
from ._files import load_json
from ._runner import Item, attempt

FORMAT = "librechat"
NO_PARENT = "00000000-0000-0000-0000-000000000000"
_STRUCTURE = ("messageId", "parentMessageId", "children", "text", "isCreatedByUser",
              "conversationId")


def _text(message: Mapping[str, Any]) -> str:
    text = message.get("text")
    if text is not None and not isinstance(text, str):
        raise InvalidImport(f"message {message.get('messageId')!r}: 'text' must be a string, "
                            f"not {type(text).__name__}")
    if isinstance(text, str) and text:
        return text
    pieces: list[str] = []
    for part in message.get("content") or ():
        if isinstance(part, Mapping) and part.get("type") == "text":
            value = part.get("text")
            value = value.get("value") if isinstance(value, Mapping) else value
            if isinstance(value, str):
                pieces.append(value)
    return "\n".join(pieces) if pieces else (text if isinstance(text, str) else "")


def _node(message: Any, nested_parent: str | None) -> DraftNode:
    if not isinstance(message, Mapping):
        raise InvalidImport(f"a message must be an object, not {type(message).__name__}")
    key = require(message, "messageId", str, "message")
    what = f"message {key!r}"
    parent = message.get("parentMessageId")
    if parent in (None, "", NO_PARENT):
        parent = None
    elif not isinstance(parent, str):
        raise InvalidImport(f"{what}: 'parentMessageId' must be a string")
    if nested_parent is not None and parent != nested_parent:
        raise InvalidImport(f"{what} is nested under {nested_parent!r} but names parent "
                            f"{parent!r}")
    by_user = message.get("isCreatedByUser")
    if not isinstance(by_user, bool):
        sender = message.get("sender")
        if not isinstance(sender, str):
            raise InvalidImport(f"{what}: needs 'isCreatedByUser' (or a 'sender')")
        by_user = sender.lower() == "user"
    extras = {k: v for k, v in message.items() if k not in _STRUCTURE}
    model = message.get("model")
    return DraftNode(key=key, parent=parent, role="user" if by_user else "assistant",
                     content=_text(message),
                     created_at=from_iso(message.get("createdAt"), f"{what}: createdAt"),
                     metadata=source_meta(FORMAT, key, extras),
                     model=model if isinstance(model, str) else None)


def _flatten(messages: list[Any]) -> list[DraftNode]:
    found: list[DraftNode] = []
    stack: list[tuple[Any, str | None]] = [(m, None) for m in reversed(messages)]
    while stack:
        message, parent = stack.pop()
        node = _node(message, parent)
        found.append(node)
        children = message.get("children") or []
        if not isinstance(children, list):
            raise InvalidImport(f"message {node.key!r}: 'children' must be a list")
        stack.extend((child, node.key) for child in reversed(children))
    return found


def _latest_leaf(nodes: list[DraftNode]) -> str | None:
    parents = {node.parent for node in nodes}
    leaves = [(n.created_at.timestamp() if n.created_at else 0.0, i, n.key)
              for i, n in enumerate(nodes) if n.key not in parents]
    return max(leaves)[2] if leaves else None


def _conversation(index: int, raw: Any) -> DraftConversation:
    if not isinstance(raw, Mapping):
        raise InvalidImport(f"an export must be an object, not {type(raw).__name__}")
    messages = raw.get("messagesTree", raw.get("messages"))
    if not isinstance(messages, list):
        raise InvalidImport("an export needs a 'messages' (or 'messagesTree') list")
    nodes = _flatten(messages)
    source_id = raw.get("conversationId") or content_digest(raw)
    extras = {k: v for k, v in raw.items()
              if k not in ("conversationId", "title", "messages", "messagesTree")}
    title = raw.get("title")
    return DraftConversation(
        label=f"conversation {index + 1} (id {source_id})", source_id=str(source_id),
        title=title if isinstance(title, str) else None,
        metadata=source_meta(FORMAT, str(source_id), extras), nodes=nodes,
        current=_latest_leaf(nodes), progress=index + 1)


def read(path: str | os.PathLike[str]) -> Iterator[Item]:
    data = load_json(path)
    if isinstance(data, list) and data and isinstance(data[0], Mapping) and \
            "messageId" in data[0]:
        data = {"messages": data}  # a bare list of messages: one conversation
    documents = data if isinstance(data, list) else [data]
    for index, raw in enumerate(documents):
        ident = raw.get("conversationId") if isinstance(raw, Mapping) else None
        yield attempt(f"conversation {index + 1} (id {ident})",
                      partial(_conversation, index, raw))


def export(store: Store, conversation: ConversationRef) -> dict[str, Any]:
    """The flat shape (``branches: true, recursive: false``): every message, every branch."""
    conv = store.get_conversation(conversation)
    tree = [node for node in store.tree(conv) if node.kind == "message"]
    keys = {node.id: source_key(node.metadata, FORMAT, node.id) for node in tree}
    source_id = source_key(conv.metadata, FORMAT, conv.id)
    messages = []
    for node in tree:
        extras = source_extras(node.metadata, FORMAT)
        message = {
            "messageId": keys[node.id],
            "parentMessageId": keys[node.parent_id] if node.parent_id else NO_PARENT,
            "conversationId": source_id,
            **extras,
            "text": node.content or "",
            "isCreatedByUser": node.role == "user",
        }
        message.setdefault("sender", "User" if node.role == "user" else "Assistant")
        message.setdefault("createdAt", iso(node.created_at))
        if node.model is not None:
            message.setdefault("model", node.model)
        messages.append(message)
    extras = source_extras(conv.metadata, FORMAT)
    return {"conversationId": source_id, "endpoint": extras.pop("endpoint", None),
            "title": conv.title, **extras, "branches": True, "recursive": False,
            "messages": messages}
