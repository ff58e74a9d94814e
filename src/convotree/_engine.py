"""Engines configured the way convotree needs them, on SQLite and PostgreSQL.

SQLite needs three things that its Python driver does not do by default:

* ``PRAGMA foreign_keys=ON`` on *every* pooled connection; otherwise the tree's
  foreign keys are silently not enforced.
* Transactions that really begin when SQLAlchemy begins them (pysqlite delays
  ``BEGIN`` to the first write, which breaks read consistency), and writers that take
  the write lock up front with ``BEGIN IMMEDIATE``: a deferred transaction that reads
  and then writes fails with "database is locked" when another writer got there first.
* A busy timeout, so concurrent writers wait for each other instead of failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import make_url

from .errors import ConfigurationError

#: Execution option marking a connection whose transaction will write.
WRITE_OPTION = "convotree_write"
#: Execution option marking a migration run (its backfills span every conversation).
MIGRATION_OPTION = "convotree_migration"
_CONFIGURED = "convotree_configured"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SUPPORTED = ("sqlite", "postgresql")


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory ones)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None  # in memory, or a URI filename whose mode decides what is created
    return Path(database)


def create_engine(url: str, **kwargs: Any) -> Engine:
    """Create an SQLAlchemy engine for convotree (SQLite or PostgreSQL URL).

    Use this instead of ``sqlalchemy.create_engine`` when you share one engine
    between convotree and your application on SQLite: it turns on foreign keys and
    proper transactions for every connection.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # ArgumentError, ValueError: not a URL at all
        raise ConfigurationError(
            "not a database URL (expected e.g. sqlite:///chat.db or "
            "postgresql+psycopg://user@host/db)") from exc
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED:
        raise ConfigurationError(
            f"convotree supports SQLite and PostgreSQL, not {backend!r} "
            "(use sqlite:///FILE or postgresql+psycopg://...)")
    if backend == "postgresql" and parsed.drivername == "postgresql":
        # The bare scheme would pick psycopg2; convotree is tested with psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        engine = sa_create_engine(parsed, **kwargs)
    except ImportError as exc:
        raise ConfigurationError(
            f"the database driver for {parsed.drivername!r} is not installed "
            f"({exc.name or exc}); for PostgreSQL: pip install \"convotree[postgres]\"") from exc
    if engine.dialect.name == "sqlite":
        configure_sqlite(engine)
    return engine


def configure_sqlite(engine: Engine) -> None:
    """Install convotree's SQLite connection and transaction handling on an engine."""
    if engine.dialect.name != "sqlite" or getattr(engine, _CONFIGURED, False):
        return
    memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the "begin" hook below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if not memory and cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            # WAL lets readers work while one writer commits. Switching needs a moment
            # alone with the file, so it is only asked for once per database.
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        writing = connection.get_execution_options().get(WRITE_OPTION, False)
        # Straight to the driver: a BEGIN needs no result object (it runs per read).
        dbapi = connection.connection.driver_connection
        assert dbapi is not None
        dbapi.execute("BEGIN IMMEDIATE" if writing else "BEGIN")

    setattr(engine, _CONFIGURED, True)
    engine.dispose()  # connections opened before the hooks existed are not reused


def check_engine(engine: Engine) -> None:
    """Refuse a SQLite engine whose connections do not enforce foreign keys."""
    if engine.dialect.name == "postgresql":
        return
    if engine.dialect.name != "sqlite":
        raise ConfigurationError(
            f"convotree supports SQLite and PostgreSQL, not {engine.dialect.name!r}"
        )
    if not getattr(engine, _CONFIGURED, False):
        configure_sqlite(engine)
