"""What the reporting views should say, computed in Python from the raw tables.

Why: the views (migration 0006) are SQL written twice, once per backend; these functions
are a third, independent statement of the same definitions, in plain Python over every
row, so a test can compare each view (and each cookbook answer) with them. Nothing here
shares code with the migration.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from convotree._schema import conversations, nodes

Key = tuple[uuid.UUID, uuid.UUID | None]   # (conversation, parent)


@dataclass
class World:
    """Every conversation and node, with the tree relations the views talk about."""

    conversations: dict[uuid.UUID, dict[str, Any]]
    nodes: dict[tuple[uuid.UUID, uuid.UUID], dict[str, Any]]

    @classmethod
    def read(cls, conn: sa.Connection, conversation_id: uuid.UUID | None = None) -> World:
        """Every row, or those of one conversation."""
        convs_query, nodes_query = sa.select(conversations), sa.select(nodes)
        if conversation_id is not None:
            convs_query = convs_query.where(conversations.c.id == conversation_id)
            nodes_query = nodes_query.where(nodes.c.conversation_id == conversation_id)
        convs = {r.id: dict(r._mapping) for r in conn.execute(convs_query)}
        rows = {(r.conversation_id, r.id): dict(r._mapping) for r in conn.execute(nodes_query)}
        return cls(convs, rows)

    # --- relations --------------------------------------------------------------------

    def message_children(self) -> dict[Key, list[dict[str, Any]]]:
        found: dict[Key, list[dict[str, Any]]] = defaultdict(list)
        for n in self.nodes.values():
            if n["kind"] == "message":
                found[(n["conversation_id"], n["parent_id"])].append(n)
        return found

    def current_path(self, conversation_id: uuid.UUID) -> list[dict[str, Any]]:
        """Root first: the current node and its ancestors."""
        node_id = self.conversations[conversation_id]["current_node_id"]
        path = []
        while node_id is not None:
            n = self.nodes[(conversation_id, node_id)]
            path.append(n)
            node_id = n["parent_id"]
        return path[::-1]

    def path_to(self, n: dict[str, Any]) -> list[dict[str, Any]]:
        path = [n]
        while path[-1]["parent_id"] is not None:
            path.append(self.nodes[(n["conversation_id"], path[-1]["parent_id"])])
        return path[::-1]

    def tenant(self, n: dict[str, Any]) -> str:
        return str(self.conversations[n["conversation_id"]]["tenant_id"])

    # --- the views --------------------------------------------------------------------

    def messages(self) -> dict[tuple[uuid.UUID, uuid.UUID], dict[str, Any]]:
        children = self.message_children()
        on_branch = {(n["conversation_id"], n["id"]) for c in self.conversations
                     for n in self.current_path(c)}
        out = {}
        for key, n in self.nodes.items():
            message = n["kind"] == "message"
            group = children[(n["conversation_id"], n["parent_id"])]

            def earlier(role: str, n: dict[str, Any] = n, group: list[Any] = group,
                        message: bool = message) -> bool:
                return message and n["role"] == role and any(
                    s["role"] == role and (s["created_at"], s["id"].bytes)
                    < (n["created_at"], n["id"].bytes) for s in group)

            out[key] = {
                "tenant_id": self.tenant(n),
                "conversation_title": self.conversations[n["conversation_id"]]["title"],
                "content_tokens": n["token_count"],
                "tokens": n["token_count"] + n["overhead_tokens"],
                "is_leaf": message and not children[(n["conversation_id"], n["id"])],
                "on_current_branch": key in on_branch,
                "siblings": len(group) - 1 if message else None,
                "is_regeneration": earlier("assistant"),
                "is_edit": earlier("user"),
            }
        return out

    def stats(self) -> dict[uuid.UUID, dict[str, Any]]:
        children = self.message_children()
        out = {}
        for cid, c in self.conversations.items():
            mine = [n for n in self.nodes.values() if n["conversation_id"] == cid]
            msgs = [n for n in mine if n["kind"] == "message"]
            summaries = [n for n in mine if n["kind"] == "summary"]
            groups = [g for (conv, _), g in children.items() if conv == cid]
            parented = [g for (conv, parent), g in children.items()
                        if conv == cid and parent is not None]
            out[cid] = {
                "tenant_id": c["tenant_id"], "title": c["title"],
                "current_node_id": c["current_node_id"],
                "messages": len(msgs), "summaries": len(summaries),
                "branches": sum(not children[(cid, n["id"])] for n in msgs),
                "branch_points": sum(len(g) > 1 for g in parented),
                "regenerations": sum(max(sum(s["role"] == "assistant" for s in g) - 1, 0)
                                     for g in groups),
                "edits": sum(max(sum(s["role"] == "user" for s in g) - 1, 0) for g in groups),
                "max_depth": max((n["depth"] for n in msgs), default=None),
                "content_tokens": sum(n["token_count"] for n in msgs),
                "summary_tokens": sum(n["token_count"] for n in summaries),
                **{f: sum(n[f] or 0 for n in mine) for f in (
                    "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")},
                "first_activity": min((n["created_at"] for n in mine), default=c["created_at"]),
                "last_activity": max((n["created_at"] for n in mine), default=c["created_at"]),
            }
        return out

    def usage_daily(self) -> dict[tuple[date, str, str | None], dict[str, int]]:
        out: dict[tuple[date, str, str | None], dict[str, int]] = defaultdict(
            lambda: defaultdict(int))
        for n in self.nodes.values():
            row = out[(utc_day(n["created_at"]), self.tenant(n), n["model"])]
            message = n["kind"] == "message"
            row["messages"] += message
            row["answers"] += message and n["role"] == "assistant"
            row["summaries"] += n["kind"] == "summary"
            row["content_tokens"] += n["token_count"]
            for f in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
                row[f] += n[f] or 0
            if n["input_tokens"] is not None and n["counted_input_tokens"] is not None:
                row["compared_answers"] += 1
                row["counted_input_tokens"] += n["counted_input_tokens"]
                row["counting_error"] += n["input_tokens"] - n["counted_input_tokens"]
            else:
                row["compared_answers"] += 0
                row["counted_input_tokens"] += 0
                row["counting_error"] += 0
        return {k: dict(v) for k, v in out.items()}

    def branch_points(self) -> dict[tuple[uuid.UUID, uuid.UUID], dict[str, Any]]:
        out = {}
        for (cid, parent), group in self.message_children().items():
            if parent is None or len(group) < 2:
                continue
            p = self.nodes[(cid, parent)]
            answers = sum(s["role"] == "assistant" for s in group)
            prompts = sum(s["role"] == "user" for s in group)
            out[(cid, parent)] = {
                "tenant_id": self.tenant(p), "depth": p["depth"], "role": p["role"],
                "model": p["model"], "children": len(group),
                "regenerations": max(answers - 1, 0), "edits": max(prompts - 1, 0),
                "first_child_at": min(s["created_at"] for s in group),
                "last_child_at": max(s["created_at"] for s in group)}
        return out


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def by_conversation(rows: Iterable[dict[str, Any]]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    found: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        found[row["conversation_id"]].append(row)
    return found
