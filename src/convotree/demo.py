"""The offline demo's data and steps; ``convotree demo`` prints them.

The demo imports a bundled ChatGPT export (``data/demo_conversation.json``: a trip
plan with a regenerated answer and an edited prompt, so three branches) through
``convotree.interchange``, then assembles the context of two branches under a small
budget with the offline ``ExtractiveSummarizer``: the first makes a summary of the
shared beginning, the second reuses it. No network, no API key.

``python -m convotree.demo [PATH]`` runs ``convotree demo --db PATH`` (default
``./convotree-demo.db``), which is what ``make demo`` calls.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import Context
    from .models import Node
    from .store import Store

__all__ = ["DEMO_BUDGET", "DEMO_MODEL", "Demo", "demo_contexts", "demo_data", "load_demo"]

DEMO_FORMAT = "chatgpt"
DEMO_MODEL = "gpt-4o-mini"
#: Small enough that the demo chat outgrows it and gets a summary.
DEMO_BUDGET = 160
#: Summarize almost everything that does not fit (keep_recent), in at most 60 tokens:
#: the summary then covers the beginning both branches share, so the second branch
#: reuses it.
DEMO_KEEP_RECENT = 0.9
DEMO_SUMMARY_TOKENS = 60
DEFAULT_PATH = Path("convotree-demo.db")


@dataclass(frozen=True, slots=True)
class Demo:
    """The imported demo conversation and the two branches the demo assembles."""

    conversation_id: uuid.UUID
    nodes: int
    replaced: bool
    leaves: tuple[Node, Node]


def demo_data() -> list[dict[str, Any]]:
    """The bundled export, with its clock moved so that its last message is now (the
    report's by-day table then shows it)."""
    raw = (resources.files("convotree") / "data" / "demo_conversation.json").read_text("utf-8")
    data: list[dict[str, Any]] = json.loads(raw)
    shift = time.time() - max(conv["update_time"] for conv in data)
    for conv in data:
        conv["create_time"] += shift
        conv["update_time"] += shift
        for entry in conv["mapping"].values():
            if entry["message"] is not None:
                entry["message"]["create_time"] += shift
    return data


def load_demo(store: Store) -> Demo:
    """Import the demo conversation, replacing the one a previous run imported (with
    the summaries that run made), so every run shows the same thing.

    The replacement is one transaction (the import's ``replace=True``) and the demo's
    ids are derived from the bundled file, so two demos running at once both work:
    each sees the whole conversation, under the same ids, at every moment.
    """
    from .errors import ConvotreeError
    from .interchange import import_file

    data = demo_data()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "conversations.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        result = import_file(store, path, DEMO_FORMAT, replace=True)
    if result.failures or not result.conversation_ids:
        reasons = "; ".join(f"{f.source}: {f.reason}" for f in result.failures)
        raise ConvotreeError("the bundled demo conversation did not import: "
                             f"{reasons or 'nothing was imported'}")
    replaced = result.replaced > 0
    conversation_id = result.conversation_ids[0]
    # The two deepest branches (three days / five days) share everything up to the
    # prompt that was edited: the summary made for one serves the other.
    leaves = sorted(store.leaves(conversation_id), key=lambda n: (-n.depth, n.created_at))
    return Demo(conversation_id, result.nodes, replaced, (leaves[0], leaves[1]))


def demo_contexts(store: Store, leaves: Sequence[Node]) -> list[Context]:
    """The context of each leaf under the demo budget, with one shared summarizer."""
    from .summaries import ExtractiveSummarizer, SummaryOptions

    summarizer = ExtractiveSummarizer()
    options = SummaryOptions(keep_recent=DEMO_KEEP_RECENT,
                             max_summary_tokens=DEMO_SUMMARY_TOKENS)
    return [store.context(leaf, model=DEMO_MODEL, budget=DEMO_BUDGET, summarizer=summarizer,
                          summary_options=options) for leaf in leaves]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m convotree.demo [PATH]``: the CLI's demo on a file in this folder."""
    from .cli import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    path = args[0] if args and not args[0].startswith("-") else str(DEFAULT_PATH)
    return cli_main(["demo", "--db", path])


if __name__ == "__main__":
    sys.exit(main())
