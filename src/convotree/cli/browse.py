"""``convotree ls``, ``show`` and ``path``: looking at stored conversations."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING, Any

from ._common import (
    Subparsers,
    add_db_options,
    console,
    open_store,
    print_json,
    whole_number,
)

if TYPE_CHECKING:
    from ..models import Node

__all__ = ["register"]

_IDS = ("ids: a full id, or any unique part of one, at least 4 hex digits (ls and show "
        "print the last 8)")


def register(subparsers: Subparsers) -> None:
    ls = subparsers.add_parser(
        "ls", help="list conversations, newest activity first",
        description="List conversations, newest activity first, with their number of "
                    "messages, branches (leaves), summaries and content tokens.")
    ls.add_argument("-n", "--limit", type=whole_number(1), default=50, metavar="N",
                    help="show at most N conversations (default: 50)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_db_options(ls)
    ls.set_defaults(handler=run_ls)

    show = subparsers.add_parser(
        "show", help="show a conversation: its current branch, or the whole tree",
        description="Show a conversation's current branch as a transcript, or with --tree "
                    "every branch: short id, tokens, role and text per message.",
        epilog=_IDS)
    show.add_argument("conversation", metavar="CONVERSATION")
    show.add_argument("--tree", action="store_true", help="draw every branch")
    show.add_argument("--json", action="store_true",
                      help="print the nodes (the tree with --tree, else the branch) as JSON")
    add_db_options(show)
    show.set_defaults(handler=run_show)

    path = subparsers.add_parser(
        "path", help="the branch ending at a node, root first",
        description="Print the branch (root first) that ends at NODE, or at the "
                    "conversation's current node.", epilog=_IDS)
    path.add_argument("conversation", metavar="CONVERSATION")
    path.add_argument("node", metavar="NODE", nargs="?",
                      help="the last node of the branch (default: the current node)")
    path.add_argument("--json", action="store_true", help="print the nodes as JSON")
    add_db_options(path)
    path.set_defaults(handler=run_path)


def node_json(node: Node) -> dict[str, Any]:
    """A node as JSON: every field, ids as strings."""
    return {key: (str(value) if key.endswith("id") and value is not None else value)
            for key, value in dataclasses.asdict(node).items()}


def run_ls(args: argparse.Namespace) -> int:
    from .. import reporting
    from ._render import conversation_table

    with open_store(args) as store:
        rows = reporting.conversation_stats(store, limit=args.limit)
    if args.json:
        print_json([dataclasses.asdict(row) for row in rows])
        return 0
    out = console()
    if not rows:
        out.print("No conversations. `convotree demo` makes one; `convotree import` "
                  "brings yours.")
        return 0
    out.print(conversation_table(rows, out.width))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from rich.text import Text

    from ._render import TREE_HEADER, transcript, tree_lines, when
    from ._resolve import resolve_conversation

    with open_store(args) as store:
        conversation = store.get_conversation(resolve_conversation(store, args.conversation))
        current = store.current(conversation.id)
        nodes = (store.tree(conversation.id) if args.tree
                 else store.path(current) if current else [])
    if args.json:
        print_json([node_json(node) for node in nodes])
        return 0
    out = console()
    out.print(Text(conversation.title or "(untitled)", style="bold"), no_wrap=True,
              overflow="ellipsis")
    out.print(Text(f"{conversation.id} · updated {when(conversation.updated_at)} UTC",
                   style="dim"), no_wrap=True, overflow="ellipsis")
    if not nodes:
        out.print("(no messages)")
        return 0
    if args.tree:
        leaves = sum(1 for n in nodes if n.kind == "message") - len(
            {n.parent_id for n in nodes if n.kind == "message" and n.parent_id})
        out.print(Text(f"{len(nodes)} nodes, {leaves} branches", style="dim"))
        out.print()
        out.print(Text(TREE_HEADER, style="dim"), no_wrap=True, overflow="ellipsis")
        for line in tree_lines(nodes, conversation.current_node_id, out.width):
            out.print(line)
    else:
        out.print(Text(f"current branch, {len(nodes)} messages:", style="dim"))
        out.print()
        transcript(out, nodes, conversation.current_node_id)
    return 0


def run_path(args: argparse.Namespace) -> int:
    from ._render import transcript
    from ._resolve import resolve_conversation, resolve_node

    with open_store(args) as store:
        conversation_id = resolve_conversation(store, args.conversation)
        leaf = resolve_node(store, conversation_id, args.node)
        nodes = store.path(leaf)
    if args.json:
        print_json([node_json(node) for node in nodes])
        return 0
    transcript(console(), nodes)
    return 0
