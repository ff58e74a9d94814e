"""A plain JSON array of Chat Completions messages: one linear conversation.

Each message goes through the same checks as ``Store.append`` (roles, content parts,
``name``, ``tool_calls``, ``tool_call_id`` and their pairing). A ``{"messages": [...]}``
object (a request body) is read too. The array has no ids: the conversation's id is
derived from a hash of its content, so importing the same file twice writes it once.
Export writes the current branch's messages (no summaries, no metadata).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import InvalidImport
from ..store import ConversationRef, Store
from ._draft import DraftConversation, DraftNode, content_digest
from ._files import load_json
from ._runner import Item, attempt

FORMAT = "openai"
_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id")


def _conversation(data: Any) -> DraftConversation:
    messages = data.get("messages") if isinstance(data, Mapping) else data
    if not isinstance(messages, list):
        raise InvalidImport("expected a JSON array of messages (or {\"messages\": [...]})")
    nodes: list[DraftNode] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidImport(f"message {index}: must be an object")
        extra = sorted(set(message) - set(_FIELDS))
        if extra:
            raise InvalidImport(f"message {index}: unknown field(s) {', '.join(extra)}")
        nodes.append(DraftNode(
            key=str(index), parent=str(index - 1) if index else None,
            role=str(message.get("role")), content=message.get("content"),
            name=message.get("name"), tool_calls=message.get("tool_calls"),
            tool_call_id=message.get("tool_call_id")))
    return DraftConversation(label="messages", source_id=content_digest(messages), title=None,
                             metadata={"source": FORMAT}, nodes=nodes,
                             current=nodes[-1].key if nodes else None, progress=1)


def read(path: str | os.PathLike[str]) -> Iterator[Item]:
    data = load_json(path)
    yield attempt("messages", lambda: _conversation(data))


def export(store: Store, conversation: ConversationRef) -> list[dict[str, Any]]:
    current = store.current(conversation)
    if current is None:
        return []
    return [node.to_message() for node in store.path(current) if node.kind == "message"]
