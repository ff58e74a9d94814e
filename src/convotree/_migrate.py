"""Schema migrations from code: the same alembic scripts as ``migrations/``.

In a wheel the scripts live at ``convotree/_migrations`` (the build copies the
top-level ``migrations/`` there); in a checkout or an editable install they are found
beside the source tree. The caller's engine reaches alembic through
``config.attributes`` so no URL is ever written into a config file.

Checking a schema (``check``, ``current_revision``, every ``Store`` opening) reads
convotree's version table with one plain SELECT and never imports alembic: alembic
costs a few hundred milliseconds to import, which every command-line call would pay.
Only ``migrate`` and ``downgrade`` load it.

A SQLite file that does not exist is never created by a check: opening it would leave
an empty file behind. ``migrate`` creates it (the folder must exist).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, column, inspect, select, table
from sqlalchemy.exc import DBAPIError

from ._engine import MIGRATION_OPTION, WRITE_OPTION, check_engine, create_engine, sqlite_file
from ._schema import SCHEMA_REVISION, VERSION_TABLE
from .errors import ConfigurationError, MigrationError, SchemaOutOfDate, UnknownRevision

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["UPGRADE_HINT", "check", "current_revision", "downgrade", "migrate",
           "migrations_dir"]

#: How to fix a missing or old schema, in every way convotree offers; each command is
#: run by tests/test_doc_commands.py exactly as printed (``url`` and ``URL`` replaced).
UPGRADE_HINT = (
    "create or upgrade it with `convotree.migrate(url)` in Python, "
    "`convotree db upgrade --url URL` at the command line, "
    "`alembic -x url=URL upgrade head` from a checkout, "
    "or open the store with `Store(url, create=True)`"
)

_VERSION = table(VERSION_TABLE, column("version_num"))


def migrations_dir() -> Path:
    """Folder of the alembic scripts, inside the installed package or the checkout."""
    packaged = Path(str(resources.files("convotree"))) / "_migrations"
    if (packaged / "env.py").is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    raise ConfigurationError("convotree's migration scripts are missing from this install")


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def _missing_sqlite_file(engine: Engine) -> Path | None:
    """The file of a SQLite database that does not exist yet (None otherwise)."""
    path = sqlite_file(engine.url)
    return path if path is not None and not path.exists() else None


@contextlib.contextmanager
def _engine_for(url_or_engine: str | Engine) -> Iterator[Engine]:
    if isinstance(url_or_engine, Engine):
        check_engine(url_or_engine)
        yield url_or_engine
        return
    engine = create_engine(url_or_engine)
    try:
        yield engine
    finally:
        engine.dispose()


# Alembic keeps its running context in module globals, so two migrations in one
# process must not overlap; across processes the database lock in env.py serializes.
_ALEMBIC_LOCK = threading.Lock()


def _run(url_or_engine: str | Engine, action: str, revision: str) -> None:
    from alembic import command
    from alembic.util import CommandError

    if not isinstance(revision, str) or not revision:
        raise UnknownRevision(f"a revision is a non-empty string, not {revision!r}")
    with _ALEMBIC_LOCK, _engine_for(url_or_engine) as engine:
        missing = _missing_sqlite_file(engine)
        if missing is not None and not missing.parent.is_dir():
            raise ConfigurationError(
                f"cannot create the SQLite database {missing}: the folder "
                f"{missing.parent} does not exist")
        before = None if missing is not None else current_revision(engine)
        try:
            with engine.connect().execution_options(
                    **{WRITE_OPTION: True, MIGRATION_OPTION: True}) as connection:
                config = _config()
                config.attributes["connection"] = connection
                getattr(command, action)(config, revision)
                connection.commit()
        except CommandError as exc:
            raise UnknownRevision(
                f"cannot {action} to {revision!r}: {exc} (revisions: "
                f"{', '.join(_known_revisions())}, head, base)", revision=revision) from exc
        except DBAPIError as exc:
            # The run is one transaction (migrations/env.py): nothing of it stayed.
            raise MigrationError(
                f"{action} to {revision!r} failed and was rolled back, the schema is "
                f"still at {before or 'base'}: {exc.orig}", revision=before) from exc


def _known_revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrations_dir()))
    return sorted(rev.revision for rev in script.walk_revisions())


def migrate(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Upgrade a database to ``revision`` (default: the newest schema).

    Safe to call at every start-up and from several processes at once: upgrades are
    serialized by a lock, and a database already at the revision is left untouched.
    The whole upgrade is one transaction: if a step fails, ``MigrationError`` says so
    and the database stays at the revision it had.
    """
    _run(url_or_engine, "upgrade", revision)


def downgrade(url_or_engine: str | Engine, revision: str = "base") -> None:
    """Downgrade a database (``base`` removes convotree's tables and their data).

    One transaction, like ``migrate``: a failed step leaves the database as it was.
    """
    _run(url_or_engine, "downgrade", revision)


def current_revision(url_or_engine: str | Engine) -> str | None:
    """The schema revision a database is at, or None when convotree was never installed."""
    with _engine_for(url_or_engine) as engine:
        if _missing_sqlite_file(engine) is not None:
            return None
        with engine.connect() as connection:
            if not inspect(connection).has_table(VERSION_TABLE):
                return None
            found = connection.execute(select(_VERSION.c.version_num)).scalars().all()
            return found[0] if len(found) == 1 else None if not found else ",".join(found)


def check(url_or_engine: str | Engine) -> None:
    """Raise ``SchemaOutOfDate``, with the fixing command, unless the schema is current."""
    with _engine_for(url_or_engine) as engine:
        missing = _missing_sqlite_file(engine)
        if missing is not None:
            raise SchemaOutOfDate(f"there is no SQLite database at {missing}; {UPGRADE_HINT}")
        revision = current_revision(engine)
    if revision == SCHEMA_REVISION:
        return
    if revision is None:
        raise SchemaOutOfDate(f"the database has no convotree schema; {UPGRADE_HINT}")
    raise SchemaOutOfDate(
        f"the database's convotree schema is at revision {revision!r}, this version of "
        f"convotree needs {SCHEMA_REVISION!r}; {UPGRADE_HINT} (if the database is newer, "
        "upgrade convotree instead)",
        revision=revision,
        expected=SCHEMA_REVISION,
    )
