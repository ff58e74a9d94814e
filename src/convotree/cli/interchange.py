"""``convotree import`` and ``convotree export``: chat histories in and out, through
:mod:`convotree.interchange` (the formats and their mappings are documented there)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._common import (
    CliError,
    Subparsers,
    add_db_options,
    console,
    err_console,
    open_store,
)

__all__ = ["register"]

# Fixed here rather than read from convotree.interchange.FORMATS so that `--help`
# does not import every format module; a test pins the two to each other.
FORMATS = ("chatgpt", "oasst", "librechat", "openwebui", "openai", "native")


def register(subparsers: Subparsers) -> None:
    imp = subparsers.add_parser(
        "import", help="import conversations from a chat export",
        description="Import every conversation in FILE. Each conversation is checked whole "
                    "and written in its own transaction: a broken one is reported and "
                    "writes nothing, the others still import; conversations already "
                    "imported are skipped. Exit status 1 if any failed.",
        epilog="formats: chatgpt (conversations.json), oasst (OpenAssistant trees, JSON "
               "Lines), librechat, openwebui, openai (a list of Chat Completions "
               "messages), native (convotree's lossless JSON)")
    imp.add_argument("file", type=Path, metavar="FILE")
    imp.add_argument("--format", "-f", required=True, choices=FORMATS, metavar="FORMAT",
                     help=f"the file's format: {', '.join(FORMATS)}")
    imp.add_argument("--replace", action="store_true",
                     help="write conversations that are already there again (each "
                          "replacement is one transaction) instead of skipping them")
    imp.add_argument("--json", action="store_true",
                     help="print the result (counts, ids, failures) as JSON on stdout")
    add_db_options(imp)
    imp.set_defaults(handler=run_import)

    exp = subparsers.add_parser(
        "export", help="export a conversation as JSON",
        description="Write one conversation as JSON in FORMAT, to stdout or a file.")
    exp.add_argument("conversation", metavar="CONVERSATION")
    exp.add_argument("--format", "-f", required=True, choices=FORMATS, metavar="FORMAT",
                     help=f"{', '.join(FORMATS)} (oasst: one JSON line)")
    exp.add_argument("-o", "--output", type=Path, metavar="FILE",
                     help="write to FILE instead of stdout")
    add_db_options(exp)
    exp.set_defaults(handler=run_export)


def run_import(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from ..interchange import import_file

    if not args.file.is_file():
        raise CliError(f"no such file: {args.file}")
    errors = err_console()
    with open_store(args, create=False) as store:
        if errors.is_terminal:
            # Progress only where someone watches it; pipes and logs get the summary.
            with Progress(TextColumn("importing {task.description}"), BarColumn(),
                          MofNCompleteColumn(), TextColumn("conversations"),
                          TimeElapsedColumn(), console=errors, transient=True) as progress:
                task = progress.add_task(args.file.name, total=None)
                result = import_file(store, args.file, args.format, replace=args.replace,
                                     on_progress=lambda n: progress.update(task, completed=n))
        else:
            result = import_file(store, args.file, args.format, replace=args.replace)
    for failure in result.failures:
        sys.stderr.write(f"failed: {failure.source}: {failure.reason}\n")
    replaced = f" ({result.replaced} replaced)" if result.replaced else ""
    line = (f"{result.imported} conversations imported{replaced}, {result.skipped} skipped, "
            f"{result.failed} failed; {result.nodes} messages imported")
    if args.json:
        print(json.dumps({
            "imported": result.imported, "replaced": result.replaced,
            "skipped": result.skipped, "failed": result.failed,
            "nodes": result.nodes,
            "conversation_ids": [str(i) for i in result.conversation_ids],
            "failures": [{"source": f.source, "reason": f.reason} for f in result.failures],
        }, indent=2))
        sys.stderr.write(line + "\n")
    else:
        console().print(line)
    return 1 if result.failed else 0


def run_export(args: argparse.Namespace) -> int:
    from ..interchange import export_conversation
    from ._resolve import resolve_conversation

    with open_store(args) as store:
        conversation = resolve_conversation(store, args.conversation)
        data = export_conversation(store, conversation, args.format)
    # OASST is JSON Lines: one tree per line, so the file can be imported again.
    text = (json.dumps(data, ensure_ascii=False) if args.format == "oasst"
            else json.dumps(data, indent=2, ensure_ascii=False)) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        err_console().print(f"wrote {args.output}")
    return 0
