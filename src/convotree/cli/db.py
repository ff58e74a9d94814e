"""``convotree db``: the schema migrations, through the alembic scripts shipped in the
package (the same ones as ``migrations/`` in a checkout), and PostgreSQL row-level
security for the tenants (``enable-rls``/``disable-rls``, see docs/tenants.md)."""

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

    enable = actions.add_parser(
        "enable-rls", help="PostgreSQL: filter every table and view by tenant (opt-in)",
        description="Turn on PostgreSQL row-level security for convotree's tenants: "
                    "policies on the tables keyed on the convotree.tenant setting, the "
                    "views switched to security_invoker, in one transaction. Run it as "
                    "the tables' owner, again after every upgrade; idempotent. "
                    "See docs/tenants.md.")
    enable.add_argument(
        "--role", metavar="ROLE",
        help="the application's role, to grant what a store needs; it must not be a "
             "superuser, have BYPASSRLS or own the tables")
    _add_url(enable)
    enable.set_defaults(handler=run_enable_rls)

    distribute = actions.add_parser(
        "distribute", help="Citus: distribute the tables by conversation (once, after upgrade)",
        description="On a Citus coordinator whose workers are added: distribute "
                    "convotree's tables by conversation, co-located, in one transaction "
                    "(the conversations/nodes foreign key is dropped and restored around "
                    "it, existing rows move to the shards). Idempotent; refuses a server "
                    "without the citus extension and changes nothing there. "
                    "See docs/scale-out.md.")
    distribute.add_argument(
        "--shard-count", type=int, metavar="N",
        help="shards of the co-location group (default: Citus's citus.shard_count)")
    _add_url(distribute)
    distribute.set_defaults(handler=run_distribute)

    disable = actions.add_parser(
        "disable-rls", help="PostgreSQL: turn convotree's row-level security off",
        description="Drop convotree's policies and turn row-level security off on its "
                    "tables (grants stay); idempotent.")
    _add_url(disable)
    disable.set_defaults(handler=run_disable_rls)


def _add_url(parser: argparse.ArgumentParser) -> None:
    """``--url`` alone: row-level security concerns every tenant, so no ``--tenant``."""
    group = parser.add_argument_group("database")
    group.add_argument(
        "--url", metavar="URL",
        help="SQLAlchemy URL of the PostgreSQL database (default: $CONVOTREE_URL)")


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


def run_enable_rls(args: argparse.Namespace) -> int:
    from .._rls import enable_row_level_security

    url = resolve_url(args, must_exist=True)
    done = enable_row_level_security(url, role=args.role)
    views = f"; views {', '.join(done.views)} as security_invoker" if done.views else ""
    granted = f"; role {done.role} granted" if done.role else ""
    console().print(f"{_display(url)}: row-level security on for "
                    f"{', '.join(done.tables)}{views}{granted}", soft_wrap=True, markup=False)
    return 0


def run_distribute(args: argparse.Namespace) -> int:
    from .._citus import distribute
    from ..errors import SchemaOutOfDate

    url = resolve_url(args, must_exist=True)
    try:
        done = distribute(url, shard_count=args.shard_count)
    except SchemaOutOfDate as exc:
        raise CliError(cli_hint(exc, args)) from exc
    if done.changed:
        message = (f"distributed {', '.join(done.distributed)} by conversation "
                   f"({done.shard_count} shards, Citus {done.citus_version})")
    else:
        message = (f"already distributed: {', '.join(done.already)} "
                   f"({done.shard_count} shards, Citus {done.citus_version}); nothing to do")
    console().print(f"{_display(url)}: {message}", soft_wrap=True, markup=False)
    return 0


def run_disable_rls(args: argparse.Namespace) -> int:
    from .._rls import disable_row_level_security

    url = resolve_url(args, must_exist=True)
    done = disable_row_level_security(url)
    console().print(f"{_display(url)}: row-level security off for {', '.join(done.tables)}",
                    soft_wrap=True, markup=False)
    return 0


def _display(url: str) -> str:
    return display_url(url)
