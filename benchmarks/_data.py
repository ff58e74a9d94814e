"""Benchmark data: real message texts (OASST2) laid out as chains and bushy trees.

Large trees are loaded in bulk (one transaction, batched multi-row inserts) with the
same column values ``Store.append`` would write: token counts from
``prepare_message``, depth and ``pinned_ancestor_id`` computed the same way.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import convotree
from convotree._ids import uuid7
from convotree._schema import conversations, nodes
from convotree._validate import PreparedMessage, prepare_message

#: The whole OASST2 sample when the shared data folder is beside the checkout, else the
#: 100-line selection that ships with the tests (tests/fixtures/real, Apache-2.0).
_SHARED_OASST = (Path(__file__).resolve().parents[2] / "shared" / "data" / "oasst2"
                 / "oasst2_filtered.jsonl")
_FIXTURE_OASST = (Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "real"
                  / "oasst2_sample.jsonl")
OASST = _SHARED_OASST if _SHARED_OASST.is_file() else _FIXTURE_OASST
BATCH = 2_000


def texts() -> list[str]:
    """Every message text of the OASST2 sample (real, multilingual messages)."""
    found: list[str] = []

    def walk(message: dict[str, Any]) -> None:
        found.append(message["text"])
        for reply in message.get("replies") or ():
            walk(reply)

    if OASST.is_file():
        for line in OASST.read_text(encoding="utf-8").splitlines():
            walk(json.loads(line)["prompt"])
    if not found:  # no shared data beside the checkout: synthetic but varied text
        rng = random.Random(7)
        words = ["plan", "trip", "city", "museum", "tram", "food", "coast", "castle",
                 "river", "day", "night"]
        found = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 200)))
                 for _ in range(1_500)]
    return sorted(set(found))


@dataclass
class Pool:
    """Prepared (validated and counted) messages to cycle through."""

    user: list[PreparedMessage]
    assistant: list[PreparedMessage]
    system: PreparedMessage

    @classmethod
    def build(cls) -> Pool:
        def prep(role: str, text: str) -> PreparedMessage:
            return prepare_message(
                kind="message", role=role, content=text, name=None, tool_calls=None,
                tool_call_id=None, model=None, encoding="o200k_base", input_tokens=None,
                output_tokens=None, pinned=False, metadata=None, created_at=None,
                max_message_bytes=1 << 30)

        all_texts = texts()
        return cls(
            user=[prep("user", t) for t in all_texts[::2]],
            assistant=[prep("assistant", t) for t in all_texts[1::2]],
            system=prep("system", "You are a helpful assistant. Answer in the user's language."),
        )

    def mean_tokens(self) -> float:
        every = self.user + self.assistant
        return sum(m.token_count + m.overhead_tokens for m in every) / len(every)


def _row(conversation_id: uuid.UUID, message: PreparedMessage, parent: dict[str, Any] | None,
         now: datetime) -> dict[str, Any]:
    if parent is None:
        depth, anchor = 0, None
    else:
        depth = parent["depth"] + 1
        kept = parent["pinned"] or parent["role"] in ("system", "developer")
        anchor = parent["id"] if kept else parent["pinned_ancestor_id"]
    return {
        "conversation_id": conversation_id, "id": uuid7(),
        "parent_id": parent["id"] if parent else None, "depth": depth, "kind": "message",
        "role": message.role, "content": message.content, "parts": None, "media": None,
        "name": None, "tool_calls": None, "tool_call_id": None, "model": None,
        "token_count": message.token_count, "overhead_tokens": message.overhead_tokens,
        "encoding": message.encoding, "input_tokens": None, "output_tokens": None,
        "pinned": False, "pinned_ancestor_id": anchor, "metadata": None, "created_at": now,
    }


def load_tree(store: convotree.Store, pool: Pool, *, spine: int, side_branches: int = 0,
              seed: int = 1) -> tuple[convotree.Node, int]:
    """A system root, then a chain of ``spine`` messages; each spine node also gets
    ``side_branches`` short side branches (1-3 messages). Returns the spine's leaf node
    and the total number of nodes."""
    rng = random.Random(seed)
    conv = store.create_conversation(title=f"bench spine={spine} side={side_branches}")
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    parent = _row(conv.id, pool.system, None, now)
    rows.append(parent)
    for index in range(spine):
        role_pool = pool.user if index % 2 == 0 else pool.assistant
        node = _row(conv.id, role_pool[rng.randrange(len(role_pool))], parent, now)
        rows.append(node)
        for _ in range(side_branches):
            side = parent
            for step in range(rng.randint(1, 3)):
                side_pool = pool.assistant if (index + step) % 2 == 0 else pool.user
                side = _row(conv.id, side_pool[rng.randrange(len(side_pool))], side, now)
                rows.append(side)
        parent = node
    with store.engine.begin() as conn:
        for start in range(0, len(rows), BATCH):
            conn.execute(nodes.insert(), rows[start:start + BATCH])
        conn.execute(conversations.update().where(conversations.c.id == conv.id)
                     .values(current_node_id=parent["id"]))
    return store.node(conv, parent["id"]), len(rows)
