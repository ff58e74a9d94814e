"""Migrations interrupted half way: the schema stays at the revision the run began from.

A database at the revision before head is upgraded; the last migration (0004: create the
new children index, then drop the old one) is made to fail *between* its two steps:

- PostgreSQL, lock_timeout: another connection reads the nodes table in an open
  transaction (ACCESS SHARE). CREATE INDEX does not conflict with it and runs; DROP
  INDEX needs ACCESS EXCLUSIVE and gives up after the engine's ``lock_timeout``.
- PostgreSQL, connection killed: the same reader, no timeout; the migrating backend is
  terminated while it waits in DROP INDEX (polled for in ``pg_stat_activity``, so the
  first step has provably run).
- SQLite: another connection holds the write lock beyond the busy timeout, and the
  file fills up (``PRAGMA max_page_count``) while 0004 builds its index (after 0003's
  step ran in the same run).
- PostgreSQL down at start-up: ``migrate`` cannot connect at all.

Each time: a typed ``MigrationError`` (a ``StoreError``) naming the revision the
database is still at, ``convotree_alembic_version`` unchanged, tables, columns, indexes
and rows as they were, and a later ``migrate`` that succeeds. That several processes
migrating at once serialize is tested in tests/test_migrations.py
(``test_concurrent_migrations_serialize``: four processes, one empty database, both
backends).

Every PostgreSQL database used here is created by this module and dropped at its end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.pool import NullPool

import convotree
import convotree._engine
from convotree import errors
from convotree._migrate import migrations_dir
from convotree._schema import SCHEMA_REVISION, VERSION_TABLE
from tests import sql_audit
from tests.conftest import PostgresServer, _require

#: The revision before 0004 (the two-step migration these cases interrupt): where every
#: case starts and must still be after a failure. Later revisions (0005) run after it.
PREVIOUS = str(ScriptDirectory(str(migrations_dir())).get_revision("0004").down_revision)
OLD_INDEX = "ix_convotree_nodes_conversation_id_parent_id"
NEW_INDEX = "ix_convotree_nodes_parent_id_conversation_id"
MIGRATOR_APP = "convotree-fault-migrator"
DEADLINE = 30.0

pytestmark = pytest.mark.usefixtures("_no_audit")


@pytest.fixture
def _no_audit() -> Iterator[None]:
    """Schema work and the test's own table reads are not the store's statements."""
    with sql_audit.unaudited():
        yield


@pytest.fixture(scope="module")
def new_pg_database(postgres: PostgresServer) -> Iterator[Callable[[], str]]:
    """``new_pg_database()``: a new empty PostgreSQL database; all of them are dropped
    at the end of this module."""
    _require(postgres)
    assert postgres.admin is not None
    admin = postgres.admin
    made: list[str] = []

    def new() -> str:
        name = f"convotree_migfaults_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return postgres.url.set(database=name).render_as_string(hide_password=False)

    yield new
    with admin.connect() as conn:
        for name in made:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _schema(url: str) -> dict[str, Any]:
    """The version, every convotree table's columns and indexes, and every row."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            tables = sorted(t for t in inspector.get_table_names() if t.startswith("convotree_"))
            shape = {t: (sorted(c["name"] for c in inspector.get_columns(t)),
                         sorted(str(i["name"]) for i in inspector.get_indexes(t)))
                     for t in tables}
            rows = {t: sorted(map(tuple, conn.execute(sa.text(f"SELECT * FROM {t}"))),
                              key=repr) for t in tables}
            version = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")
                                   ).scalars().all()
            nodes = sorted(map(tuple, conn.execute(sa.text(
                "SELECT conversation_id, id, parent_id, content FROM convotree_nodes"))))
        return {"version": version, "shape": shape, "rows": rows, "nodes": nodes}
    finally:
        engine.dispose()


def _at_previous(url: str, rows: int = 3, revision: str = PREVIOUS) -> dict[str, Any]:
    """Migrate to ``revision`` (the one before head) and add a conversation of ``rows``
    nodes (by hand: a Store only opens the current schema); the schema snapshot."""
    convotree.migrate(url, revision)
    engine = convotree.create_engine(url)
    conversation = uuid.uuid4()
    now = "2026-01-01 00:00:00+00:00"
    postgres = engine.dialect.name == "postgresql"

    def key(value: uuid.UUID) -> Any:
        return value if postgres else value.hex

    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO convotree_conversations (id, tenant_id, title, created_at, "
            "updated_at) VALUES (:id, '', 'kept', :now, :now)"),
            {"id": key(conversation), "now": now})
        parent = None
        for depth in range(rows):
            node = uuid.uuid4()
            conn.execute(sa.text(
                "INSERT INTO convotree_nodes (conversation_id, id, parent_id, depth, kind, "
                "role, content, token_count, overhead_tokens, encoding, created_at) VALUES "
                "(:c, :id, :parent, :depth, 'message', 'user', :content, 1, 4, "
                "'o200k_base', :now)"),
                {"c": key(conversation), "id": key(node),
                 "parent": None if parent is None else key(parent), "depth": depth,
                 "content": "x" * 200, "now": now})
            parent = node
    engine.dispose()
    snapshot = _schema(url)
    assert snapshot["version"] == [revision]
    nodes = snapshot["shape"]["convotree_nodes"][1]
    assert OLD_INDEX in nodes and NEW_INDEX not in nodes
    return snapshot


@contextlib.contextmanager
def _reader(url: str) -> Iterator[sa.Connection]:
    """A connection reading the nodes table in an open transaction (ACCESS SHARE)."""
    engine = sa.create_engine(url, poolclass=NullPool)
    conn = engine.connect()
    try:
        conn.execute(sa.text("SELECT count(*) FROM convotree_nodes")).scalar()
        yield conn
    finally:
        conn.rollback()
        conn.close()
        engine.dispose()


def _assert_failed_cleanly(exc: BaseException, url: str, before: dict[str, Any],
                           revision: str = PREVIOUS) -> None:
    assert isinstance(exc, errors.MigrationError), f"{type(exc).__name__}: {exc}"
    assert isinstance(exc, errors.StoreError) and exc.__cause__ is not None
    assert exc.context.get("revision") == revision
    assert f"still at {revision}" in str(exc)
    assert convotree.current_revision(url) == revision
    assert _schema(url) == before


def _assert_upgrades_now(url: str, before: dict[str, Any]) -> None:
    convotree.migrate(url)
    after = _schema(url)
    assert after["version"] == [SCHEMA_REVISION]
    nodes = after["shape"]["convotree_nodes"][1]
    assert NEW_INDEX in nodes and OLD_INDEX not in nodes
    assert after["nodes"] == before["nodes"]   # (later revisions may add columns)
    with convotree.Store(url) as store:
        assert [c.title for c in store.list_conversations()] == ["kept"]


def test_lock_timeout_between_two_steps_of_a_migration(
        new_pg_database: Callable[[], str]) -> None:
    """0004's CREATE INDEX runs, its DROP INDEX meets ``lock_timeout`` (a reader holds
    the table): MigrationError, still at the previous revision, the new index gone
    with the rest of the transaction; once the reader is done, the upgrade goes
    through."""
    url = new_pg_database()
    before = _at_previous(url)
    engine = convotree.create_engine(url, poolclass=NullPool,
                                     connect_args={"options": "-c lock_timeout=300"})
    try:
        with _reader(url), pytest.raises(errors.ConvotreeError) as info:
            convotree.migrate(engine)
    finally:
        engine.dispose()
    cause = info.value.__cause__
    assert "lock timeout" in str(info.value)
    # The step that failed is the second one: the first (CREATE INDEX) had run.
    assert str(getattr(cause, "statement", "")).lstrip().upper().startswith("DROP INDEX")
    _assert_failed_cleanly(info.value, url, before)
    _assert_upgrades_now(url, before)


def test_migration_backend_killed_between_two_steps(
        new_pg_database: Callable[[], str], postgres: PostgresServer) -> None:
    """The migrating backend is terminated while it waits in 0004's DROP INDEX (after
    its CREATE INDEX): MigrationError, still at the previous revision, and a later
    upgrade succeeds."""
    url = new_pg_database()
    before = _at_previous(url)
    engine = convotree.create_engine(url, poolclass=NullPool,
                                     connect_args={"application_name": MIGRATOR_APP})
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            convotree.migrate(engine)
            outcome.append(None)
        except BaseException as exc:  # the main thread asserts on it
            outcome.append(exc)

    assert postgres.admin is not None
    killed = False
    try:
        with _reader(url):
            migrator = threading.Thread(target=run, name="convotree-fault-migrate")
            migrator.start()
            deadline = time.monotonic() + DEADLINE
            with postgres.admin.connect() as admin:
                while time.monotonic() < deadline and not killed:
                    killed = bool(admin.execute(sa.text(
                        "SELECT bool_or(pg_terminate_backend(pid, 10000)) FROM "
                        "pg_stat_activity WHERE datname = :db AND application_name = :app "
                        "AND wait_event_type = 'Lock' AND query ~* '^\\s*DROP INDEX'"),
                        {"db": sa.engine.make_url(url).database, "app": MIGRATOR_APP}
                    ).scalar())
                    if not killed:
                        time.sleep(0.02)
            migrator.join(DEADLINE)
    finally:
        engine.dispose()
    assert killed, "the migration never waited in DROP INDEX: no fault injected"
    assert outcome and outcome[0] is not None, "the killed migration reported success"
    _assert_failed_cleanly(outcome[0], url, before)
    _assert_upgrades_now(url, before)


def test_sqlite_migration_locked_out_beyond_the_busy_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another connection holds the SQLite write lock for longer than the busy timeout:
    the upgrade is a typed MigrationError (not a raw driver error), nothing changed,
    and once the lock is gone it succeeds."""
    monkeypatch.setattr(convotree._engine, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}"
    before = _at_previous(url)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(errors.ConvotreeError) as info:
            convotree.migrate(url)
    finally:
        other.execute("ROLLBACK")
        other.close()
    _assert_failed_cleanly(info.value, url, before)
    _assert_upgrades_now(url, before)


def test_sqlite_disk_full_during_a_migration(tmp_path: Path) -> None:
    """Upgrading from two revisions back: 0003's step (a column, a backfill) runs, then
    the file cannot grow while 0004 builds its index over a populated table. A typed
    MigrationError, the revision the run began from, schema and rows intact (0003's
    column gone again: one run, one transaction), and with room the upgrade succeeds."""
    path = tmp_path / "full.db"
    url = f"sqlite:///{path}"
    start = str(ScriptDirectory(str(migrations_dir())).get_revision(PREVIOUS).down_revision)
    before = _at_previous(url, rows=400, revision=start)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    engine = convotree.create_engine(url, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _limit(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA max_page_count={pages + 1}")
        cursor.close()

    try:
        with pytest.raises(errors.ConvotreeError) as info:
            convotree.migrate(engine)
    finally:
        engine.dispose()
    assert "full" in str(info.value)
    # It failed in 0004 (its CREATE INDEX), after 0003's step had run.
    statement = str(getattr(info.value.__cause__, "statement", "")).lstrip().upper()
    assert statement.startswith("CREATE INDEX"), statement
    _assert_failed_cleanly(info.value, url, before, start)
    assert "compacted" not in before["shape"]["convotree_nodes"][0]
    _assert_upgrades_now(url, before)


def test_migrate_with_the_server_unreachable() -> None:
    """``migrate`` at start-up while PostgreSQL is down (nothing listens on the port):
    a typed, retryable StoreUnavailable, as ``Store(url)`` gives, not the driver's
    OperationalError (the version is read before the run's own error handling)."""
    with socket.socket() as probe:   # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/convotree_nowhere"
    with pytest.raises(errors.ConvotreeError) as info:
        convotree.migrate(url)
    assert isinstance(info.value, errors.StoreUnavailable), repr(info.value)
    assert info.value.retryable and info.value.__cause__ is not None
