"""ChatGPT's data export (``conversations.json``): a list of conversations, each a
``mapping`` of nodes with ``parent``/``children`` and a ``current_node``.

Import keeps every branch, the current node, timestamps and model slugs. Skipped, by
design: nodes without a message (the empty ``client-created-root``) and messages
flagged ``is_visually_hidden_from_conversation`` (ChatGPT's hidden system prompt and
custom-instruction context); their children hang under the nearest kept ancestor,
and the hidden messages are kept in the conversation's metadata, so export puts them
back where they were. ChatGPT's ``tool``
messages (browsing, code, image tools) have no Chat Completions ``tool_call_id``, so
they are stored as ``assistant`` messages with ``metadata.chatgpt.author.role ==
"tool"``; export restores the role. Non-text content (images, code, execution
output) keeps its extracted text in ``content`` and the original content object in
metadata, so export reproduces it; image files themselves are not in
``conversations.json`` and are not imported.
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
    from_epoch,
    require,
    source_extras,
    source_key,
    source_meta,
)
from ._files import load_json
from ._runner import Item, attempt

FORMAT = "chatgpt"
ROLES = {"system": "system", "user": "user", "assistant": "assistant", "tool": "assistant",
         "developer": "developer"}
ROOT = "client-created-root"


def _text(content: Mapping[str, Any]) -> str:
    """The readable text of any content type (parts, code, execution output, ...)."""
    parts = content.get("parts")
    if isinstance(parts, list):
        texts = [p if isinstance(p, str) else p.get("text") for p in parts
                 if isinstance(p, str | Mapping)]
        return "\n".join(t for t in texts if isinstance(t, str))
    for key in ("text", "result", "content"):
        if isinstance(content.get(key), str):
            return str(content[key])
    thoughts = content.get("thoughts")
    if isinstance(thoughts, list):
        return "\n".join(str(t.get("content", "")) for t in thoughts if isinstance(t, Mapping))
    return ""


def _hidden(message: Mapping[str, Any]) -> bool:
    meta = message.get("metadata")
    return isinstance(meta, Mapping) and bool(meta.get("is_visually_hidden_from_conversation"))


def _node(key: str, parent: str | None, message: Mapping[str, Any]) -> DraftNode:
    what = f"message {key!r}"
    author = require(message, "author", dict, what)
    source_role = author.get("role")
    if source_role not in ROLES:
        raise InvalidRole(f"{what}: unknown author role {source_role!r}; expected one of "
                          f"{', '.join(ROLES)}")
    content = require(message, "content", dict, what)
    text = _text(content)
    extras = {k: v for k, v in message.items() if k not in ("id", "content")}
    if content != {"content_type": "text", "parts": [text]}:
        extras["content"] = content  # anything but one plain text part: keep it exactly
    meta = message.get("metadata")
    model = meta.get("model_slug") if isinstance(meta, Mapping) else None
    return DraftNode(
        key=key, parent=parent, role=ROLES[source_role], content=text,
        created_at=from_epoch(message.get("create_time"), f"{what}: create_time"),
        metadata=source_meta(FORMAT, key, extras),
        model=model if isinstance(model, str) else None,
    )


def _conversation(index: int, raw: Any) -> DraftConversation:
    if not isinstance(raw, Mapping):
        raise InvalidImport(f"a conversation must be an object, not {type(raw).__name__}")
    mapping = require(raw, "mapping", dict, "conversation")
    source_id = raw.get("conversation_id") or raw.get("id") or f"index:{index}"
    kept: dict[str, DraftNode] = {}
    skipped: list[dict[str, Any]] = []
    empty: list[dict[str, Any]] = []
    parent_of: dict[str, str | None] = {}
    for key, entry in mapping.items():
        if not isinstance(entry, Mapping):
            raise InvalidImport(f"mapping entry {key!r} must be an object")
        parent = entry.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise InvalidImport(f"message {key!r}: 'parent' must be a string or null")
        if parent is not None and parent not in mapping:
            raise InvalidImport(f"message {key!r} has parent {parent!r}, which is not in "
                                "the mapping")
        parent_of[key] = parent
        message = entry.get("message")
        if message is None:
            empty.append({"id": key, "parent": parent})
            continue
        if not isinstance(message, Mapping):
            raise InvalidImport(f"message {key!r}: 'message' must be an object")
        if _hidden(message):
            skipped.append({"id": key, "parent": parent, "message": dict(message)})
            continue
        kept[key] = _node(key, parent, message)

    def nearest_kept(key: str | None) -> str | None:
        seen: set[str] = set()
        while key is not None and key not in kept:
            if key in seen:
                raise InvalidImport(f"message {key!r} is on a cycle of parent links")
            seen.add(key)
            key = parent_of[key]
        return key

    for node in kept.values():
        relinked = nearest_kept(node.parent)
        if relinked != node.parent and node.metadata is not None:
            node.metadata["source_parent"] = node.parent   # for the export to put back
        node.parent = relinked
    current = raw.get("current_node")
    if current is not None and current not in mapping:
        raise InvalidImport(f"current_node {current!r} is not in the mapping")
    extras = {k: v for k, v in raw.items()
              if k not in ("mapping", "title", "current_node", "id", "conversation_id")}
    metadata = source_meta(FORMAT, str(source_id), extras)
    if skipped:
        metadata["skipped"] = skipped
    if empty != [{"id": ROOT, "parent": None}]:
        metadata["empty_nodes"] = empty
    title = raw.get("title")
    return DraftConversation(
        label=f"conversation {index + 1} (id {source_id})", source_id=str(source_id),
        title=title if isinstance(title, str) else None, metadata=metadata,
        nodes=list(kept.values()),
        current=nearest_kept(current) if isinstance(current, str) else None,
        created_at=from_epoch(raw.get("create_time"), "create_time"),
        updated_at=from_epoch(raw.get("update_time"), "update_time"),
        progress=index + 1,
    )


def read(path: str | os.PathLike[str]) -> Iterator[Item]:
    data = load_json(path)
    items = data if isinstance(data, list) else [data]
    for index, raw in enumerate(items):
        source = raw.get("conversation_id") or raw.get("id") if isinstance(raw, Mapping) else None
        yield attempt(f"conversation {index + 1} (id {source})",
                      partial(_conversation, index, raw))


def _message(node: Node, key: str) -> dict[str, Any]:
    extras = source_extras(node.metadata, FORMAT)
    content = extras.pop("content", None)
    if not isinstance(content, dict) or _text(content) != (node.content or ""):
        content = {"content_type": "text", "parts": [node.content or ""]}
    message: dict[str, Any] = {"id": key, **extras, "content": content}
    if not extras:
        message["author"] = {"role": node.role, "name": node.name, "metadata": {}}
        message["create_time"] = node.created_at.timestamp()
        message["metadata"] = {"model_slug": node.model} if node.model else {}
    return message


def export(store: Store, conversation: ConversationRef) -> dict[str, Any]:
    """The conversation as one ChatGPT export object.

    What the import set aside comes back where it was: the message-less nodes (the
    ``client-created-root``) and the hidden messages kept in the conversation's
    metadata, with the nodes that hung under them re-attached to them.
    """
    conv = store.get_conversation(conversation)
    tree = store.tree(conv)
    keys = {node.id: source_key(node.metadata, FORMAT, node.id) for node in tree}
    meta = conv.metadata or {}
    set_aside = meta.get("empty_nodes") if meta.get("source") == FORMAT else None
    parents: dict[str, str | None] = {}
    mapping: dict[str, dict[str, Any]] = {}
    roots: list[Mapping[str, Any]] = (set_aside if isinstance(set_aside, list)
                                      else [{"id": ROOT, "parent": None}])
    for entry in roots:
        mapping[str(entry["id"])] = {"id": entry["id"], "message": None, "children": []}
        parents[str(entry["id"])] = entry.get("parent")
    root = next(iter(mapping), None)   # None: the source had no message-less root
    hidden = meta.get("skipped") if meta.get("source") == FORMAT else None
    for entry in hidden if isinstance(hidden, list) else []:
        mapping[entry["id"]] = {"id": entry["id"], "message": entry["message"], "children": []}
        parents[entry["id"]] = entry.get("parent")
    for node in tree:
        if node.kind != "message":
            continue  # summaries are convotree's own; ChatGPT has no such node
        key = keys[node.id]
        original = (node.metadata or {}).get("source_parent")
        parent: str | None = (
            original if isinstance(original, str) and original in mapping
            else keys[node.parent_id] if node.parent_id is not None else root)
        mapping[key] = {"id": key, "message": _message(node, key), "children": []}
        parents[key] = parent
    for key, linked in parents.items():
        if linked is not None and linked not in mapping:
            linked = root if key != root else None
        mapping[key]["parent"] = linked
        if linked is not None:
            mapping[linked]["children"].append(key)
    extras = source_extras(conv.metadata, FORMAT)
    source_id = source_key(conv.metadata, FORMAT, conv.id)
    return {
        **extras,
        "title": conv.title,
        "create_time": extras.get("create_time", conv.created_at.timestamp()),
        "update_time": extras.get("update_time", conv.updated_at.timestamp()),
        "mapping": {key: {"id": entry["id"], "message": entry["message"],
                          "parent": entry["parent"], "children": entry["children"]}
                    for key, entry in mapping.items()},
        "current_node": keys.get(conv.current_node_id) if conv.current_node_id else None,
        "conversation_id": source_id,
        "id": source_id,
    }
