"""``convotree db``: the schema migrations, through the alembic scripts shipped in the
package (the same ones as ``migrations/`` in a checkout)."""

from __future__ import annotations

import argparse

from .._revision import SCHEMA_REVISION
from ._common import (
    CliError,
    Subparsers,
    add_db_options,
    cli_hint,
    console,
    default_db_path,
    display_url,
    resolve_url,
)

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    db = subparsers.add_parser(
        "db", help="create, upgrade, downgrade or check the database schema",
        description="Schema migrations. The database is --url, else $CONVOTREE_URL, else "
                    f"sqlite:///{default_db_path()} "
                    "($XDG_DATA_HOME/convotree/convotree.db).")
    actions = db.add_subparsers(title="actions", metavar="ACTION", required=True)

    upgrade = actions.add_parser("upgrade", help="create the schema or bring it up to date",
                                 description="Upgrade to REVISION (default: head). Safe to "
                                             "run at every deploy; concurrent runs queue.")
    upgrade.add_argument("revision", nargs="?", default="head")
    add_db_options(upgrade)
    upgrade.set_defaults(handler=run_upgrade)

    downgrade = actions.add_parser(
        "downgrade", help="downgrade the schema ('base' drops convotree's tables and data)",
        description="Downgrade to REVISION; 'base' removes convotree's tables with their "
                    "data, so it must be named explicitly.")
    downgrade.add_argument("revision", help="target revision, e.g. base")
    add_db_options(downgrade)
    downgrade.set_defaults(handler=run_downgrade)

    current = actions.add_parser("current", help="print the database's schema revision")
    add_db_options(current)
    current.set_defaults(handler=run_current)

    check = actions.add_parser(
        "check", help="exit 0 if the schema is what this convotree needs, else 1",
        description="Exit 0 when the database is at the revision this version of "
                    f"convotree needs ({SCHEMA_REVISION}); else print why and exit 1.")
    add_db_options(check)
    check.set_defaults(handler=run_check)


def _sqlite_parent(url: str) -> None:
    # `db upgrade` is how an empty default database gets made: create its folder.
    from .._engine import sqlite_file

    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def run_upgrade(args: argparse.Namespace) -> int:
    from .. import _migrate

    url = resolve_url(args)
    _sqlite_parent(url)
    _migrate.migrate(url, args.revision)
    console().print(f"{_display(url)}: schema at {_migrate.current_revision(url)}",
                    soft_wrap=True)
    return 0


def run_downgrade(args: argparse.Namespace) -> int:
    from .. import _migrate

    url = resolve_url(args, must_exist=True)
    _migrate.downgrade(url, args.revision)
    console().print(f"{_display(url)}: schema at {_migrate.current_revision(url) or 'base'}",
                    soft_wrap=True)
    return 0


def run_current(args: argparse.Namespace) -> int:
    from .. import _migrate

    url = resolve_url(args, must_exist=True)
    console().print(_migrate.current_revision(url) or "none (no convotree schema)")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from .. import _migrate
    from ..errors import SchemaOutOfDate

    url = resolve_url(args, must_exist=True)
    try:
        _migrate.check(url)
    except SchemaOutOfDate as exc:
        raise CliError(cli_hint(exc, args)) from exc
    console().print(f"{_display(url)}: schema is current ({SCHEMA_REVISION})",
                    soft_wrap=True)
    return 0


def _display(url: str) -> str:
    return display_url(url)
