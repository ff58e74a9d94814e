"""The ``convotree`` command line: a thin shell over the library.

Commands parse their arguments, call the public API (or :mod:`convotree.reporting`),
and format the result with rich; nothing here does what the library cannot.

Adding a command: write ``convotree/cli/<name>.py`` with

    def register(subparsers: Subparsers) -> None:
        parser = subparsers.add_parser("name", help="...", description="...")
        add_db_options(parser)                     # --url, --tenant
        parser.set_defaults(handler=run)

    def run(args: argparse.Namespace) -> int: ...   # 0 ok, 1 failed

and add its module name to ``COMMANDS``. A module listed there that is not installed
(``chat``, until it is written) is skipped. Handlers raise ``CliError`` (or let a
``ConvotreeError`` through) for an operational failure: ``main`` prints one line on
stderr and returns 1; usage errors are argparse's, status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..errors import ConvotreeError
from ._common import CliError, Subparsers

__all__ = ["COMMANDS", "Subparsers", "build_parser", "main"]

#: Command modules, in the order ``--help`` lists them.
COMMANDS = ("demo", "browse", "context", "chat", "interchange", "report", "db")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convotree",
        description="Branching LLM conversations stored in SQL: browse them, assemble "
                    "contexts, import and export, report.",
        epilog="The database is --url, else $CONVOTREE_URL, else the default SQLite file "
               "(see `convotree db --help`). Start with `convotree demo`.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"convotree {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # an optional command not written yet
            raise
        module.register(subparsers)
    return parser


def _error(message: str) -> int:
    sys.stderr.write(f"convotree: error: {message}\n")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 failed, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: keep argparse's status
        return exc.code if isinstance(exc.code, int) else 2
    try:
        status: int = args.handler(args)
    except CliError as exc:
        return _error(str(exc))
    except ConvotreeError as exc:
        return _error(str(exc))
    except DBAPIError as exc:
        # Connection refused, authentication, missing database: the driver's first line.
        return _error(f"database error: {str(exc.orig).strip().splitlines()[0]}")
    except SQLAlchemyError as exc:
        return _error(f"database error: {exc}")
    except BrokenPipeError:
        # `convotree show ... | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        # Files, and tiktoken fetching an encoding on first use (requests' errors are
        # OSErrors): operational, so one line, not a traceback.
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "tiktoken" in message or "openaipublic" in message:
            message = ("could not download a tiktoken encoding (needed once to count "
                       "tokens); when offline, set TIKTOKEN_CACHE_DIR to a folder that "
                       f"holds it ({message[:120]})")
        return _error(message)
    return status

