"""The ``convotree`` command line: a thin shell over the library.

Commands parse their arguments, call the public API (or :mod:`convotree.reporting`),
and format the result with rich; nothing here does what the library cannot.

Adding a command: write ``convotree/cli/<name>.py`` with

    def register(subparsers: Subparsers) -> None:
        parser = subparsers.add_parser("name", help="...", description="...")
        add_db_options(parser)                     # --url, --tenant
        parser.set_defaults(handler=run)

    def run(args: argparse.Namespace) -> int: ...   # 0 ok, 1 failed

and add its module name to ``COMMANDS``. Handlers raise ``CliError`` (or let a
``ConvotreeError`` through) for an operational failure: ``main`` prints one line on
stderr and returns 1; usage errors are argparse's, status 2.

Start-up time is part of the interface (``convotree --help`` and ``convotree ls`` are
typed by people): a command module imports only the standard library and ``_common``
at its top, and everything heavy (SQLAlchemy, rich, alembic, openai, the store) inside
its handler, so building the parser costs nothing and each command loads only what it
uses. ``tests/test_cli_startup.py`` pins which modules ``--help`` may load.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..errors import ConvotreeError
from ._common import CliError, Subparsers, scrub, set_argv

__all__ = ["COMMANDS", "Subparsers", "build_parser", "main"]

#: Command modules, in the order ``--help`` lists them.
COMMANDS = ("demo", "browse", "context", "chat", "interchange", "report", "db")


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors (which quote the offending value) never
    show a secret of the command line (``scrub``). Subcommand parsers are of the
    same class."""

    def error(self, message: str) -> NoReturn:
        super().error(scrub(message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="convotree",
        description="Branching LLM conversations stored in SQL: browse them, assemble "
                    "contexts, import and export, report.",
        epilog="The database is --url, else $CONVOTREE_URL, else the default SQLite file "
               "(see `convotree db --help`). Start with `convotree demo`.",
    )
    parser.add_argument("--version", action="version", version=f"convotree {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def _error(message: str) -> int:
    # Any message may quote a URL or a driver's words about it: scrub removes URL
    # passwords by pattern and every secret this run was given, exactly.
    sys.stderr.write(f"convotree: error: {scrub(message)}\n")
    return 1


def _database_error(exc: Exception) -> str | None:
    """One line for a SQLAlchemy error, or None if ``exc`` is not one. SQLAlchemy is
    only asked when it is loaded: if it is not, the error cannot be one of its own."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is None:
        return None
    if isinstance(exc, sa_exc.DBAPIError):
        # Connection refused, authentication, missing database: the driver's first line.
        lines = str(exc.orig).strip().splitlines()
        return f"database error: {lines[0] if lines else type(exc.orig).__name__}"
    if isinstance(exc, sa_exc.SQLAlchemyError):
        # The first line: a StatementError goes on with the SQL and its parameters
        # (message content).
        lines = str(exc).strip().splitlines()
        return f"database error: {lines[0] if lines else type(exc).__name__}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 failed, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    set_argv(argv)
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
    except BrokenPipeError:
        # `convotree show ... | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        # Files and sockets: operational, so one line, not a traceback.
        return _error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except Exception as exc:
        message = _database_error(exc)
        if message is None:
            raise
        return _error(message)
    return status

