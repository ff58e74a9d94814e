"""What users get back: immutable snapshots of rows.

Nodes are append-only in convotree, so a ``Node`` a caller holds never goes stale in
what it says about the message; it is safe to pass around and to use as a parent.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Conversation", "Node"]


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation: a tree of nodes plus the leaf it last moved to."""

    id: uuid.UUID
    tenant_id: str
    title: str | None
    metadata: dict[str, Any] | None
    current_node_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Conversation:
        return cls(
            id=row["id"],
            tenant_id=row["tenant_id"],
            title=row["title"],
            metadata=row["metadata"],
            current_node_id=row["current_node_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True, slots=True)
class Node:
    """One message (or summary) in a conversation tree.

    ``content`` is the text; when the message was given as a list of content parts,
    ``parts`` holds that list exactly as it came and ``content`` the text parts joined
    with newlines (for search and reporting). ``token_count`` is the content's tokens
    under ``encoding``; ``overhead_tokens`` what the chat format adds around it;
    ``media`` the sizes of non-text parts (for image token prices). A summary node
    (``kind='summary'``) hangs under the last node it covers; ``summary_base_id`` is
    the summary it extends (None: it covers from the root). ``compacted``: an answer
    the Responses API compacted (its ``api_items`` hold a compaction item), where a
    Responses context of its branch starts.
    """

    id: uuid.UUID
    conversation_id: uuid.UUID
    parent_id: uuid.UUID | None
    depth: int
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
    response_id: str | None
    finish_reason: str | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    counted_input_tokens: int | None
    api_items: list[dict[str, Any]] | None
    compacted: bool
    pinned: bool
    summary_base_id: uuid.UUID | None
    metadata: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Node:
        return cls(**{name: row[name] for name in NODE_FIELDS})

    def to_message(self) -> dict[str, Any]:
        """This node as a Chat Completions message (only the fields the API takes)."""
        message: dict[str, Any] = {"role": self.role}
        message["content"] = self.parts if self.parts is not None else self.content
        if self.name is not None:
            message["name"] = self.name
        if self.tool_calls is not None:
            message["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


NODE_FIELDS: tuple[str, ...] = tuple(Node.__dataclass_fields__)
