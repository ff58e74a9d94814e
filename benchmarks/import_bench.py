"""Import throughput: a generated OASST flat-row JSONL of branching trees, imported with
``convotree.interchange.import_file`` (validation, tokenizing once, one transaction
and batched inserts per tree). The file is written to a temporary directory at run
time from the real OASST2 texts.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

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


def measure(url: str, path: Path) -> tuple[int, float]:
    """(messages imported, messages per second) into the database at ``url``."""
    with convotree.Store(url, tenant=f"bench-{time.time_ns()}") as store:
        started = time.perf_counter()
        result = import_file(store, path, "oasst")
        elapsed = time.perf_counter() - started
    assert result.failed == 0, result.failures[:3]
    return result.nodes, result.nodes / elapsed
