"""OpenAssistant (oasst1/oasst2) JSON Lines: one conversation per message tree.

Two line shapes are read, even mixed in one file:

- tree rows ``{message_tree_id, tree_state, prompt, origin}``, ``prompt`` being the
  root message with nested ``replies``: each line is one tree, written as soon as it
  is read;
- flat message rows (``message_id, parent_id, message_tree_id, text, role, ...``).
  A tree's rows may come anywhere in the file, in any order, so the file is read
  twice: the first pass notes, per ``message_tree_id``, the byte offsets of its lines
  (numbers, not rows: memory stays small on the official multi-GB files); the second
  reads each tree's lines back and writes the tree. A broken line whose tree id can
  still be read fails that whole tree (nothing of it is written); one whose id cannot
  be read fails alone. A row seen twice (two exports concatenated) is read once and the
  copy counted as skipped; two different rows with one message id fail the tree.

``prompter`` becomes ``user``, ``assistant`` stays; every other field (``lang``,
``rank``, ``deleted``, ``review_count``, ``emojis``, ``labels``, ...) is kept in the
node's metadata. A tree id seen again later in the file is a duplicate: skipped and
counted. OASST has no current branch; the current node is the leaf reached by always
following the best-ranked reply (lowest ``rank``; unranked replies after ranked ones;
ties to the oldest ``created_date``, then file order).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

from ..errors import InvalidImport, InvalidRole, NotExportable
from ..models import Node
from ..store import ConversationRef, Store
from ._draft import (
    DraftConversation,
    DraftNode,
    from_iso,
    iso,
    require,
    source_extras,
    source_key,
    source_meta,
)
from ._files import json_line_at, json_line_offsets
from ._runner import Item, Skip, attempt

FORMAT = "oasst"
ROLES = {"prompter": "user", "assistant": "assistant"}
EXPORT_ROLES = {"user": "prompter", "assistant": "assistant"}
_STRUCTURE = ("message_id", "parent_id", "text", "role", "replies", "created_date")


def _node(row: Mapping[str, Any], parent: str | None) -> DraftNode:
    key = require(row, "message_id", str, "message")
    what = f"message {key!r}"
    role = row.get("role")
    if role not in ROLES:
        raise InvalidRole(f"{what}: unknown role {role!r}; expected prompter or assistant")
    text = require(row, "text", str, what)
    extras = {k: v for k, v in row.items() if k not in _STRUCTURE}
    model = row.get("model_name")
    return DraftNode(key=key, parent=parent, role=ROLES[role], content=text,
                     created_at=from_iso(row.get("created_date"), f"{what}: created_date"),
                     metadata=source_meta(FORMAT, key, extras),
                     model=model if isinstance(model, str) else None)


def _age(reply: DraftNode, position: int) -> tuple[bool, float, int]:
    """Oldest first; replies without a date after dated ones; then file order."""
    stamp = reply.created_at.timestamp() if reply.created_at is not None else 0.0
    return (reply.created_at is None, stamp, position)


def _best_leaf(nodes: list[DraftNode], ranks: Mapping[str, Any]) -> str | None:
    children: dict[str | None, list[DraftNode]] = {}
    for node in nodes:
        children.setdefault(node.parent, []).append(node)
    roots = children.get(None, [])
    if not roots:
        return None
    node, seen = roots[0], set()
    while children.get(node.key) and node.key not in seen:
        seen.add(node.key)
        replies = children[node.key]
        ranked = [r for r in replies if isinstance(ranks.get(r.key), int | float)]
        # Ties go to the oldest reply (then file order): the same choice whatever
        # order a file lists the replies in, so an export imports back to it.
        ages = {r.key: _age(r, index) for index, r in enumerate(replies)}
        node = (min(ranked, key=lambda r: (ranks[r.key], ages[r.key])) if ranked
                else min(replies, key=lambda r: ages[r.key]))
    return node.key


def _draft(tree_id: str, title_source: str | None, nodes: list[DraftNode],
           ranks: Mapping[str, Any], extras: dict[str, Any], label: str, progress: int
           ) -> DraftConversation:
    title = title_source.strip().splitlines()[0][:80] if title_source and title_source.strip() \
        else None
    return DraftConversation(label=label, source_id=tree_id, title=title,
                             metadata=source_meta(FORMAT, tree_id, extras), nodes=nodes,
                             current=_best_leaf(nodes, ranks), progress=progress)


def _tree_row(row: Mapping[str, Any], label: str, progress: int) -> DraftConversation:
    tree_id = require(row, "message_tree_id", str, "tree")
    prompt = require(row, "prompt", dict, f"tree {tree_id}")
    nodes: list[DraftNode] = []
    ranks: dict[str, Any] = {}
    stack: list[tuple[Mapping[str, Any], str | None]] = [(prompt, None)]
    while stack:
        message, parent = stack.pop()
        node = _node(message, parent)
        declared = message.get("parent_id")
        if declared != parent:
            raise InvalidImport(f"message {node.key!r}: parent_id {declared!r} disagrees with "
                                f"its place under {parent!r}")
        nodes.append(node)
        ranks[node.key] = message.get("rank")
        replies = message.get("replies") or []
        if not isinstance(replies, list):
            raise InvalidImport(f"message {node.key!r}: 'replies' must be a list")
        stack.extend((reply, node.key) for reply in reversed(replies))
    extras = {k: v for k, v in row.items() if k not in ("message_tree_id", "prompt")}
    return _draft(tree_id, prompt.get("text"), nodes, ranks, extras, label, progress)


_TREE_ID = re.compile(rb'"message_tree_id"\s*:\s*"([^"\\]+)"')


class _FlatTree:
    """Where the lines of one tree are in the file (offsets, not rows)."""

    def __init__(self, tree_id: str, first_line: int) -> None:
        self.tree_id, self.first, self.last = tree_id, first_line, first_line
        self.lines: list[tuple[int, int]] = []     # (line number, byte offset)
        self.broken: str | None = None
        # message id -> (line number, hash of the line): a row seen again (two exports
        # concatenated) is a duplicate when identical, a conflict when not.
        self.seen: dict[str, tuple[int, int]] = {}
        self.repeated = False

    def label(self) -> str:
        return f"tree {self.tree_id} (lines {self.first}-{self.last})"

    def draft(self, handle: Any) -> Item:
        label = self.label()
        broken = self.broken

        def parse() -> DraftConversation:
            if broken is not None:
                raise InvalidImport(broken)
            rows: list[Mapping[str, Any]] = []
            for number, offset in self.lines:
                row = json_line_at(handle, offset, number)
                if not isinstance(row, Mapping):
                    raise InvalidImport(f"line {number} changed while importing")
                rows.append(row)
            nodes = [_node(row, row.get("parent_id")) for row in rows]
            ranks = {n.key: row.get("rank") for n, row in zip(nodes, rows, strict=True)}
            root = next((row for row in rows if row.get("parent_id") is None), None)
            return _draft(self.tree_id, root.get("text") if root else None, nodes, ranks,
                          {}, label, self.last)
        return attempt(label, parse)


def read(path: str | os.PathLike[str]) -> Iterator[Item | Skip]:
    seen: set[str] = set()
    flat: dict[str, _FlatTree] = {}
    duplicates: set[str] = set()
    for number, offset, row, raw in json_line_offsets(path):
        if not isinstance(row, Mapping):
            # A broken line fails its whole tree when its tree id can still be read.
            found = _TREE_ID.search(raw)
            tree_id = found.group(1).decode("utf-8", "replace") if found else None
            if tree_id is not None and tree_id not in seen:
                broken_group = flat.setdefault(tree_id, _FlatTree(tree_id, number))
                broken_group.last = max(broken_group.last, number)
                reason = str(row) if isinstance(row, Exception) else "not a JSON object"
                broken_group.broken = (broken_group.broken
                                       or f"line {number} of this tree is broken: {reason}")
                continue
            yield attempt(f"line {number}", partial(_raise, row))
            continue
        tree_id = row.get("message_tree_id")
        if not isinstance(tree_id, str):
            yield attempt(f"line {number}", partial(_raise,
                InvalidImport("'message_tree_id' must be a string")))
            continue
        if "prompt" in row:
            if tree_id in seen or tree_id in flat:
                yield Skip(number)
                continue
            seen.add(tree_id)
            yield attempt(f"line {number} (tree {tree_id})",
                          partial(_tree_row, row, f"line {number}", number))
            continue
        if tree_id in seen:
            if tree_id not in duplicates:   # the tree came earlier as a tree row
                duplicates.add(tree_id)
                yield Skip(number)
            continue
        group = flat.get(tree_id)
        if group is None:
            group = flat[tree_id] = _FlatTree(tree_id, number)
        group.last = number
        message_id = row.get("message_id")
        if isinstance(message_id, str):
            fingerprint = hash(raw.strip())
            earlier = group.seen.get(message_id)
            if earlier is not None:
                if earlier[1] != fingerprint:
                    group.broken = group.broken or (
                        f"message {message_id!r} appears twice with different content "
                        f"(lines {earlier[0]} and {number})")
                elif not group.repeated:   # the same row again: count the copy once
                    group.repeated = True
                    yield Skip(number)
                continue
            group.seen[message_id] = (number, fingerprint)
        group.lines.append((number, offset))
    if flat:
        with open(path, "rb") as handle:
            for group in flat.values():
                yield group.draft(handle)


def _raise(error: Any) -> DraftConversation:
    if isinstance(error, Exception):
        raise error
    raise InvalidImport(f"a line must be a JSON object, not {type(error).__name__}")


def _message(node: Node, keys: Mapping[Any, str]) -> dict[str, Any]:
    if node.role not in EXPORT_ROLES:
        raise NotExportable(f"OASST has no {node.role!r} messages (node {node.id})",
                            node_id=node.id)
    extras = source_extras(node.metadata, FORMAT)
    return {
        "message_id": keys[node.id],
        "parent_id": keys[node.parent_id] if node.parent_id is not None else None,
        **extras,
        "created_date": iso(node.created_at),
        "text": node.content or "",
        "role": EXPORT_ROLES[node.role],
        "replies": [],
    }


def export(store: Store, conversation: ConversationRef) -> dict[str, Any]:
    """The tree shape (one JSON object per tree, as one line of a JSONL file)."""
    conv = store.get_conversation(conversation)
    tree = [node for node in store.tree(conv) if node.kind == "message"]
    roots = [node for node in tree if node.parent_id is None]
    if len(roots) != 1:
        raise NotExportable(f"an OASST tree has one prompt; conversation {conv.id} has "
                            f"{len(roots)} roots", conversation_id=conv.id)
    keys = {node.id: source_key(node.metadata, FORMAT, node.id) for node in tree}
    messages = {node.id: _message(node, keys) for node in tree}
    for node in tree:
        if node.parent_id is not None:
            messages[node.parent_id]["replies"].append(messages[node.id])
    extras = source_extras(conv.metadata, FORMAT)
    return {"message_tree_id": source_key(conv.metadata, FORMAT, conv.id),
            "tree_state": extras.pop("tree_state", None),
            "prompt": messages[roots[0].id], **extras}
