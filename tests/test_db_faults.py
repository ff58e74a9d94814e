"""Database faults injected for real: what the caller sees, what stays in the tables.

For every fault the guarantee is the same three things, on ``Store`` and ``AsyncStore``:

1. the call raises a ``ConvotreeError`` (a ``StoreError`` when the database failed;
   ``StoreBusy`` when waiting longer could help, ``StoreUnavailable`` when the
   connection went away; both say ``retryable``), never a raw driver or pool error;
2. nothing of a failed call is written: the tables are compared row by row before and
   after (a multi-row call such as ``append_chain``, ``delete_subtree`` or an import is
   all or nothing), and every write that was acknowledged before the fault is still
   there (no lost rows);
3. the same store object works afterwards: the next call succeeds without reopening.

The faults are real, not mocks. PostgreSQL: the store's backend is terminated with
``pg_terminate_backend`` between two calls of a transaction, before its commit, and
while a statement is held inside the transaction (a trigger waits on an advisory lock
the test holds, so the statement is provably in flight); ``statement_timeout`` is hit
(a trigger sleeps); the pool is exhausted; every pooled connection is terminated
between two calls (what a server restart looks like to a client). SQLite: the file
fills up (``PRAGMA max_page_count``), the file or its folder is read-only (``chattr
+i`` as root, where file modes do not bind; ``chmod`` otherwise), and another
connection holds the write lock beyond the busy timeout.

Each PostgreSQL case runs in a database this module creates and drops; the server is
never restarted. No assertion is timed: waits poll for a state (a backend blocked on
the lock) with a generous deadline, and fail if it never comes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import NullPool

import convotree
import convotree._engine
from convotree import errors
from convotree.interchange import export_conversations, import_file
from tests import sql_audit, twins
from tests.conftest import PostgresServer, _require

TWINS = True

#: application_name of the store's connections (what the killer looks for).
STORE_APP = "convotree-fault-store"
#: application_name of the test's own lock holder (never killed).
HOLDER_APP = "convotree-fault-holder"
#: The advisory lock the gate trigger waits on (classid 0, objid GATE_KEY).
GATE_KEY = 7_700_011
#: How long any wait for an injected state may take before the test fails.
DEADLINE = 30.0

# Row triggers that hold a statement inside its transaction. Each fires only for rows
# whose content carries its marker, so building the trees around them is unaffected:
# GATE-INSERT / GATE-DELETE wait for the test's advisory lock, SLOW-INSERT /
# SLOW-DELETE sleep (and meet statement_timeout).
TRIGGERS = f"""
CREATE FUNCTION convotree_fault_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF starts_with(NEW.content, 'GATE-INSERT') THEN PERFORM pg_advisory_xact_lock({GATE_KEY}); END IF;
  IF starts_with(NEW.content, 'SLOW-INSERT') THEN PERFORM pg_sleep(5); END IF;
  RETURN NEW;
END $$;
CREATE FUNCTION convotree_fault_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF starts_with(OLD.content, 'GATE-DELETE') THEN PERFORM pg_advisory_xact_lock({GATE_KEY}); END IF;
  IF starts_with(OLD.content, 'SLOW-DELETE') THEN PERFORM pg_sleep(5); END IF;
  RETURN OLD;
END $$;
CREATE TRIGGER convotree_fault_insert BEFORE INSERT ON convotree_nodes
  FOR EACH ROW EXECUTE FUNCTION convotree_fault_insert();
CREATE TRIGGER convotree_fault_delete BEFORE DELETE ON convotree_nodes
  FOR EACH ROW EXECUTE FUNCTION convotree_fault_delete();
"""


# --- the database of this module and the faults ---------------------------------------

@pytest.fixture(scope="module")
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A migrated PostgreSQL database of this module (with the fault triggers), dropped
    at the end of the module."""
    _require(postgres)
    assert postgres.admin is not None
    name = f"convotree_faults_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with postgres.admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres.url.set(database=name).render_as_string(hide_password=False)
    try:
        convotree.migrate(url)
        engine = sa.create_engine(url, poolclass=NullPool)
        with engine.begin() as conn:
            conn.exec_driver_sql(TRIGGERS)
        engine.dispose()
        yield url
    finally:
        with postgres.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _database(url: str) -> str:
    return str(sa.engine.make_url(url).database)


def _backends(postgres: PostgresServer, url: str, *, app: str | None = STORE_APP,
              state: str | None = None) -> list[int]:
    """Backend pids connected to the database of ``url`` (the store's by default; every
    one but the lock holder's with ``app=None``)."""
    assert postgres.admin is not None
    query = ("SELECT pid FROM pg_stat_activity WHERE datname = :db AND pid <> "
             "pg_backend_pid() AND backend_type = 'client backend' AND "
             "application_name <> :holder")
    params: dict[str, Any] = {"db": _database(url), "holder": HOLDER_APP}
    if app is not None:
        query += " AND application_name = :app"
        params["app"] = app
    if state is not None:
        query += " AND state = :state"
        params["state"] = state
    with postgres.admin.connect() as conn:
        return [int(pid) for pid in conn.execute(sa.text(query), params).scalars()]


def _terminate(postgres: PostgresServer, pids: list[int]) -> list[int]:
    """pg_terminate_backend each pid and wait until it is gone; the pids terminated.
    (The pid is cast: Citus adds a ``pg_terminate_backend(bigint, bigint)`` of its own.)"""
    assert postgres.admin is not None
    killed = []
    with postgres.admin.connect() as conn:
        for pid in pids:
            if conn.execute(sa.text("SELECT pg_terminate_backend(CAST(:pid AS integer), 10000)"),
                            {"pid": pid}).scalar():
                killed.append(pid)
    return killed


class Gate:
    """The advisory lock the GATE triggers wait for, held by a connection of the test.

    While it is held, a statement that inserts (deletes) a GATE-INSERT (GATE-DELETE) row
    waits inside the store's open transaction: everything before it in that
    transaction has run, nothing has committed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                                       connect_args={"application_name": HOLDER_APP})
        self.conn: sa.Connection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
            self.conn.close()
            self.conn = None

    def __enter__(self) -> Gate:
        self.conn = self.engine.connect()
        self.conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": GATE_KEY})
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        self.engine.dispose()

    def waiting(self) -> list[int]:
        """Backends blocked on the gate."""
        assert self.conn is not None
        return [int(pid) for pid in self.conn.execute(sa.text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid = 0 AND objid = :key AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"key": GATE_KEY}).scalars()]


@contextlib.contextmanager
def killed_at_the_gate(postgres: PostgresServer, url: str) -> Iterator[list[int]]:
    """Hold the gate; a thread terminates the first backend that blocks on it, then
    opens the gate (so the fault happens once). Yields the list of killed pids (filled
    in by the thread)."""
    killed: list[int] = []
    with Gate(url) as gate:
        def kill() -> None:
            try:
                deadline = time.monotonic() + DEADLINE
                while time.monotonic() < deadline:
                    blocked = gate.waiting()
                    if blocked:
                        killed.extend(_terminate(postgres, blocked))
                        return
                    time.sleep(0.02)
            finally:
                gate.close()   # one fault: a retry on a fresh connection may go through

        killer = threading.Thread(target=kill, name="convotree-fault-killer")
        killer.start()
        try:
            yield killed
        finally:
            killer.join(DEADLINE + 5)


def snapshot(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every conversation row and every node (ids, parent, content): to prove that a
    failed call wrote nothing and that no acknowledged write went missing."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with sql_audit.unaudited(), engine.connect() as conn:
            conversations = conn.execute(sa.text(
                "SELECT id, title, current_node_id, updated_at FROM convotree_conversations "
                "ORDER BY id")).all()
            nodes = conn.execute(sa.text(
                "SELECT conversation_id, id, parent_id, content FROM convotree_nodes "
                "ORDER BY conversation_id, id")).all()
        return [tuple(r) for r in conversations], [tuple(r) for r in nodes]
    finally:
        engine.dispose()


def _uuid(value: Any) -> uuid.UUID:
    """An id column as a UUID (SQLite stores them as 32 hex digits)."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _node_ids(url: str) -> set[uuid.UUID]:
    return {_uuid(row[1]) for row in snapshot(url)[1]}


def _ids(nodes: Any) -> set[uuid.UUID]:
    return {node.id for node in nodes}


def _contents(url: str) -> set[str]:
    return {row[3] for row in snapshot(url)[1]}


# --- stores of either shell on engines the test configures ------------------------------

Maker = Callable[..., Any]


@contextlib.contextmanager
def _makers(shell: str, event_loop_thread: twins.EventLoopThread | None) -> Iterator[Maker]:
    """``make_store(url, hook=None, own=False, **engine_options)``: a store of the test's
    shell. By default on an engine built with ``convotree.create_engine`` (or
    ``create_async_engine``) and ``engine_options``, ``hook(sync_engine)`` run on it
    first (to add event listeners); ``own=True`` lets the store build its own engine
    from the URL, exactly as an application gets it."""
    closers: list[Callable[[], None]] = []

    def make(url: str, *, hook: Callable[[sa.Engine], None] | None = None,
             own: bool = False, **engine_options: Any) -> Any:
        if shell == "sync":
            if own:
                store: Any = convotree.Store(url)
                closers.append(store.close)
                return store
            engine = convotree.create_engine(url, **engine_options)
            if hook is not None:
                hook(engine)
            closers.append(engine.dispose)
            return convotree.Store(engine)
        assert event_loop_thread is not None
        if own:
            astore = event_loop_thread.run(convotree.AsyncStore.open(url))
            blocking = twins.Blocking(astore, event_loop_thread)
            closers.append(blocking.close)
            return blocking
        aengine = convotree.create_async_engine(url, **engine_options)
        if hook is not None:
            hook(aengine.sync_engine)
        closers.append(lambda: event_loop_thread.run(aengine.dispose()))
        astore = event_loop_thread.run(convotree.AsyncStore.open(aengine))
        return twins.Blocking(astore, event_loop_thread)

    try:
        yield make
    finally:
        for close in reversed(closers):
            close()


@pytest.fixture
def make_store(shell: str, event_loop_thread: twins.EventLoopThread) -> Iterator[Maker]:
    """A store maker of the test's shell (see ``_makers``)."""
    with _makers(shell, event_loop_thread) as make:
        yield make


@pytest.fixture
def make_sync_store() -> Iterator[Maker]:
    """A ``Store`` maker, for what only the sync shell has (``interchange.import_file``
    takes a ``Store``; ``AsyncStore`` has no import)."""
    with _makers("sync", None) as make:
        yield make


def _named(**connect_args: Any) -> dict[str, Any]:
    return {"connect_args": {"application_name": STORE_APP, **connect_args}}


def _chain(n: int, marker: str | None = None, at: int = 2) -> list[dict[str, Any]]:
    """``n`` alternating user/assistant messages; message ``at`` carries ``marker``."""
    roles = ("user", "assistant")
    return [{"role": roles[i % 2],
             "content": f"{marker} chain {i}" if marker and i == at else f"chain {i}"}
            for i in range(n)]


def _conversation(store: Any) -> tuple[Any, Any]:
    conv = store.create_conversation(title="faults")
    return conv, store.append(conv, role="system", content="root")


def _assert_typed(exc: BaseException, expected: type[errors.StoreError], *,
                  retryable: bool | None = None) -> None:
    """The error is convotree's, of the expected class, with the driver's cause (and,
    when asked, says whether a retry can help)."""
    assert isinstance(exc, expected), f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    assert exc.__cause__ is not None
    if retryable is not None:
        assert exc.retryable is retryable


def _in_transaction(store: Any, *calls: Callable[[Any], Any]) -> Callable[[], None]:
    """A call that runs ``calls`` (each given the transaction) in ``store.transaction()``."""
    def run() -> None:
        with store.transaction() as tx:
            for call in calls:
                call(tx)
    return run


# --- PostgreSQL: the connection killed ----------------------------------------------------

@pytest.mark.parametrize("where", ["before the next call", "before the commit"])
def test_connection_killed_inside_a_transaction(
        pg_url: str, postgres: PostgresServer, make_store: Maker, where: str) -> None:
    """``store.transaction()`` with one write done; the backend is terminated while the
    transaction is idle. The next call in it (or the commit) raises StoreUnavailable,
    the first write is not in the database, and the store's next call works."""
    store = make_store(pg_url, **_named())
    conv, root = _conversation(store)
    before = snapshot(pg_url)

    def kill(_tx: Any) -> None:
        idle = _backends(postgres, pg_url, state="idle in transaction")
        assert len(idle) == 1, idle
        assert _terminate(postgres, idle) == idle

    calls = [lambda tx: tx.append(conv, parent=root, role="user", content="then killed"),
             kill]
    if where == "before the next call":
        calls.append(lambda tx: tx.append(conv, parent=root, role="user", content="never"))
    with pytest.raises(errors.ConvotreeError) as info:
        _in_transaction(store, *calls)()
    _assert_typed(info.value, errors.StoreUnavailable, retryable=True)
    assert snapshot(pg_url) == before
    after = store.append(conv, parent=root, role="user", content="after the kill")
    assert after.id in _node_ids(pg_url)


@pytest.mark.parametrize("operation", ["append", "append_chain", "delete_subtree"])
def test_connection_killed_during_a_statement(
        pg_url: str, postgres: PostgresServer, make_store: Maker, operation: str) -> None:
    """The backend is terminated while a statement of the call is held (by the gate
    trigger) inside its transaction: for ``append_chain`` the third insert, after two
    rows went in; for ``delete_subtree`` the DELETE, after the conversation's current
    node and clock were updated; for ``append`` its one autocommit statement. Nothing
    of the call stays; the store's next call works."""
    store = make_store(pg_url, **_named())
    conv, root = _conversation(store)
    top = store.append(conv, parent=root, role="user", content="top")
    store.append(conv, parent=top, role="assistant", content="GATE-DELETE below")
    before = snapshot(pg_url)
    call: Callable[[], Any] = {
        "append": lambda: store.append(conv, parent=root, role="user",
                                       content="GATE-INSERT one"),
        "append_chain": lambda: store.append_chain(root, _chain(5, "GATE-INSERT")),
        "delete_subtree": lambda: store.delete_subtree(top),
    }[operation]
    with killed_at_the_gate(postgres, pg_url) as killed, \
            pytest.raises(errors.ConvotreeError) as info:
        call()
    assert killed, "the fault was not injected: no backend blocked on the gate"
    _assert_typed(info.value, errors.StoreUnavailable)
    assert snapshot(pg_url) == before
    made = store.append_chain(root, _chain(3))
    assert _ids(made) <= _node_ids(pg_url)
    assert store.delete_subtree(top) == 2


def _native_file(tmp_path: Path, count: int, marker: str, at: int
                 ) -> tuple[Path, list[uuid.UUID]]:
    """A native export of ``count`` three-message conversations, made in a scratch
    SQLite store; conversation ``at`` has ``marker`` in its last message."""
    url = f"sqlite:///{tmp_path / 'scratch.db'}"
    with convotree.Store(url, create=True) as scratch:
        ids = []
        for index in range(count):
            conv, root = _conversation(scratch)
            last = f"{marker} answer {index}" if index == at else f"answer {index}"
            scratch.append_chain(root, [{"role": "user", "content": f"question {index}"},
                                        {"role": "assistant", "content": last}])
            ids.append(conv.id)
        documents = export_conversations(scratch, ids, "native")
    path = tmp_path / "export.json"
    path.write_text(json.dumps(documents))
    return path, ids


def _check_import(url: str, before: tuple[list[Any], list[Any]], ids: list[uuid.UUID],
                  outcome: Any) -> None:
    """Every conversation of the file is wholly there (3 nodes) or wholly absent; the
    result reports exactly the ones there (none lost, none unreported), and a raised
    error (one batch in flight) left none of them; nothing that was there before went."""
    conversations, nodes = snapshot(url)
    present = {_uuid(r[0]) for r in conversations}
    counts: dict[uuid.UUID, int] = {}
    for row in nodes:
        counts[_uuid(row[0])] = counts.get(_uuid(row[0]), 0) + 1
    whole = {i for i in ids if i in present and counts.get(i) == 3}
    partial = [i for i in ids if i not in whole and (i in present or i in counts)]
    assert not partial, f"{len(partial)} conversations partly written"
    assert {_uuid(r[0]) for r in before[0]} <= present and set(before[1]) <= set(nodes)
    if isinstance(outcome, BaseException):
        assert not whole, f"the import raised {outcome!r} but wrote {len(whole)}"
        return
    reported = set(outcome.conversation_ids)
    assert not reported - whole, f"{len(reported - whole)} reported imported are missing"
    assert not whole - reported, f"{len(whole - reported)} written but not reported"


def test_connection_killed_during_an_import(
        pg_url: str, postgres: PostgresServer, make_sync_store: Maker, tmp_path: Path) -> None:
    """The backend is terminated while the import's batch transaction is inserting the
    third conversation's nodes. Either the import raises a StoreError and nothing of
    the batch is in the database, or it recovered on a fresh connection and every
    conversation it reports is there in full; never half a conversation. The store's
    next call works."""
    store = make_sync_store(pg_url, **_named())
    path, ids = _native_file(tmp_path, 5, "GATE-INSERT", at=2)
    before = snapshot(pg_url)
    outcome: Any
    with killed_at_the_gate(postgres, pg_url) as killed:
        try:
            outcome = import_file(store, path, "native")
        except errors.StoreError as exc:
            outcome = exc
    assert killed, "the fault was not injected: no backend blocked on the gate"
    _check_import(pg_url, before, ids, outcome)
    if not isinstance(outcome, BaseException):
        # Recovered: then it recovered fully (nothing about the file was wrong).
        assert outcome.imported == 5 and not outcome.failures, outcome.failures
    _, root = _conversation(store)
    assert store.path(root)[0].id == root.id


# --- PostgreSQL: statement_timeout -------------------------------------------------------

@pytest.mark.parametrize("operation", ["append", "append_chain", "delete_subtree"])
def test_statement_timeout(pg_url: str, make_store: Maker, operation: str) -> None:
    """``statement_timeout`` (set on the store's engine) cancels a statement that a
    trigger makes sleep: a typed StoreError, nothing of the call written, and the same
    pooled connection serves the next call."""
    store = make_store(pg_url, **_named(options="-c statement_timeout=300"))
    conv, root = _conversation(store)
    top = store.append(conv, parent=root, role="user", content="top")
    store.append(conv, parent=top, role="assistant", content="SLOW-DELETE below")
    before = snapshot(pg_url)
    call: Callable[[], Any] = {
        "append": lambda: store.append(conv, parent=root, role="user",
                                       content="SLOW-INSERT one"),
        "append_chain": lambda: store.append_chain(root, _chain(5, "SLOW-INSERT")),
        "delete_subtree": lambda: store.delete_subtree(top),
    }[operation]
    with pytest.raises(errors.ConvotreeError) as info:
        call()
    _assert_typed(info.value, errors.StoreError)
    assert "statement timeout" in str(info.value)
    assert snapshot(pg_url) == before
    made = store.append_chain(root, _chain(3))
    assert _ids(made) <= _node_ids(pg_url)


def test_statement_timeout_during_an_import(pg_url: str, make_sync_store: Maker,
                                            tmp_path: Path) -> None:
    """One conversation of the file cannot be written in time: it fails (reported, or
    the import raises a StoreError), nothing of it is written, the others are whole."""
    store = make_sync_store(pg_url, **_named(options="-c statement_timeout=300"))
    path, ids = _native_file(tmp_path, 5, "SLOW-INSERT", at=2)
    before = snapshot(pg_url)
    outcome: Any
    try:
        outcome = import_file(store, path, "native")
    except errors.StoreError as exc:
        outcome = exc
    _check_import(pg_url, before, ids, outcome)
    assert ids[2] not in {_uuid(r[0]) for r in snapshot(pg_url)[0]}
    if not isinstance(outcome, BaseException):
        assert outcome.imported == 4 and outcome.failed == 1
        assert "statement timeout" in outcome.failures[0].reason
    conv, root = _conversation(store)
    assert store.append(conv, parent=root, role="user", content="after").parent_id == root.id


# --- both backends: the pool exhausted ---------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    url = f"sqlite:///{tmp_path / 'pool.db'}"
    convotree.migrate(url)
    return url


@pytest.mark.parametrize("call", ["append", "read", "transaction"])
def test_pool_exhausted(any_url: str, make_store: Maker, call: str) -> None:
    """A pool of one connection, held by another thread's ``store.transaction()``: a
    call that needs a connection gets StoreBusy after ``pool_timeout`` (SQLAlchemy's
    own ``TimeoutError`` is not a driver error), writes nothing, and once the holder
    commits, the same store works and the holder's write is there."""
    store = make_store(any_url, pool_size=1, max_overflow=0, pool_timeout=0.5,
                       **(_named() if any_url.startswith("postgresql") else {}))
    conv, root = _conversation(store)
    held, release = threading.Event(), threading.Event()
    holder_node: list[Any] = []
    failures: list[BaseException] = []

    def hold() -> None:
        try:
            with store.transaction() as tx:
                holder_node.append(tx.append(conv, parent=root, role="user",
                                             content="holder"))
                held.set()
                release.wait(DEADLINE)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            held.set()

    attempt: Callable[[], Any] = {
        "append": lambda: store.append(conv, parent=root, role="user",
                                       content="no connection"),
        "read": lambda: store.path(root),
        "transaction": _in_transaction(store, lambda tx: tx.append(
            conv, parent=root, role="user", content="no connection")),
    }[call]
    holder = threading.Thread(target=hold, name="convotree-fault-holder")
    holder.start()
    try:
        assert held.wait(DEADLINE) and not failures, failures
        with pytest.raises(errors.ConvotreeError) as info:
            attempt()
    finally:
        release.set()
        holder.join(DEADLINE)
    assert not failures, failures
    _assert_typed(info.value, errors.StoreBusy, retryable=True)
    contents = _contents(any_url)
    assert "holder" in contents and "no connection" not in contents
    assert store.append(conv, parent=root, role="user", content="after").content == "after"
    assert holder_node[0].id in _node_ids(any_url)


# --- PostgreSQL: every pooled connection gone between two calls (a server restart) ---------

@pytest.mark.parametrize("call", ["append", "read", "append_chain", "transaction"])
def test_every_connection_killed_between_calls(
        pg_url: str, postgres: PostgresServer, make_store: Maker, call: str) -> None:
    """What a server restart looks like to a client: all of the store's pooled
    connections are dead when the next call checks one out. That call must work (the
    engine pings, or retries once on a fresh connection): a restart between two
    requests is not the caller's problem. The store is the one ``Store(url)`` makes."""
    store = make_store(pg_url, own=True)
    conv, root = _conversation(store)
    written = [root]
    for index in range(3):
        written.append(store.append(conv, parent=root, role="user", content=f"w{index}"))
    pooled = _backends(postgres, pg_url, app=None)
    assert pooled, "the store keeps no pooled connection"
    assert _terminate(postgres, pooled) == pooled
    if call == "append":
        written.append(store.append(conv, parent=root, role="user", content="after"))
    elif call == "read":
        assert [n.id for n in store.path(written[-1])] == [root.id, written[-1].id]
    elif call == "append_chain":
        written += store.append_chain(root, _chain(3))
    else:
        with store.transaction() as tx:
            written.append(tx.append(conv, parent=root, role="user", content="in tx"))
    assert _ids(written) <= _node_ids(pg_url)


# --- SQLite: the disk full ----------------------------------------------------------------

class PageLimit:
    """``PRAGMA max_page_count`` on every connection the engine hands out (set at each
    checkout, so raising ``limit`` frees space for the store's pooled connections)."""

    def __init__(self) -> None:
        self.limit = 2_000_000_000

    def install(self, engine: sa.Engine) -> None:
        @event.listens_for(engine, "checkout")
        def _limit(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA max_page_count={self.limit}")
            cursor.close()


def _pages(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])


def test_sqlite_disk_full(tmp_path: Path, make_store: Maker) -> None:
    """Appends until the file cannot grow: each append either is acknowledged and
    stays, or raises a typed StoreError and leaves nothing; then a 40-message
    ``append_chain`` fails whole; reads go on; once space is freed the same store
    writes again, and every acknowledged append is there (no lost rows)."""
    path = tmp_path / "full.db"
    url = f"sqlite:///{path}"
    convotree.migrate(url)
    pages = PageLimit()
    store = make_store(url, hook=pages.install)
    conv, root = _conversation(store)
    pages.limit = _pages(path) + 6
    acknowledged = [root]
    full: errors.ConvotreeError | None = None
    for index in range(2_000):
        before = snapshot(url)
        try:
            acknowledged.append(store.append(conv, parent=acknowledged[-1], role="user",
                                             content=f"{index} " + "x" * 1500))
        except errors.ConvotreeError as exc:
            full = exc
            assert snapshot(url) == before
            break
    assert full is not None, "the file never filled up"
    _assert_typed(full, errors.StoreError)
    assert "full" in str(full)
    before = snapshot(url)
    pages.limit = _pages(path) + 4   # room for the first few messages of the chain only
    with pytest.raises(errors.ConvotreeError) as info:
        store.append_chain(acknowledged[-1], [{**m, "content": m["content"] + "y" * 1500}
                                              for m in _chain(40)])
    _assert_typed(info.value, errors.StoreError)
    assert snapshot(url) == before
    assert [n.id for n in store.path(acknowledged[-1])] == [n.id for n in acknowledged]
    pages.limit = 2_000_000_000
    more = store.append_chain(acknowledged[-1], _chain(4))
    assert _ids(acknowledged + more) <= _node_ids(url)


def test_sqlite_disk_full_inside_a_transaction(tmp_path: Path, make_store: Maker) -> None:
    """``store.transaction()`` fills the file with many small calls. SQLite may answer
    SQLITE_FULL by rolling back the WHOLE transaction, not just the failed statement's
    savepoint. Whatever it did, the outcome must be one of the two honest ones: the
    block raises a typed error and nothing of it is written, or it commits and every
    call it acknowledged is there, including one made after the failed call. Never:
    the acknowledged calls silently gone while a later call is committed on its own."""
    path = tmp_path / "full-tx.db"
    url = f"sqlite:///{path}"
    convotree.migrate(url)
    pages = PageLimit()
    store = make_store(url, hook=pages.install)
    store.list_conversations()
    before = snapshot(url)
    pages.limit = _pages(path) + 6
    acknowledged: list[Any] = []
    failed: list[BaseException] = []
    try:
        with store.transaction() as tx:
            for index in range(1_000):
                try:
                    conv = tx.create_conversation(title=f"tx {index}")
                    acknowledged += [tx.append(conv, role="user", content="q" * 100)]
                except errors.ConvotreeError as exc:
                    failed.append(exc)
                    break
            assert failed, "the file never filled up"
            _assert_typed(failed[0], errors.StoreError)
            pages.limit = 2_000_000_000   # room again: the transaction may go on
            acknowledged.append(tx.create_conversation(title="after the failure"))
    except errors.ConvotreeError as exc:
        failed.append(exc)
        committed = False
    else:
        committed = True
    assert all(isinstance(exc, errors.ConvotreeError) for exc in failed)
    conversations, nodes = snapshot(url)
    present = {_uuid(r[0]) for r in conversations} | {_uuid(r[1]) for r in nodes}
    wanted = {item.id for item in acknowledged}
    if committed:
        lost = wanted - present
        assert not lost, f"committed, but {len(lost)} acknowledged writes are missing"
    else:
        assert (conversations, nodes) == before, "the transaction raised but wrote"
    assert store.create_conversation(title="next").title == "next"


def test_sqlite_disk_full_during_an_import(tmp_path: Path, make_sync_store: Maker) -> None:
    """The file fills up in the middle of an import: every conversation is wholly
    written or wholly absent, and what the result reports matches the tables."""
    source, ids = _native_file(tmp_path, 30, "", at=-1)
    path = tmp_path / "import-full.db"
    url = f"sqlite:///{path}"
    convotree.migrate(url)
    pages = PageLimit()
    store = make_sync_store(url, hook=pages.install)
    store.list_conversations()
    before = snapshot(url)
    pages.limit = _pages(path) + 3
    outcome: Any
    try:
        outcome = import_file(store, source, "native")
    except errors.StoreError as exc:
        outcome = exc
    _check_import(url, before, ids, outcome)
    if not isinstance(outcome, BaseException):
        assert outcome.imported < 30, "the file never filled up"
    pages.limit = 2_000_000_000
    assert store.create_conversation(title="after").title == "after"


# --- SQLite: a read-only file -------------------------------------------------------------

@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make files (or folders) unwritable even for root: ``chattr +i`` when running as
    root (file modes do not bind root), ``chmod a-w`` otherwise."""
    root = os.geteuid() == 0
    modes = {p: p.stat().st_mode for p in paths}
    done: list[Path] = []
    try:
        for p in paths:
            if root:
                subprocess.run(["chattr", "+i", str(p)], check=True, capture_output=True)
            else:
                p.chmod(0o555 if p.is_dir() else 0o444)
            done.append(p)
        yield
    finally:
        for p in reversed(done):
            if root:
                subprocess.run(["chattr", "-i", str(p)], check=True, capture_output=True)
            else:
                p.chmod(modes[p])


def _closed_database(tmp_path: Path) -> tuple[str, Path, Any, Any]:
    """A migrated SQLite file with one conversation, all connections closed (so the
    -wal and -shm files are gone, as after a clean shutdown)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "ro.db"
    url = f"sqlite:///{path}"
    convotree.migrate(url)
    with convotree.Store(url) as writer:
        conv, root = _conversation(writer)
        writer.append(conv, parent=root, role="user", content="kept")
    assert sorted(p.name for p in folder.iterdir()) == ["ro.db"]
    return url, path, conv, root


def test_sqlite_read_only_file(tmp_path: Path, make_store: Maker) -> None:
    """A read-only database file in a writable folder opens: reads work (an archive or
    a replica can be browsed), every write is a typed StoreError that writes nothing,
    and reads still work after it."""
    url, path, conv, root = _closed_database(tmp_path)
    before = snapshot(url)
    with read_only(path):
        store = make_store(url)
        assert [n.content for n in store.tree(conv)] == ["root", "kept"]
        writes: list[Callable[[], Any]] = [
            lambda: store.append(conv, parent=root, role="user", content="no"),
            lambda: store.append_chain(root, _chain(3)),
            lambda: store.create_conversation(title="no"),
            lambda: store.delete_subtree(root),
        ]
        for write in writes:
            with pytest.raises(errors.ConvotreeError) as info:
                write()
            _assert_typed(info.value, errors.StoreError)
            assert "readonly" in str(info.value).replace("read-only", "readonly")
            assert len(store.tree(conv)) == 2
        assert snapshot(url) == before


def test_sqlite_writable_again_without_reopening(tmp_path: Path, make_store: Maker) -> None:
    """Once the file is writable again (the operator fixed its permissions), the same
    store writes: a connection SQLite opened read-only must not stay in the pool."""
    url, path, conv, root = _closed_database(tmp_path)
    with read_only(path):
        store = make_store(url)
        with pytest.raises(errors.StoreError):
            store.append(conv, parent=root, role="user", content="refused")
    made = store.append(conv, parent=root, role="user", content="accepted")
    assert made.id in _node_ids(url)


def test_sqlite_read_only_folder(tmp_path: Path, make_store: Maker) -> None:
    """A read-only file in a read-only folder: SQLite cannot make the -wal/-shm files a
    WAL database needs even to read it, so opening is a ConfigurationError that says
    it cannot open the database (not a raw driver error at the first call)."""
    url, path, conv, _ = _closed_database(tmp_path)
    with read_only(path, path.parent), pytest.raises(errors.ConvotreeError) as info:
        make_store(url).tree(conv)
    assert isinstance(info.value, errors.ConfigurationError), repr(info.value)
    assert "cannot open" in str(info.value)


# --- SQLite: the write lock held beyond the busy timeout ---------------------------------

@pytest.mark.parametrize("call", ["append", "append_chain", "delete_subtree", "transaction",
                                  "create_conversation"])
def test_sqlite_locked_beyond_the_busy_timeout(
        tmp_path: Path, make_store: Maker, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    """Another process's connection holds ``BEGIN EXCLUSIVE`` for longer than the busy
    timeout (made small here: there is no option for it). A write is StoreBusy
    (retryable, documented), writes nothing, reads go on meanwhile (WAL), and once the
    lock is released the same store writes."""
    monkeypatch.setattr(convotree._engine, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "busy.db"
    url = f"sqlite:///{path}"
    convotree.migrate(url)
    store = make_store(url)
    conv, root = _conversation(store)
    top = store.append(conv, parent=root, role="user", content="top")
    before = snapshot(url)
    attempt: Callable[[], Any] = {
        "append": lambda: store.append(conv, parent=root, role="user", content="locked"),
        "append_chain": lambda: store.append_chain(root, _chain(3)),
        "delete_subtree": lambda: store.delete_subtree(top),
        "create_conversation": lambda: store.create_conversation(title="locked out"),
        "transaction": _in_transaction(store, lambda tx: tx.append(
            conv, parent=root, role="user", content="locked")),
    }[call]
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(errors.ConvotreeError) as info:
            attempt()
        assert [n.id for n in store.path(top)] == [root.id, top.id]
    finally:
        other.execute("ROLLBACK")
        other.close()
    _assert_typed(info.value, errors.StoreBusy, retryable=True)
    assert snapshot(url) == before
    made = store.append_chain(top, _chain(2))
    assert _ids(made) <= _node_ids(url)
