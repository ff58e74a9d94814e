"""``convotree context``: what would be sent to the model for a branch, and why."""

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
    from rich.console import Console

    from ..context import Context, DepthRange

__all__ = ["context_json", "print_context", "register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "context", help="the messages that would be sent for a branch, within a budget",
        description="Assemble the context for the branch ending at NODE (default: the "
                    "conversation's current node), as Store.context() does: system, "
                    "developer and pinned messages, the deepest summary, then the newest "
                    "messages that fit. Prints the messages and the report.",
        epilog="ids: a full id, or any unique part of one (4+ hex digits). --summarize writes a "
               "summary node (offline extractive summarizer) when the branch outgrows "
               "the budget; later contexts reuse it.")
    parser.add_argument("conversation", metavar="CONVERSATION")
    parser.add_argument("node", metavar="NODE", nargs="?",
                        help="the last node of the branch (default: the current node)")
    parser.add_argument("--model", "-m", required=True, help="target model, e.g. gpt-4o-mini")
    parser.add_argument("--budget", "-b", type=whole_number(1), metavar="N",
                        help="prompt token budget (default: the model's window minus "
                             "--reserve-output)")
    parser.add_argument("--reserve-output", type=whole_number(0), default=0, metavar="N",
                        help="tokens kept free for the answer when the budget comes from "
                             "the model's window")
    parser.add_argument("--format", choices=("chat", "responses"), default="chat",
                        help="Chat Completions messages or Responses input items")
    parser.add_argument("--summarize", action="store_true",
                        help="make (and store) a summary if the branch does not fit")
    parser.add_argument("--json", action="store_true",
                        help="print {messages, tokens, budget, report} as JSON")
    add_db_options(parser)
    parser.set_defaults(handler=run)


def _ranges(ranges: tuple[DepthRange, ...]) -> str:
    return ", ".join(str(r.first) if r.first == r.last else f"{r.first}-{r.last}"
                     for r in ranges) or "none"


def _gap(ctx: Context) -> str:
    """The gap: dropped messages that no sent summary stands for either."""
    report = ctx.report
    if not report.gap:
        return "none: every dropped message is in the summary"
    where = _ranges(report.gap)
    if report.summary_id is None:
        return f"{where} (no summary; --summarize folds them into one)"
    return f"{where} (after the summary; --summarize extends it)"


def context_json(ctx: Context) -> dict[str, Any]:
    """The context as JSON: messages ready for the API, plus the report."""
    report = dataclasses.asdict(ctx.report)
    report["kept"] = [[r.first, r.last] for r in ctx.report.kept]
    report["dropped"] = [[r.first, r.last] for r in ctx.report.dropped]
    report["gap"] = [[r.first, r.last] for r in ctx.report.gap]
    return {"model": ctx.model, "format": ctx.format, "budget": ctx.budget,
            "tokens": ctx.tokens, "messages": ctx.messages,
            "node_ids": [str(i) for i in ctx.node_ids], "report": report}


def summary_state(ctx: Context) -> str:
    from ._resolve import short

    report = ctx.report
    if report.summary_error:
        return f"failed ({report.summary_error})"
    if report.summary_id is None:
        return "none"
    return f"{'made now' if report.summary_created else 'reused'} ({short(report.summary_id)})"


def print_context(out: Console, ctx: Context, *, width: int | None = None) -> None:
    """The messages (one line each, shortened to the width) and the report."""
    from rich.text import Text

    from ._render import ROLE_STYLES

    report = ctx.report
    room = (width or out.width) - 12
    for message in ctx.messages:
        role = str(message.get("role") or message.get("type") or "?")
        content = message.get("content", message.get("output", message.get("arguments")))
        text = " ".join(str(content if content is not None else "").split())
        if len(text) > room:
            text = text[: room - 1] + "…"
        line = Text()
        line.append(f"{role:<10} ", style=ROLE_STYLES.get(role, ""))
        line.append(text)
        out.print(line, no_wrap=True)
    out.print()
    rows = [
        ("tokens", f"{ctx.tokens} of {ctx.budget} budget ({ctx.model}, {ctx.format})"),
        ("messages", f"{len(ctx.messages)} sent; branch has {report.path_length} nodes"),
        ("kept depths", _ranges(report.kept)),
        ("dropped depths", _ranges(report.dropped)),
        ("not represented", _gap(ctx)),
        ("stopped", report.stopped),
        ("summary", summary_state(ctx)),
        ("summarizer calls", str(report.summarizer_calls)),
    ]
    if report.estimates:
        rows.append(("estimated", ", ".join(report.estimates)))
    if report.recounted:
        rows.append(("recounted", f"{len(report.recounted)} nodes (stored for another "
                                  "encoding)"))
    for key, value in rows:
        line = Text()
        line.append(f"{key:<17}", style="bold")
        line.append(value)
        out.print(line)


def run(args: argparse.Namespace) -> int:
    from ..summaries import ExtractiveSummarizer, SummaryOptions
    from ._resolve import resolve_conversation, resolve_node

    with open_store(args) as store:
        conversation_id = resolve_conversation(store, args.conversation)
        leaf = resolve_node(store, conversation_id, args.node)
        ctx = store.context(
            leaf, model=args.model, budget=args.budget, reserve_output=args.reserve_output,
            format=args.format,
            summarizer=ExtractiveSummarizer() if args.summarize else None,
            summary_options=SummaryOptions() if args.summarize else None)
    if args.json:
        print_json(context_json(ctx))
    else:
        print_context(console(), ctx)
    return 0
