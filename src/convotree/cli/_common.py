"""What every command shares: the database option, opening the store, consoles, errors.

The database is ``--url``, else ``$CONVOTREE_URL``, else the user's default database:
``$XDG_DATA_HOME/convotree/convotree.db`` (``~/.local/share/convotree/convotree.db``),
the file ``convotree demo`` fills, so that the commands it prints work as they are.

This module is imported to build the parser, so it imports only the standard library;
rich, SQLAlchemy and the store are loaded by the functions that use them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from rich.console import Console

    from ..errors import SchemaOutOfDate
    from ..store import Store

__all__ = [
    "CliError",
    "Subparsers",
    "add_db_options",
    "cli_hint",
    "console",
    "default_db_path",
    "default_url",
    "display_url",
    "err_console",
    "open_store",
    "print_json",
    "redact_urls",
    "resolve_url",
    "run_secrets",
    "scrub",
    "set_argv",
    "whole_number",
]

URL_ENV = "CONVOTREE_URL"

#: What ``register(subparsers)`` receives (argparse's private class, typed).
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

#: The command line of the running ``main`` (reset by each call): where ``scrub`` finds
#: the secrets to hide.
_ARGV: list[str] = []
_SECRET_ENV = (URL_ENV, "OPENAI_BASE_URL")
#: Shorter "secrets" are not scrubbed: replacing every "ab" would garble the message
#: and hide nothing worth hiding.
_MIN_SECRET = 3


def redact_urls(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (and the value
    of every password-like query parameter): nothing the command line prints or logs
    may show one. A pattern (``convotree._log.redact_urls``), so a last line of
    defence; ``scrub`` also removes the exact secrets this run was given."""
    from .._log import redact_urls as redact

    return redact(text)


def set_argv(argv: list[str]) -> None:
    """Remember the running command line for ``scrub`` (called by ``main``)."""
    _ARGV[:] = argv


def run_secrets() -> list[str]:
    """Every secret this run was given, as it may appear in a message: the password
    and password-like query values of each URL on the command line, in
    ``$CONVOTREE_URL`` and ``$OPENAI_BASE_URL`` (decoded and percent-encoded), and
    ``$OPENAI_API_KEY``. Longest first, so a secret inside another goes with it."""
    from urllib.parse import quote, quote_plus

    found: set[str] = set()
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        found.add(key)
    values = [*_ARGV, *(os.environ.get(name, "") for name in _SECRET_ENV)]
    for value in values:
        if value.startswith("--") and "=" in value:
            value = value.split("=", 1)[1]   # --url=postgresql://...
        if "://" not in value:
            continue
        from sqlalchemy.engine import make_url

        from .._log import is_secret_query_key

        try:
            url = make_url(value)
        except Exception:  # not a URL: its pattern is redact_urls' business
            continue
        secrets = [url.password] if url.password else []
        secrets += [item for name, item in url.query.items()
                    if is_secret_query_key(name)
                    for item in ((item,) if isinstance(item, str) else item)]
        for secret in secrets:
            found.update((str(secret), quote(str(secret), safe=""), quote_plus(str(secret))))
    return sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True)


def scrub(text: str) -> str:
    """What the command line may print of ``text``: URL passwords masked by pattern,
    and every secret this run was given (``run_secrets``) replaced by ``***``,
    wherever and however a driver or server quoted it."""
    text = redact_urls(text)
    for secret in run_secrets():
        text = text.replace(secret, "***")
    return text


def display_url(url: str) -> str:
    """A database URL as the command line shows it: ``convotree._log.safe_url``, the
    password and password-like query values hidden by SQLAlchemy's renderer."""
    from .._log import safe_url

    return safe_url(url)


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number from ``low`` (to ``high``): a usage error
    (status 2) names the bound instead of passing a bad value to the library."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {value}")
        return value
    return parse


class CliError(Exception):
    """An operational failure: printed as one line on stderr, exit status 1."""


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/convotree/convotree.db``, the XDG default being ~/.local/share."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "convotree" / "convotree.db"


def default_url() -> str:
    return f"sqlite:///{default_db_path()}"


def add_db_options(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--tenant``, on every command that opens the database."""
    group = parser.add_argument_group("database")
    group.add_argument(
        "--url", metavar="URL",
        help=f"SQLAlchemy URL of the database (default: ${URL_ENV}, else "
             f"sqlite:///{default_db_path()})")
    group.add_argument("--tenant", default="", metavar="NAME",
                       help="the tenant whose conversations to use (default: '')")


def resolve_url(args: argparse.Namespace, *, must_exist: bool = False) -> str:
    """The database URL; with ``must_exist``, a missing SQLite file is an error (opening
    it would leave an empty file behind)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from .._engine import sqlite_file

    url: str = args.url or os.environ.get(URL_ENV) or default_url()
    try:
        make_url(url)
    except ArgumentError as exc:
        # Not echoed: a mistyped URL may still hold a password.
        source = "--url" if args.url else f"${URL_ENV}" if os.environ.get(URL_ENV) else "default"
        raise CliError(f"the {source} value is not a database URL (expected e.g. "
                       "sqlite:///chat.db or postgresql+psycopg://user@host/db)") from exc
    path = sqlite_file(url)
    if must_exist and path is not None and not path.exists():
        raise CliError(f"no database at {path}: run `convotree demo` to make one, or "
                       "`convotree db upgrade` to create an empty one")
    return url


@contextmanager
def open_store(args: argparse.Namespace, *, create: bool = False) -> Iterator[Store]:
    """The store the command works on.

    Without ``create``, a missing SQLite file is an error (opening it would leave an
    empty file behind) and a database without the schema gets the command that fixes it.
    """
    from .._engine import sqlite_file
    from ..errors import SchemaOutOfDate
    from ..store import Store

    url = resolve_url(args, must_exist=not create)
    path = sqlite_file(url)
    if create and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        store = Store(url, tenant=args.tenant, create=create)
    except SchemaOutOfDate as exc:
        raise CliError(cli_hint(exc, args)) from exc
    with store:
        yield store


def cli_hint(exc: SchemaOutOfDate, args: argparse.Namespace) -> str:
    """The store's message, with the fix said as the command-line user types it: the
    same database option the failing command was given, never the URL itself (it may
    hold a password)."""
    first = str(exc).split(";")[0]
    option = " --url URL" if getattr(args, "url", None) else ""
    also = " (with the same --url)" if option else ""
    return f"{first}; run `convotree db upgrade{option}`{also}"


def console(args: argparse.Namespace | None = None) -> Console:
    """Standard output. Plain text when it is not a terminal (pipes and tests get no
    ANSI codes); rich honours NO_COLOR, FORCE_COLOR and COLUMNS."""
    from ._console import QuietPipeConsole

    return QuietPipeConsole(highlight=False, soft_wrap=False)


def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """JSON on stdout, never styled (scripts parse it)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
