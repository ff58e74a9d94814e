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

Every run that changes the schema is logged at INFO under ``convotree.migrations``: the
database (``safe_url``: never a password), the revision it starts from and the one it
ends at, each step with its duration, and the whole run's; a run that fails is a
WARNING saying it was rolled back and where the schema still is. A run with nothing
to do (the usual start-up ``migrate``) logs at DEBUG only. Nothing logged here holds
data from the tables: a failure is logged by its error class and first line.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, column, inspect, select, table
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import _dberrors
from ._engine import MIGRATION_OPTION, WRITE_OPTION, check_engine, create_engine, sqlite_file
from ._log import get_logger, redact_urls, safe_revision, safe_url
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
_log = get_logger("migrations")
#: The key of ``Config.attributes`` under which env.py finds the per-step callback
#: (alembic's ``on_version_apply``).
STEP_CALLBACK = "on_version_apply"


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


class _Steps:
    """Alembic's ``on_version_apply`` callback: logs each step as it is applied.

    A step's duration is the time since the previous step was applied (the first
    one's: since the run began, which includes waiting for the migration lock).
    """

    def __init__(self, action: str, where: str, started: float) -> None:
        self.action, self.where = action, where
        self.last = started
        self.done: list[str] = []

    def __call__(self, *, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        now = time.perf_counter()
        source = ",".join(step.source_revision_ids) or "base"
        destination = ",".join(step.destination_revision_ids) or "base"
        revision = step.up_revision
        doc = (getattr(revision, "doc", "") or "").strip().splitlines()
        _log.info("%s step %s -> %s (%s) on %s: %.1f ms", self.action, source, destination,
                  doc[0] if doc else "no description", self.where, (now - self.last) * 1000,
                  extra={"convotree_duration_ms": (now - self.last) * 1000})
        self.last = now
        self.done.append(destination)


def _failed(action: str, revision: str, where: str, before: str | None, started: float,
            exc: BaseException) -> None:
    """The WARNING for a failed run: the error by its class and first line only (a
    driver's DETAIL line can quote row values), the revision argument only if it
    looks like one, URL passwords masked."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    shown = safe_revision(revision)
    first = lines[0] if lines else ""
    if shown.startswith("<"):   # alembic quotes the revision it could not find
        first = first.replace(revision, shown)
    first = redact_urls(first)
    _log.warning("%s of %s to %s failed after %.1f ms and was rolled back; the schema is "
                 "still at %s: %s%s", action, where, shown,
                 (time.perf_counter() - started) * 1000, before or "base",
                 type(cause).__name__, f": {first}" if first else "")


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
        try:
            before = None if missing is not None else current_revision(engine)
        except SQLAlchemyError as exc:   # the database cannot be reached or opened
            raise _dberrors.opening(exc, engine) from exc
        where = safe_url(engine.url)
        started = time.perf_counter()
        steps = _Steps(action, where, started)
        nothing_to_do = (action == "upgrade" and revision in ("head", SCHEMA_REVISION)
                         and before == SCHEMA_REVISION)
        _log.log(logging.DEBUG if nothing_to_do else logging.INFO,
                 "%s of %s from %s to %s: starting", action, where, before or "base",
                 safe_revision(revision))
        try:
            with engine.connect().execution_options(
                    **{WRITE_OPTION: True, MIGRATION_OPTION: True}) as connection:
                config = _config()
                config.attributes["connection"] = connection
                config.attributes[STEP_CALLBACK] = steps
                getattr(command, action)(config, revision)
                connection.commit()
        except CommandError as exc:
            _failed(action, revision, where, before, started, exc)
            raise UnknownRevision(
                f"cannot {action} to {revision!r}: {exc} (revisions: "
                f"{', '.join(_known_revisions())}, head, base)", revision=revision) from exc
        except DBAPIError as exc:
            _failed(action, revision, where, before, started, exc)
            # The run is one transaction (migrations/env.py): nothing of it stayed.
            raise MigrationError(
                f"{action} to {revision!r} failed and was rolled back, the schema is "
                f"still at {before or 'base'}: {exc.orig}", revision=before) from exc
        except Exception as exc:
            _failed(action, revision, where, before, started, exc)
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000
        # Without env.py's forwarding of the callback no step is reported: ask the
        # database (one SELECT) rather than claim nothing changed.
        after = steps.done[-1] if steps.done else current_revision(engine)
        after = None if after == "base" else after
        # (No steps reported while the revision changed: env.py did not pass the
        # callback on; the count is then unknown, not 0.)
        count = (f"{len(steps.done)} step(s)" if steps.done or after == before
                 else "steps not reported")
        _log.log(logging.DEBUG if after == before else logging.INFO,
                 "%s of %s from %s to %s: %s in %.1f ms", action, where,
                 before or "base", after or "base", count, elapsed_ms,
                 extra={"convotree_duration_ms": elapsed_ms})


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
        try:
            with engine.connect() as connection:
                if not inspect(connection).has_table(VERSION_TABLE):
                    return None
                found = connection.execute(select(_VERSION.c.version_num)).scalars().all()
        except SQLAlchemyError as exc:   # cannot be reached, or not a database
            raise _dberrors.opening(exc, engine) from exc
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
