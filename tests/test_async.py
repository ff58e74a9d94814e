"""The async twins: the same surface as the sync ones, the drivers, SQLite's guarantees
under aiosqlite, and transactions the caller controls, on both shells and backends.

(The behaviour itself is tested by the store, context, summaries and chat tests, which
run every test body on both shells: ``TWINS = True`` there, see tests/twins.py.)
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

import convotree
from convotree import errors
from convotree._io import Twin
from tests import sql_audit
from tests.conftest import PostgresServer, _require, migrate_and_distribute, table_counts

TWINS = True


def _public(cls: type) -> dict[str, inspect.Signature]:
    """Public methods and their signatures (a twin's are those of the method it runs)."""
    found = {}
    for name in dir(cls):
        value = getattr(cls, name)
        if isinstance(value, Twin):
            value = value.method
        if not name.startswith("_") and callable(value):
            found[name] = inspect.signature(value)
    return found


@pytest.mark.parametrize(("sync", "asynchronous", "own"), [
    (convotree.Store, convotree.AsyncStore, {"open", "ready", "shared"}),
    (convotree.Chat, convotree.AsyncChat, {"shared"}),
])
def test_the_async_twins_have_every_method_with_the_same_arguments(
        sync: type, asynchronous: type, own: set[str]) -> None:
    sync_methods, async_methods = _public(sync), _public(asynchronous)
    assert set(sync_methods) <= set(async_methods)
    assert set(async_methods) - set(sync_methods) <= own
    for name, signature in sync_methods.items():
        theirs = async_methods[name]
        mine = [p for p in signature.parameters.values() if p.name != "self"]
        twin = [p for p in theirs.parameters.values() if p.name != "self"]
        assert [(p.name, p.kind, p.default) for p in mine] == [
            (p.name, p.kind, p.default) for p in twin], name
        if name not in ("bind", "transaction", "close", "stream", "stream_reply",
                            "with_tenant"):   # own words
            assert getattr(asynchronous, name).__doc__ == getattr(sync, name).__doc__, name
        assert inspect.iscoroutinefunction(getattr(asynchronous, name)) or isinstance(
            inspect.getattr_static(asynchronous, name), Twin) or name in (
            "transaction", "stream", "stream_reply",
            "with_tenant"), name   # no I/O: a plain method returning another shell


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_urls_select_the_async_drivers(tmp_path: Any) -> None:
    sqlite = convotree.create_async_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert sqlite.dialect.driver == "aiosqlite" and sqlite.dialect.is_async
    pg = convotree.create_async_engine("postgresql+psycopg://u@h/d")
    assert pg.dialect.driver in ("psycopg", "psycopg_async") and pg.dialect.is_async
    assert convotree.create_async_engine("postgresql://u@h/d").dialect.is_async
    assert convotree.create_async_engine("postgresql+asyncpg://u@h/d").dialect.driver == "asyncpg"
    # And the sync side takes the async URL as the same database.
    assert convotree.create_engine("sqlite+aiosqlite:///x.db").dialect.driver == "pysqlite"
    with pytest.raises(errors.ConfigurationError, match="SQLite and PostgreSQL"):
        convotree.create_async_engine("mysql+aiomysql://u@h/d")
    with pytest.raises(errors.ConfigurationError, match="AsyncEngine"):
        convotree.AsyncStore(convotree.create_engine(  # type: ignore[arg-type]
            f"sqlite:///{tmp_path / 'y.db'}"))


def test_an_async_sqlite_file_gets_a_queue_pool_on_every_sqlalchemy(tmp_path: Any) -> None:
    """SQLAlchemy before 2.0.38 gives aiosqlite files a NullPool, which refuses the
    pool keywords with a TypeError; convotree picks the queue pool itself, so the same
    keywords work on every supported release, and a keyword no pool takes is a
    ConfigurationError rather than a TypeError."""
    from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool, StaticPool

    sized = convotree.create_async_engine(f"sqlite:///{tmp_path / 'p.db'}", pool_size=2,
                                          max_overflow=0, pool_timeout=1)
    assert isinstance(sized.pool, AsyncAdaptedQueuePool) and sized.pool.size() == 2
    plain = convotree.create_async_engine(f"sqlite:///{tmp_path / 'q.db'}")
    assert isinstance(plain.pool, AsyncAdaptedQueuePool)
    chosen = convotree.create_async_engine(f"sqlite:///{tmp_path / 'r.db'}", poolclass=NullPool)
    assert isinstance(chosen.pool, NullPool)
    memory = convotree.create_async_engine("sqlite:///:memory:")
    assert isinstance(memory.pool, StaticPool)
    with pytest.raises(errors.ConfigurationError, match="cannot be made as asked"):
        convotree.create_async_engine("sqlite:///:memory:", pool_size=1)
    with pytest.raises(errors.ConfigurationError, match="cannot be made as asked"):
        convotree.create_engine(f"sqlite:///{tmp_path / 's.db'}", poolclass=NullPool,
                                pool_size=1)


def test_aiosqlite_keeps_every_sqlite_guarantee(tmp_path: Any) -> None:
    """Foreign keys on every pooled connection, WAL, the busy timeout, and real
    transactions (BEGIN when SQLAlchemy begins; BEGIN IMMEDIATE for writers)."""
    url = f"sqlite:///{tmp_path / 'a.db'}"

    async def check() -> None:
        async with convotree.AsyncStore(url, create=True) as store:
            engine = store.engine
            for _ in range(3):   # several pooled connections
                async with engine.connect() as conn:
                    pragmas = [(await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                               for name in ("foreign_keys", "journal_mode", "busy_timeout")]
                    assert pragmas == [1, "wal", 30_000]
            async with engine.connect() as conn, conn.begin():
                assert conn.in_transaction()
                raw = await conn.get_raw_connection()
                # sqlite3's own flag: a transaction is really open on the file.
                assert raw.driver_connection._conn.in_transaction
            conv = await store.create_conversation()
            with pytest.raises(errors.NodeNotFound):
                await store.append(conv, parent=uuid.uuid4(), role="user", content="x")
            # A foreign key the database itself enforces (not convotree's checks).
            async with engine.connect() as conn:
                with pytest.raises(sa.exc.IntegrityError):
                    async with conn.begin():
                        await conn.exec_driver_sql(
                            "INSERT INTO convotree_nodes (conversation_id, id, depth, kind, "
                            "role, token_count, overhead_tokens, encoding, created_at) VALUES "
                            f"('{uuid.uuid4().hex}', '{uuid.uuid4().hex}', 0, 'message', "
                            "'user', 0, 0, 'o200k_base', '2026-01-01 00:00:00')")
            # A writer takes the write lock when it begins: a second writer waits.
            async with store.transaction() as tx:
                await tx.append(conv, role="user", content="holding the lock")
                other = sa.create_engine(url, connect_args={"timeout": 0.2})
                with pytest.raises(sa.exc.OperationalError, match="locked"), \
                        other.connect() as plain:
                    plain.exec_driver_sql("BEGIN IMMEDIATE")
                other.dispose()

    with sql_audit.unaudited():
        _run(check())


@pytest.fixture
def app_table(db_url: str) -> Iterator[str]:
    """An application table beside convotree's, in the same database."""
    name = f"app_orders_{uuid.uuid4().hex[:8]}"
    engine = convotree.create_engine(db_url)
    with sql_audit.unaudited(), engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, note TEXT)")
    yield name
    with sql_audit.unaudited(), engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {name}")
    engine.dispose()


def _app_rows(store: Any, table: str) -> int:
    with sql_audit.unaudited(), store.engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_transaction_commits_or_rolls_back_everything(store: Any, outcome: str) -> None:
    conv = store.create_conversation()
    before = table_counts(store)
    try:
        with store.transaction() as tx:
            first = tx.append(conv, role="user", content="one")
            tx.append(conv, parent=first, role="assistant", content="two")
            assert len(tx.tree(conv)) == 2        # visible inside the transaction
            if outcome == "rollback":
                raise RuntimeError("the application changed its mind")
    except RuntimeError:
        pass
    after = table_counts(store)
    if outcome == "commit":
        assert after[1] == before[1] + 2 and len(store.tree(conv)) == 2
    else:
        assert after == before


def test_a_failed_call_inside_a_transaction_leaves_it_usable(store: Any) -> None:
    conv = store.create_conversation()
    with store.transaction() as tx:
        kept = tx.append(conv, role="user", content="kept")
        with pytest.raises(errors.NodeNotFound):
            tx.append(conv, parent=uuid.uuid4(), role="user", content="refused")
        tx.append(conv, parent=kept, role="assistant", content="also kept")
    assert [n.content for n in store.tree(conv)] == ["kept", "also kept"]


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_bind_joins_the_applications_transaction(store: Any, app_table: str, outcome: str,
                                                 shell: str, event_loop_thread: Any) -> None:
    """The application's row and two appends, in one transaction the application owns:
    committed together, rolled back together. Never committed by convotree."""
    conv = store.create_conversation()
    before = table_counts(store)

    def work(bound: Any, run: Any, conn: Any) -> None:
        first = bound.append(conv, role="user", content="order #1")
        bound.append(conv, parent=first, role="assistant", content="confirmed")
        run(conn.execute(sa.text(f"INSERT INTO {app_table} (id, note) VALUES (1, 'x')")))

    if shell == "sync":
        engine = store.engine
        with sql_audit.unaudited():
            conn = engine.connect().execution_options(convotree_write=True)
        with conn:
            conn.begin()
            work(store.bind(conn), lambda result: result, conn)
            assert conn.in_transaction()          # convotree did not commit
            conn.commit() if outcome == "commit" else conn.rollback()
    else:
        astore = store.target

        async def scenario() -> None:
            async with astore.engine.connect() as aconn:
                aconn = await aconn.execution_options(convotree_write=True)
                await aconn.begin()
                bound = await astore.bind(aconn)
                first = await bound.append(conv, role="user", content="order #1")
                await bound.append(conv, parent=first, role="assistant", content="confirmed")
                await aconn.execute(sa.text(f"INSERT INTO {app_table} (id, note) VALUES (1, 'x')"))
                assert aconn.in_transaction()
                await (aconn.commit() if outcome == "commit" else aconn.rollback())

        event_loop_thread.run(scenario())
    after = table_counts(store)
    if outcome == "commit":
        assert after[1] == before[1] + 2 and _app_rows(store, app_table) == 1
    else:
        assert after == before and _app_rows(store, app_table) == 0


def test_bind_takes_an_async_session_connection(store: Any, shell: str,
                                                event_loop_thread: Any) -> None:
    if shell == "sync":
        from sqlalchemy.orm import Session

        with Session(store.engine) as session:
            bound = store.bind(session.connection())
            conv = bound.create_conversation(title="in the session")
            session.commit()
        assert store.get_conversation(conv).title == "in the session"
        return
    astore = store.target

    async def scenario() -> uuid.UUID:
        async with AsyncSession(astore.engine) as session:
            bound = await astore.bind(await session.connection())
            conv = await bound.create_conversation(title="in the session")
            await session.commit()
            return conv.id

    conv_id = event_loop_thread.run(scenario())
    assert store.get_conversation(conv_id).title == "in the session"


def test_bind_refuses_what_it_cannot_use(store: Any, tmp_path: Any, shell: str,
                                         event_loop_thread: Any) -> None:
    if shell == "async":
        with pytest.raises(errors.ConfigurationError, match="AsyncConnection"):
            event_loop_thread.run(store.target.bind(object()))
        return
    with pytest.raises(errors.ConfigurationError, match="Connection"):
        store.bind(object())
    plain = sa.create_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    with plain.connect() as conn, pytest.raises(errors.ConfigurationError, match="create_engine"):
        store.bind(conn)
    plain.dispose()


def test_async_store_opens_lazily_and_refuses_a_missing_schema(
        backend: str, postgres: PostgresServer, tmp_path: Any) -> None:
    from tests.conftest import new_database_url

    url = new_database_url(backend, postgres, tmp_path)

    async def scenario() -> None:
        store = convotree.AsyncStore(url)          # nothing happens yet
        with pytest.raises(errors.SchemaOutOfDate):
            await store.list_conversations()
        await store.close()
        async with convotree.AsyncStore(url, create=True) as created:
            assert await created.list_conversations() == []
        opened = await convotree.AsyncStore.open(url)
        assert await opened.list_conversations() == []
        await opened.close()

    with sql_audit.unaudited():
        _run(scenario())


def test_asyncpg_is_accepted(postgres: PostgresServer) -> None:
    _require(postgres)
    created = postgres.create_database()
    with sql_audit.unaudited():
        migrate_and_distribute(created)
    url = sa.make_url(created).set(drivername="postgresql+asyncpg").render_as_string(False)

    async def scenario() -> None:
        async with convotree.AsyncStore(url, tenant=f"apg-{uuid.uuid4().hex}") as store:
            assert store.engine.dialect.driver == "asyncpg"
            conv = await store.create_conversation(title="asyncpg")
            root = await store.append(conv, role="system", content="Be brief.")
            ask = await store.append(conv, parent=root, role="user", content="Hi",
                                     metadata={"k": [1, 2]})
            answer = await store.append(conv, parent=ask, role="assistant", content="Hello",
                                        api_items=[{"type": "message", "role": "assistant"}])
            other = await store.edit(answer, "Hey")
            assert [n.content for n in await store.path(other)] == ["Be brief.", "Hi", "Hey"]
            assert (await store.node(conv, ask.id)).metadata == {"k": [1, 2]}
            ctx = await store.context(answer, model="gpt-4o", budget=30,
                                      summarizer=convotree.ExtractiveSummarizer())
            assert ctx.node_ids[-1] == answer.id and ctx.tokens <= 30
            assert len(await store.leaves(conv)) == 2
            assert await store.delete_subtree(other) == 1

    _run(scenario())


def test_the_async_audit_sees_the_async_statements(store: Any, shell: str) -> None:
    conv = store.create_conversation()
    with sql_audit.capture() as log:
        store.append(conv, role="user", content="hi")
    assert any("INSERT INTO convotree_nodes" in statement for statement in log)
    assert isinstance(store, convotree.Store) == (shell == "sync")


def test_an_async_client_on_the_sync_chat_is_a_clear_error(store: Any, shell: str) -> None:
    if shell == "async":
        return
    from convotree.testing import FakeOpenAI

    with FakeOpenAI() as server:
        chat = convotree.Chat(store, server.async_client(), model="gpt-4o-mini")
        conv = store.create_conversation()
        with pytest.raises(errors.ConfigurationError, match="AsyncChat"):
            chat.send(conv, "hi")

    class Later:
        name = "later"

        async def summarize(self, request: Any) -> Any:
            raise AssertionError("never awaited")

    leaf = None
    for turn in range(20):
        leaf = store.append(conv, parent=leaf, role="user" if turn % 2 else "assistant",
                            content=f"turn {turn}: a sentence of about ten words here")
    with pytest.raises(errors.ConfigurationError, match="AsyncStore"):
        store.context(leaf, model="gpt-4o", budget=120, summarizer=Later())



def test_no_connection_is_held_while_the_model_answers(db_url: str) -> None:
    """While the (slow) API answers, and while a (slow) tool runs, the store's pool has
    every connection checked in. Counted with pool events, which every pool class emits
    (older SQLAlchemy gives file SQLite under aiosqlite a NullPool, with no ``checkedout``)."""
    from sqlalchemy import event

    from convotree.testing import FakeOpenAI, Reply

    async def scenario() -> list[int]:
        seen: list[int] = []
        with FakeOpenAI(delay=0.3) as server:
            async with convotree.AsyncStore(db_url, tenant=f"pool-{uuid.uuid4().hex}") as store:
                chat = convotree.AsyncChat(store, server.async_client(), model="gpt-4o-mini")
                conv = await store.create_conversation()
                pool = store.engine.sync_engine.pool
                held, checkouts = [0], [0]

                def out(*_: Any) -> None:
                    held[0] += 1
                    checkouts[0] += 1

                def back(*_: Any) -> None:
                    held[0] -= 1

                event.listen(pool, "checkout", out)
                event.listen(pool, "checkin", back)

                async def watch() -> None:
                    while not server.calls:            # until the request is in flight
                        await asyncio.sleep(0.01)
                    await asyncio.sleep(0.05)          # the server holds it 0.3 s
                    seen.append(held[0])

                await asyncio.gather(chat.send(conv, "hello"), watch())

                async def slow_tool(city: str) -> str:
                    seen.append(held[0])
                    return "sunny"

                server.delay = 0.0
                server.script(Reply(tool_calls=(("c1", "weather", '{"city": "Lisbon"}'),)),
                              Reply(text="Sunny."))
                await chat.run_tools(conv, "Weather?", {"weather": slow_tool})
                seen.append(held[0])
                assert checkouts[0] >= 4       # the events were really counting the writes
        return seen

    with sql_audit.unaudited():
        assert asyncio.run(scenario()) == [0, 0, 0]
