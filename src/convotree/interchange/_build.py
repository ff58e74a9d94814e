"""Check a drafted conversation as a whole and turn it into rows, before any transaction.

Everything that can make a conversation unwritable is decided here, with no database:
duplicate ids, a parent that is not in the file, a cycle, a child under a summary, and
every message through ``prepare_message`` (role, content, NUL, size, tokens counted
once, exactly as ``Store.append`` counts them) and the tool-call pairing rule of
``Store.append``. A failure names the message; the caller then writes nothing for the
conversation.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import tokens
from .._ops import check_tool_pairing, node_values, pinned_anchor
from .._validate import PreparedMessage, check_metadata, check_title, prepare_message
from ..errors import InvalidImport, InvalidInput, InvalidParent
from ._draft import (
    DraftConversation,
    DraftNode,
    derived_conversation_id,
    derived_node_id,
    known_as,
)


@dataclass
class Rows:
    """A conversation ready for ``_bulk.insert_conversation``: parents before children."""

    conversation: dict[str, Any]
    nodes: list[dict[str, Any]]
    current_node_id: uuid.UUID | None
    #: Other ids under which the tenant may already hold this conversation.
    aliases: list[uuid.UUID]


def _order(draft: DraftConversation) -> list[tuple[DraftNode, int]]:
    """Nodes breadth-first from the roots with their depth; refuses broken trees."""
    by_key: dict[str, DraftNode] = {}
    for node in draft.nodes:
        if node.key in by_key:
            raise InvalidImport(f"message {node.key!r} appears twice")
        by_key[node.key] = node
    children: dict[str | None, list[DraftNode]] = {}
    for node in draft.nodes:
        if node.parent is not None and node.parent not in by_key:
            raise InvalidParent(
                f"message {node.key!r} has parent {node.parent!r}, which is not in the "
                "conversation")
        if node.parent == node.key:
            raise InvalidImport(f"message {node.key!r} is its own parent (a cycle)")
        children.setdefault(node.parent, []).append(node)
    ordered: list[tuple[DraftNode, int]] = []
    queue = deque((root, 0) for root in children.get(None, ()))
    while queue:
        node, depth = queue.popleft()
        ordered.append((node, depth))
        queue.extend((child, depth + 1) for child in children.get(node.key, ()))
    if len(ordered) != len(draft.nodes):
        reached = {node.key for node, _ in ordered}
        stuck = next(node for node in draft.nodes if node.key not in reached)
        raise InvalidImport(
            f"message {stuck.key!r} is on a cycle of parent links (never reaches a root)")
    return ordered


def _encoding_of(node: DraftNode, default: str) -> str:
    enc = node.columns.get("encoding") if node.columns else None
    if not isinstance(enc, str):
        enc = tokens.encoding_for_model(node.model) if node.model else default
    return enc


def _batch_counts(draft: DraftConversation, default: str) -> dict[str, dict[str, int]]:
    """Tokens of every plain-text content, counted per encoding in one batch.

    tiktoken encodes a batch across threads with the GIL released, so a conversation's
    messages are counted in parallel; ``prepare_message`` then only looks them up.
    Content parts and anything unusual are left to ``prepare_message`` itself.
    """
    pending: dict[str, set[str]] = {}
    for node in draft.nodes:
        if isinstance(node.content, str) and node.content:
            pending.setdefault(_encoding_of(node, default), set()).add(node.content)
    counts: dict[str, dict[str, int]] = {}
    for enc, texts in pending.items():
        unique = list(texts)
        try:
            counts[enc] = dict(zip(unique, tokens.count_texts(unique, enc), strict=True))
        except Exception:   # an unknown encoding or bad text: prepare_message says why
            counts[enc] = {}
    return counts


def _prepare(node: DraftNode, *, encoding: str, max_bytes: int,
             counts: Mapping[str, Mapping[str, int]] | None = None) -> PreparedMessage:
    enc = _encoding_of(node, encoding)
    return prepare_message(
        kind=node.kind, role=node.role, content=node.content, name=node.name,
        tool_calls=node.tool_calls, tool_call_id=node.tool_call_id, model=node.model,
        encoding=enc, input_tokens=node.input_tokens, output_tokens=node.output_tokens,
        pinned=node.pinned, metadata=node.metadata, created_at=node.created_at,
        max_message_bytes=max_bytes,
        known_counts=counts.get(enc) if counts else None,
    )


def _chain(rows: Mapping[str, dict[str, Any]], parent_key: str,
           parents: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """What ``check_tool_pairing`` needs: nearest non-tool ancestor, then its results."""
    chain: list[dict[str, Any]] = []
    key: str | None = parent_key
    while key is not None:
        row = rows[key]
        if row["role"] != "tool":
            chain.append({**row, "tool_call_id": None})
            break
        chain.append(row)
        key = parents[key]
    chain.reverse()
    return chain


#: Columns of a native node that are computed on import, never taken from the file.
_COMPUTED = ("conversation_id", "id", "parent_id", "depth", "created_at", "content", "media",
             "token_count", "overhead_tokens", "encoding", "compacted")


def build(draft: DraftConversation, *, tenant: str, fmt: str, encoding: str,
          max_message_bytes: int) -> Rows:
    """Validate ``draft`` completely and return its rows, or raise ``InvalidInput``."""
    conversation_id = draft.id or derived_conversation_id(tenant, fmt, draft.source_id)
    check_title(draft.title)
    check_metadata(draft.metadata)
    ordered = _order(draft)
    rows: dict[str, dict[str, Any]] = {}
    parents = {node.key: node.parent for node in draft.nodes}
    now = datetime.now(UTC)
    fallback_time = draft.created_at or now
    result: list[dict[str, Any]] = []
    counts = _batch_counts(draft, encoding)
    for node, depth in ordered:
        try:
            message = _prepare(node, encoding=encoding, max_bytes=max_message_bytes,
                               counts=counts)
            parent = rows[node.parent] if node.parent is not None else None
            if parent is not None and parent["kind"] == "summary":
                raise InvalidParent("a summary node cannot have children")
            if node.kind == "message":
                check_tool_pairing(
                    _chain(rows, node.parent, parents) if node.parent is not None else [],
                    message, conversation_id=conversation_id)
        except InvalidInput as exc:
            raise type(exc)(f"message {node.key!r}: {exc}") from exc
        anchor = None if parent is None else pinned_anchor(parent["id"], parent)
        created = message.created_at or (parent["created_at"] if parent else fallback_time)
        row = node_values(conversation_id, node.id or derived_node_id(conversation_id, node.key),
                          parent["id"] if parent else None, depth, anchor, message, created)
        if node.columns is not None:
            # native: every column exactly as exported, except the tree position
            # (computed here) and what convotree derives from the message itself: the
            # text of the parts, media sizes and token counts are recomputed, once, so
            # a hand-edited backup cannot store counts that disagree with its content.
            computed = {key: row[key] for key in _COMPUTED}
            row.update({k: v for k, v in node.columns.items() if k in row})
            row.update(computed)
            if "pinned_ancestor_id" in node.columns:
                # Summaries store no pointer (see _ops.insert_summary): keep what was stored.
                row["pinned_ancestor_id"] = node.columns["pinned_ancestor_id"]
        rows[node.key] = row
        result.append(row)
    current: uuid.UUID | None = None
    if draft.current is not None:
        if draft.current not in rows:
            raise InvalidImport(f"the current message {draft.current!r} is not in the "
                                "conversation")
        if rows[draft.current]["kind"] != "message":
            raise InvalidImport(f"the current node {draft.current!r} is a summary")
        current = rows[draft.current]["id"]
    ids = [row["id"] for row in result]
    if len(set(ids)) != len(ids):
        raise InvalidImport("two messages have the same id")
    latest = max((row["created_at"] for row in result), default=fallback_time)
    conversation = {
        "id": conversation_id, "tenant_id": tenant, "title": draft.title,
        "metadata": draft.metadata, "current_node_id": None,
        "created_at": draft.created_at or min(
            (row["created_at"] for row in result), default=now),
        "updated_at": draft.updated_at or latest,
    }
    aliases = [] if draft.id is not None else known_as(tenant, draft.source_id)
    return Rows(conversation=conversation, nodes=result, current_node_id=current,
                aliases=aliases)
