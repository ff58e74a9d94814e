"""The offline demo: a branching conversation in a SQLite file, its tree and its branches.

Run it with ``python -m convotree.demo [PATH]`` (``make demo`` does). It needs no
network and no API key: the messages are written by the script itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .models import Node
from .store import Store
from .summaries import ExtractiveSummarizer, SummaryOptions

DEFAULT_PATH = Path("convotree-demo.db")
#: Small enough that the demo chat outgrows it and gets a summary.
DEMO_BUDGET = 160


def draw_tree(nodes: Sequence[Node], current: object = None, width: int = 60) -> list[str]:
    """Render a conversation tree as indented lines (parents before children)."""
    by_parent: dict[object, list[Node]] = {}
    for node in nodes:
        by_parent.setdefault(node.parent_id, []).append(node)
    lines: list[str] = []

    def walk(node: Node, prefix: str, last: bool) -> None:
        text = (node.content or "").replace("\n", " ")
        if len(text) > width:
            text = text[: width - 1] + "…"
        marker = "  <- current" if node.id == current else ""
        branch = "└─ " if last else "├─ "
        lines.append(f"{prefix}{branch}{node.role:<9} {node.token_count:>3} tok  {text}{marker}")
        children = by_parent.get(node.id, [])
        for index, child in enumerate(children):
            walk(child, prefix + ("   " if last else "│  "), index == len(children) - 1)

    roots = by_parent.get(None, [])
    for index, root in enumerate(roots):
        walk(root, "", index == len(roots) - 1)
    return lines


def build_demo(store: Store) -> dict[str, Node]:
    """A trip-planning chat: a shared beginning, a regenerated answer, an edited prompt."""
    conv = store.create_conversation(title="Lisbon trip", metadata={"demo": True})
    node = store.append(conv, role="system", content="You are a concise travel planner.")
    shared = [
        ("user", "Plan a trip to Lisbon for two in May. We love food and old town walks."),
        ("assistant", "Great choice. May is warm and not yet crowded. What is your budget?"),
        ("user", "About 1,500 euros each, flights from Berlin included."),
        ("assistant", "That works: flights about 200 euros, a guesthouse in Alfama about "
                      "90 euros a night. Do you prefer trams or walking?"),
        ("user", "Walking, but tram 28 once for fun. No museums, please."),
    ]
    for role, content in shared:
        node = store.append(conv, parent=node, role=role, content=content,
                            model="gpt-4o-mini" if role == "assistant" else None)
    first = store.append(
        conv, parent=node, role="assistant", model="gpt-4o-mini",
        content="Day 1: Alfama and the castle. Day 2: Belém. How many days do you have?",
    )
    store.edit(first, "Start in Baixa, ride tram 28, end at a fado bar. How long is the trip?")
    three = store.append(conv, parent=first, role="user", content="Make it three days.")
    answer3 = store.append(
        conv, parent=three, role="assistant", model="gpt-4o-mini",
        content="Day 1: Alfama. Day 2: Belém. Day 3: a day trip to Sintra.",
    )
    five = store.edit(three, "Make it five days.")
    answer5 = store.append(
        conv, parent=five, role="assistant", model="gpt-4o-mini",
        content="Days 1-3 as before, then Cascais by the sea and a food tour in Mouraria.",
    )
    return {"three": answer3, "five": answer5}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convotree.demo", description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH,
                        help=f"SQLite file to create (default: ./{DEFAULT_PATH})")
    args = parser.parse_args(argv)
    path: Path = args.path.resolve()
    path.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    with Store(url, create=True) as store:
        leaves = build_demo(store)
        conv_id = leaves["five"].conversation_id
        print(f"Database: {path}")
        print(f"Conversation {conv_id} (current branch marked):\n")
        current = store.get_conversation(conv_id).current_node_id
        for line in draw_tree(store.tree(conv_id), current):
            print("  " + line)
        for label, leaf in leaves.items():
            print(f"\nBranch ending at the '{label} days' answer ({leaf.id}):")
            for node in store.path(leaf):
                print(f"  [{node.depth}] {node.role:<9} {node.content}")
        summarizer = ExtractiveSummarizer()
        options = SummaryOptions(keep_recent=0.9, max_summary_tokens=60)
        for label, leaf in leaves.items():
            ctx = store.context(leaf, model="gpt-4o-mini", budget=DEMO_BUDGET,
                                summarizer=summarizer, summary_options=options)
            report = ctx.report
            made = ("made now" if report.summary_created
                    else "reused" if report.summary_id else "none")
            print(f"\nContext for the '{label} days' branch, {DEMO_BUDGET}-token budget: "
                  f"{ctx.tokens} tokens, {len(ctx.messages)} messages; summary: {made}; "
                  f"summarizer calls: {report.summarizer_calls}")
            for message in ctx.messages:
                text = str(message["content"]).replace("\n", " | ")
                print(f"  {message['role']:<9} {text}")
        print(f"\nExplore it with SQL: sqlite3 {path} "
              "'SELECT depth, kind, role, content FROM convotree_nodes ORDER BY depth'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
