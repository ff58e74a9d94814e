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

import contextlib
import select
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Connection, Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, NoSuchModuleError

from ._log import install_slow_statement_log
from .errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

#: The async driver convotree picks for a URL that names no driver (or a sync one).
ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
#: The sync driver for a URL that names an async one, or none.
SYNC_DRIVERS = {"postgresql": "postgresql+psycopg", "postgresql+psycopg_async":
                "postgresql+psycopg", "postgresql+asyncpg": "postgresql+psycopg",
                "sqlite+aiosqlite": "sqlite"}
#: Async drivers accepted as given.
ASYNC_ACCEPTED = ("sqlite+aiosqlite", "postgresql+psycopg", "postgresql+psycopg_async",
                  "postgresql+asyncpg")

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


def _parsed(url: str | URL) -> URL:
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
    return parsed


def create_async_engine(url: str, *, busy_timeout_ms: int | None = None, **kwargs: Any
                        ) -> AsyncEngine:
    """An SQLAlchemy ``AsyncEngine`` for convotree (what ``AsyncStore(url)`` makes).

    ``sqlite:///`` selects aiosqlite and ``postgresql://`` / ``postgresql+psycopg://``
    psycopg 3's async mode; ``postgresql+asyncpg://`` is accepted. On SQLite, convotree's
    connection and transaction hooks go on ``engine.sync_engine``, as SQLAlchemy's
    recipe for the async SQLite dialects says. ``busy_timeout_ms`` as for
    ``create_engine``.
    """
    busy = _busy_timeout(busy_timeout_ms)
    parsed = _parsed(url)
    if parsed.drivername not in ASYNC_ACCEPTED:
        if parsed.drivername not in (*SYNC_DRIVERS, "sqlite", "sqlite+pysqlite",
                                     "postgresql+psycopg2"):
            raise ConfigurationError(
                f"SQLAlchemy has no async database driver {parsed.drivername!r} convotree "
                "can use (use sqlite:///FILE or postgresql+psycopg://...)")
        # The same database through the async driver of its backend.
        parsed = parsed.set(drivername=ASYNC_DRIVERS[parsed.get_backend_name()])
    with _driver_needed(parsed, "convotree[async]"):
        from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine

        engine = sa_create_async_engine(parsed, **_async_sqlite_pool(parsed, kwargs))
    configure_sqlite(engine.sync_engine, busy_timeout_ms=busy)
    configure_postgresql(engine.sync_engine)
    install_slow_statement_log(engine.sync_engine)
    return engine


def _async_sqlite_pool(parsed: URL, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A queue pool for an aiosqlite file database, on every supported SQLAlchemy.

    SQLAlchemy before 2.0.38 gives aiosqlite file databases a ``NullPool`` (a new
    connection, and a new driver thread, per checkout), later releases an
    ``AsyncAdaptedQueuePool``. Choosing the queue pool ourselves makes the engine the
    same on all of them: as fast, and accepting the same ``pool_size`` /
    ``max_overflow`` / ``pool_timeout`` keywords (``NullPool`` refuses them with a
    ``TypeError``). A ``poolclass`` or ``pool`` of the caller's is kept.
    """
    if (parsed.get_backend_name() != "sqlite" or sqlite_file(parsed) is None
            or "poolclass" in kwargs or "pool" in kwargs):
        return kwargs
    from sqlalchemy.pool import AsyncAdaptedQueuePool

    return {**kwargs, "poolclass": AsyncAdaptedQueuePool}


@contextlib.contextmanager
def _driver_needed(parsed: URL, extra: str) -> Iterator[None]:
    """A missing driver (or greenlet) as a ``ConfigurationError`` naming the extra."""
    try:
        yield
    except ImportError as exc:
        raise ConfigurationError(
            f"the database driver for {parsed.drivername!r} is not installed "
            f"({exc.name or exc}): pip install \"{extra}\"") from exc
    except NoSuchModuleError as exc:
        raise ConfigurationError(
            f"SQLAlchemy has no database driver {parsed.drivername!r} (use sqlite:///FILE "
            "or postgresql+psycopg://...)") from exc
    except (ArgumentError, TypeError) as exc:   # engine keywords SQLAlchemy does not take
        raise ConfigurationError(f"the engine cannot be made as asked: {exc}") from exc


def create_engine(url: str, *, busy_timeout_ms: int | None = None, **kwargs: Any) -> Engine:
    """Create an SQLAlchemy engine for convotree (SQLite or PostgreSQL URL).

    Use this instead of ``sqlalchemy.create_engine`` when you share one engine
    between convotree and your application on SQLite: it turns on foreign keys and
    proper transactions for every connection. ``busy_timeout_ms`` (SQLite): how long
    a writer waits for another one's lock before ``StoreBusy`` (default 30 s). Other
    keywords go to ``sqlalchemy.create_engine``.
    """
    busy = _busy_timeout(busy_timeout_ms)
    parsed = _parsed(url)
    if parsed.drivername in SYNC_DRIVERS:
        # The bare scheme would pick psycopg2; convotree is tested with psycopg 3. An
        # async driver's URL (the one AsyncStore was given) means the same database.
        parsed = parsed.set(drivername=SYNC_DRIVERS[parsed.drivername])
    with _driver_needed(parsed, "convotree[postgres]"):
        engine = sa_create_engine(parsed, **kwargs)
    configure_sqlite(engine, busy_timeout_ms=busy)
    configure_postgresql(engine)
    install_slow_statement_log(engine)
    return engine


def _busy_timeout(value: Any) -> int:
    if value is None:
        return SQLITE_BUSY_TIMEOUT_MS
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31 - 1:
        raise ConfigurationError(f"busy_timeout_ms must be a number of milliseconds, not "
                                 f"{value!r}")
    return value


_LIVENESS = "convotree_liveness"


def configure_postgresql(engine: Engine) -> None:
    """Hand out no pooled connection that the server has already closed.

    After a server restart (or a killed backend, or an idle timeout on a proxy) every
    pooled connection is dead, and the next call would fail on it. SQLAlchemy's
    ``pool_pre_ping`` would find out with a round trip on every checkout; this asks
    the operating system instead: an idle PostgreSQL connection has nothing to read,
    so a socket that is readable (the server's goodbye, or end of file) or a driver
    that knows it is closed means the connection is gone. Raising
    ``DisconnectionError`` in the checkout event makes the pool discard it and connect
    afresh (SQLAlchemy's documented protocol), so the caller never sees it. Costs one
    ``select()`` system call, no round trip.
    """
    if engine.dialect.name != "postgresql" or getattr(engine, _LIVENESS, False):
        return

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        raw = getattr(dbapi_connection, "driver_connection", None) or dbapi_connection
        if getattr(raw, "closed", False) or not _idle_socket_is_quiet(raw):
            raise DisconnectionError("the server closed this pooled connection")

    setattr(engine, _LIVENESS, True)


def _idle_socket_is_quiet(raw: Any) -> bool:
    """False when the connection's socket has something to read while idle."""
    if not hasattr(raw, "fileno"):   # asyncpg: no socket to look at, ask the driver
        is_closed = getattr(raw, "is_closed", None)
        return not (callable(is_closed) and is_closed())
    try:
        fd = raw.fileno()
    except Exception:   # closed: the pool connects afresh
        return False
    try:
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def configure_sqlite(engine: Engine, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> None:
    """Install convotree's SQLite connection and transaction handling on an engine."""
    if engine.dialect.name != "sqlite" or getattr(engine, _CONFIGURED, False):
        return
    memory = engine.url.database in (None, "", ":memory:")

    # SQLAlchemy's recipe for real SQLite transactions ("Serializable isolation /
    # Savepoints / Transactional DDL"): the driver emits no BEGIN of its own, the
    # "begin" event emits ours. Both hooks talk to the DBAPI connection SQLAlchemy
    # hands them, which for aiosqlite is SQLAlchemy's adapter (it awaits inside):
    # the raw aiosqlite connection would return coroutines nobody awaits, so no
    # transaction would start and nothing would say so. The hooks go on
    # ``async_engine.sync_engine`` for an async engine.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode")
        if not memory and cursor.fetchone()[0] != "wal":
            # WAL lets readers work while one writer commits. Switching needs a moment
            # alone with the file, so it is only asked for once per database.
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        writing = connection.get_execution_options().get(WRITE_OPTION, False)
        # On the DBAPI cursor: a BEGIN needs no result object (it runs per read).
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        statement = "BEGIN IMMEDIATE" if writing else "BEGIN"
        try:
            cursor.execute(statement)
        except connection.dialect.loaded_dbapi.Error as exc:
            # The begin event runs outside SQLAlchemy's error wrapping: wrap the driver
            # error as SQLAlchemy would, so that a lock held past the busy timeout
            # reaches the caller as StoreBusy like every other driver error.
            raise DBAPIError.instance(statement, None, exc,
                                      connection.dialect.loaded_dbapi.Error) from exc
        finally:
            cursor.close()

    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> None:
        # A connection SQLite opened read-only stays read-only in the pool, even after
        # the file becomes writable again: drop it (and only it) so the next call
        # opens the file afresh. The error itself stays a refusal, not "retry".
        if "readonly database" in str(context.original_exception):
            context.is_disconnect = True
            context.invalidate_pool_on_disconnect = False

    setattr(engine, _CONFIGURED, True)
    engine.dispose()  # connections opened before the hooks existed are not reused


def is_configured(engine: Engine) -> bool:
    """Whether convotree's SQLite hooks are on this engine (always True elsewhere)."""
    return engine.dialect.name != "sqlite" or bool(getattr(engine, _CONFIGURED, False))


def check_engine(engine: Engine) -> None:
    """Refuse a SQLite engine whose connections do not enforce foreign keys."""
    if engine.dialect.name == "postgresql":
        configure_postgresql(engine)
        return
    if engine.dialect.name != "sqlite":
        raise ConfigurationError(
            f"convotree supports SQLite and PostgreSQL, not {engine.dialect.name!r}"
        )
    if not getattr(engine, _CONFIGURED, False):
        configure_sqlite(engine)
