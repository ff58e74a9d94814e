"""Driver errors as convotree errors: the one translation every boundary uses.

A caller should be able to tell three things apart without parsing driver messages:
the database is busy (a lock or a pool slot did not come in time: retry as is), the
connection is gone (server restart, killed backend: retry on a fresh connection, which
the next call takes by itself), and the database refused the operation (retrying the
same call will fail the same way).
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ._log import safe_url
from ._views import VIEWS
from .errors import (
    ConfigurationError,
    ConvotreeError,
    SchemaOutOfDate,
    StoreBusy,
    StoreError,
    StoreUnavailable,
)

#: SQLSTATEs that mean "busy, try again": serialization failure, deadlock, lock not
#: available (lock_timeout), query canceled (statement_timeout or a cancel request).
_BUSY_STATES = {"40001", "40P01", "55P03", "57014"}
#: SQLSTATE classes and codes that mean the connection or server went away.
_GONE_CLASSES = ("08",)
_GONE_STATES = {"57P01", "57P02", "57P03"}   # admin shutdown, crash, cannot connect now
#: SQLite's messages for a lock that outlasted the busy timeout.
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


def _sqlstate(error: BaseException | None) -> str | None:
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return state if isinstance(state, str) else None


def _one_line(error: BaseException) -> str:
    """The driver's message on one line (libpq's run over several, with tabs)."""
    return " ".join(str(error).split())


def translate(exc: SQLAlchemyError, doing: str = "the operation") -> ConvotreeError:
    """The ``StoreError`` (or subclass) for a driver or pool error; cause chained by the
    caller with ``raise translate(exc) from exc``."""
    if isinstance(exc, PoolTimeout):
        return StoreBusy(f"no database connection was free in time for {doing} (the "
                         "pool is exhausted: raise pool_size/pool_timeout, or hold "
                         f"connections for less time): {exc}")
    orig = getattr(exc, "orig", None)
    state = _sqlstate(orig)
    detail = _one_line(orig if orig is not None else exc)
    if state == "42P01" or "no such table: convotree_" in detail:
        # A connection of the caller's (bind) to a database convotree never migrated,
        # or (a report's view missing) one migrated before the reporting views.
        missing = ("has no convotree schema, or one older than this version's "
                   "(the reporting views came with revision 0006)"
                   if any(view.name in detail for view in VIEWS)
                   else "has no convotree schema")
        return SchemaOutOfDate(
            f"the database {missing} ({detail}); create or upgrade it with "
            "convotree.migrate(url) in Python or `convotree db upgrade --url URL`")
    if "readonly database" in detail:
        return StoreError(f"the SQLite database is read-only here, so {doing} cannot write "
                          "(the file, or its folder for the -wal and -shm files, is not "
                          f"writable by this process): {detail}")
    if (isinstance(exc, DBAPIError) and exc.connection_invalidated) or (
            state is not None and (state.startswith(_GONE_CLASSES) or state in _GONE_STATES)):
        return StoreUnavailable(f"the database connection was lost during {doing}; nothing "
                                f"of it was committed unless it had finished: {detail}")
    if state == "57014":
        return StoreBusy(f"{doing} was cancelled (statement_timeout, or a cancel request); "
                         "nothing was written. A retry may succeed once the database is less "
                         "busy; a statement that always takes longer needs a larger "
                         f"statement_timeout: {detail}")
    if state in _BUSY_STATES:
        return StoreBusy(f"the database was busy during {doing} (a lock or statement "
                         f"timeout, or a conflict with another transaction); nothing was "
                         f"written, retry: {detail}")
    if orig is not None and any(text in detail.lower() for text in _SQLITE_BUSY):
        return StoreBusy(f"the SQLite database was locked by another writer for longer "
                         f"than the busy timeout during {doing}; nothing was written, "
                         f"retry: {detail}")
    return StoreError(f"the database refused {doing}: {detail}")


def opening(exc: SQLAlchemyError, engine: Engine) -> ConvotreeError:
    """The error for a store that cannot open its database: the server is not reachable
    (``StoreUnavailable``: start it, or retry), or the URL names something that is not
    there or not allowed (``ConfigurationError``: a missing database, a wrong user, a
    file that cannot be opened). The URL is shown without its password."""
    where = safe_url(engine)
    translated = translate(exc, f"opening {where}")
    if isinstance(translated, StoreBusy):
        return translated
    detail = _one_line(getattr(exc, "orig", None) or exc)
    if isinstance(translated, StoreUnavailable) or any(
            text in detail.lower() for text in ("connection refused", "could not connect",
                                                "timeout expired", "no route to host")):
        return StoreUnavailable(f"cannot reach the database at {where}: {detail}")
    return ConfigurationError(f"cannot open the database at {where}: {detail}")
