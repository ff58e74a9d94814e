"""Import throughput with ``convotree.interchange.import_file`` (validation, tokens
counted once, conversations written in batches): the real OASST2 file (small trees),
a generated OASST flat-row JSONL of 50-message branching trees and a generated
100,000-message ChatGPT export (``conversations.json``: 100-message conversations with
a regenerated answer every 10 turns), from the real OASST2 texts, written to a
temporary directory at run time. Each file goes into a fresh tenant; the tokenizer is
loaded before the clock starts (a process pays that once, about 0.4 s).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import convotree
from convotree.interchange import import_file

#: Messages per generated tree: a prompt and branching replies, like real OASST trees.
TREE_SIZE = 50


def write_file(path: Path, texts: list[str], messages: int, seed: int = 3) -> int:
    """OASST flat rows: ``messages`` rows in trees of ``TREE_SIZE`` with random branching."""
    rng = random.Random(seed)
    written = 0
    with path.open("w") as out:
        tree = 0
        while written < messages:
            tree_id = f"tree-{tree}"
            ids: list[str] = []
            for index in range(min(TREE_SIZE, messages - written)):
                message_id = f"{tree_id}-{index}"
                parent = None if index == 0 else ids[max(0, len(ids) - rng.randint(1, 3))]
                role = "prompter" if index == 0 or rng.random() < 0.5 else "assistant"
                out.write(json.dumps({
                    "message_id": message_id, "parent_id": parent, "message_tree_id": tree_id,
                    "text": texts[rng.randrange(len(texts))], "role": role, "lang": "en",
                    "created_date": "2023-02-01T00:00:00+00:00", "deleted": False,
                    "rank": None}) + "\n")
                ids.append(message_id)
                written += 1
            tree += 1
    return written


def write_chatgpt(path: Path, texts: list[str], messages: int, per_conversation: int = 100,
                  seed: int = 5) -> int:
    """A ChatGPT ``conversations.json`` of ``messages`` messages: conversations of
    ``per_conversation``, alternating user and assistant, and every tenth answer
    regenerated (a sibling branch), the current node at the end of the main line."""
    rng = random.Random(seed)
    conversations: list[dict[str, Any]] = []
    written = 0

    def entry(node: str, parent: str | None, role: str, index: int) -> dict[str, Any]:
        return {"id": node, "parent": parent, "children": [], "message": {
            "id": node, "author": {"role": role}, "create_time": 1_700_000_000 + index,
            "content": {"content_type": "text",
                        "parts": [texts[rng.randrange(len(texts))]]}}}

    while written < messages:
        key = f"c{len(conversations)}"
        mapping: dict[str, dict[str, Any]] = {}
        parent: str | None = None
        for index in range(min(per_conversation, messages - written)):
            node = f"{key}-{index}"
            role = "user" if index % 2 == 0 else "assistant"
            mapping[node] = entry(node, parent, role, index)
            if parent is not None:
                mapping[parent]["children"].append(node)
                if role == "assistant" and index % 10 == 9:   # a regenerated answer
                    mapping[f"{node}-r"] = entry(f"{node}-r", parent, role, index)
                    mapping[parent]["children"].append(f"{node}-r")
            parent = node
        written += len(mapping)
        conversations.append({"id": key, "title": f"conversation {key}",
                              "create_time": 1_700_000_000, "mapping": mapping,
                              "current_node": parent})
    path.write_text(json.dumps(conversations))
    return written


def measure(url: str, path: Path, fmt: str = "oasst") -> tuple[int, float]:
    """(messages imported, messages per second) into the database at ``url``."""
    from convotree import tokens

    tokens.count_text("warm up", "o200k_base")   # the encoding loads once per process
    with convotree.Store(url, tenant=f"bench-{time.time_ns()}") as store:
        started = time.perf_counter()
        result = import_file(store, path, fmt)
        elapsed = time.perf_counter() - started
    assert result.failed == 0, result.failures[:3]
    return result.nodes, result.nodes / elapsed
