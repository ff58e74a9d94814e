"""``convotree demo``: a branching conversation to look at, with no setup and no network.

It goes into the default database (the one every other command uses when given no
``--url``), so the commands it prints at the end work as printed. Running it again
replaces the demo conversation (and the summary it made) and touches nothing else.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from ..demo import DEMO_BUDGET, DEMO_MODEL
from ._common import Subparsers, console, default_db_path, display_url, open_store, resolve_url

if TYPE_CHECKING:
    from rich.rule import Rule

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="import a sample branching conversation and show what convotree does",
        description="Import a bundled ChatGPT export (a trip plan with a regenerated answer "
                    "and an edited prompt) into a SQLite database, draw its tree, and "
                    f"assemble two branches within {DEMO_BUDGET} tokens, where a summary "
                    "made for the first branch is reused by the second. Offline. Run it "
                    "again to start over: it replaces only the demo conversation.")
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--db", type=Path, metavar="PATH",
        help=f"SQLite file to use (default: {default_db_path()}, the database the other "
             "commands use by default; $XDG_DATA_HOME is honoured)")
    target.add_argument("--url", help="any database URL instead (e.g. PostgreSQL)")
    parser.set_defaults(handler=run, tenant="")


def _heading(out_text: str) -> Rule:
    from rich.rule import Rule
    from rich.text import Text

    return Rule(Text(out_text, style="bold"), align="left", style="dim")


def run(args: argparse.Namespace) -> int:
    from rich.table import Table
    from rich.text import Text

    from ..demo import demo_contexts, load_demo
    from ..errors import NodeNotFound
    from ._render import TREE_HEADER, tree_lines
    from ._resolve import short
    from .context import print_context

    if args.db is not None:
        args.url = f"sqlite:///{args.db.expanduser().resolve()}"
    elif not args.url:
        args.url = f"sqlite:///{default_db_path()}"
    out = console()
    with open_store(args, create=True) as store:
        demo = load_demo(store)
        conversation = store.get_conversation(demo.conversation_id)
        tree = store.tree(conversation.id)
        contexts = demo_contexts(store, demo.leaves)
        summary_id = contexts[-1].report.summary_id
        try:
            summary = store.node(conversation.id, summary_id) if summary_id else None
        except NodeNotFound:
            summary = None  # another demo run replaced the conversation meanwhile
    url = store.engine.url
    where = (f"{url.database} (SQLite)" if url.get_backend_name() == "sqlite"
             else display_url(args.url))
    out.print(Text.assemble(("Database: ", "bold"), where), soft_wrap=True)
    out.print(f"Imported the bundled ChatGPT export: \"{conversation.title}\", "
              f"{demo.nodes} messages" + (" (replacing the previous demo run's copy)"
                                           if demo.replaced else ""))
    out.print()
    out.print(_heading(f"The tree (convotree show {short(conversation.id)} --tree)"))
    out.print(Text(TREE_HEADER, style="dim"))
    for line in tree_lines(tree, conversation.current_node_id, out.width):
        out.print(line)
    for leaf, ctx in zip(demo.leaves, contexts, strict=True):
        out.print()
        made = "made now" if ctx.report.summary_created else "reused"
        out.print(_heading(f"Context for {short(leaf.id)} within {DEMO_BUDGET} tokens: "
                           f"summary {made}"))
        print_context(out, ctx)
    if summary is not None:
        out.print()
        out.print(Text(
            f"The summary is node {short(summary.id)}, stored under {short(summary.parent_id)}, "
            "the last message it covers, which both branches pass through: made once, "
            "reused by every later turn below it. It is in the tree now (show --tree)."))
    out.print()
    out.print(_heading("Explore"))
    conv = short(conversation.id)
    if resolve_url(argparse.Namespace(url=None)) != args.url:
        # Not the default database: say how to point the commands at it once (with the
        # password masked: the user knows it, the terminal's scrollback need not).
        out.print(Text(f"  export CONVOTREE_URL={shlex.quote(display_url(args.url))}",
                       style="bold"), soft_wrap=True)
    commands = Table(box=None, show_header=False, pad_edge=False)
    commands.add_column(style="dim", no_wrap=True)
    commands.add_column(style="bold", no_wrap=True)
    for why, command in (
        ("conversations", "convotree ls"),
        ("current branch", f"convotree show {conv}"),
        ("every branch", f"convotree show {conv} --tree"),
        ("one branch", f"convotree path {conv} {short(demo.leaves[0].id)}"),
        ("a context", f"convotree context {conv} -m {DEMO_MODEL} -b 120"),
        ("totals", "convotree report"),
        ("all commands", "convotree --help"),
    ):
        commands.add_row("  " + why, command)
    out.print(commands)
    return 0
