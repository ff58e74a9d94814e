"""``convotree report``: headline numbers for a tenant, computed by the database
(see :mod:`convotree.reporting`, usable from Python too)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from ._common import (
    Subparsers,
    add_db_options,
    console,
    open_store,
    print_json,
    whole_number,
)

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="totals, tokens by model and by day",
        description="Conversations, messages, summaries, branches (leaves) and tokens: "
                    "stored content tokens (counted at insert) and the input/output tokens "
                    "the API reported, in total, by model, and by UTC day. Every number is "
                    "one SQL aggregate; nothing is loaded into Python.")
    parser.add_argument("--days", type=whole_number(1, 3660), default=7, metavar="N",
                        help="the by-day table covers the last N UTC days (default: 7)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_db_options(parser)
    parser.set_defaults(handler=run)


def _table(title: str, first: str) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold", box=None,
                  header_style="bold", pad_edge=False)
    table.add_column(first, overflow="fold")
    for name in ("nodes", "tokens", "API in", "API out"):
        table.add_column(name, justify="right")
    return table


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .. import reporting

    with open_store(args) as store:
        totals = reporting.totals(store)
        models = reporting.by_model(store)
        days = reporting.by_day(store, days=args.days)
    if args.json:
        print_json({
            "tenant": args.tenant,
            "totals": dataclasses.asdict(totals),
            "by_model": [dataclasses.asdict(m) for m in models],
            "by_day": [{**dataclasses.asdict(d), "day": d.day.isoformat()} for d in days],
        })
        return 0
    out = console()
    summary = Table(box=None, show_header=False, pad_edge=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    for label, value in (
        ("conversations", totals.conversations), ("messages", totals.messages),
        ("branches (leaves)", totals.branches), ("summaries", totals.summaries),
        ("content tokens, messages", totals.tokens),
        ("content tokens, summaries", totals.summary_tokens),
        ("API input tokens", totals.input_tokens),
        ("API output tokens", totals.output_tokens),
    ):
        summary.add_row(label, f"{value:,}")
    out.print(summary)
    out.print()
    by_model = _table("By model (nodes: messages and summaries; tokens: their content "
                      "tokens; API in/out: usage)", "model")
    for m in models:
        by_model.add_row(m.model or "(none: user, system, tool)", f"{m.messages:,}",
                         f"{m.tokens:,}", f"{m.input_tokens:,}", f"{m.output_tokens:,}")
    out.print(by_model)
    out.print()
    by_day = _table(f"By day, last {args.days} UTC days (same columns)", "day")
    for d in days:
        by_day.add_row(d.day.isoformat(), f"{d.messages:,}", f"{d.tokens:,}",
                       f"{d.input_tokens:,}", f"{d.output_tokens:,}")
    if not days:
        by_day.add_row("(nothing stored)", "", "", "", "")
    out.print(by_day)
    return 0
