"""``convotree.distribute`` and ``convotree db distribute`` (docs/scale-out.md).

Always: the schema rules that make distribution possible (every key of every table
carries the distribution column), and what ``distribute`` refuses: SQLite, and a
PostgreSQL database without the citus extension, which it leaves exactly as it was.

In the Citus mode of the suite (``CONVOTREE_TEST_CITUS_WORKERS``, ``make test-citus``)
also, on fresh databases of the real cluster: distributing a database that already
holds conversations (co-located, keys enforced per shard, rows moved off the
coordinator, idempotent), refusing a table Citus holds another way without changing
anything, every migration after 0001 running on distributed tables, up and down,
``context()`` as a single-shard plan (``Task Count: 1``), and what the reporting views
do on a distributed database.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import convotree
from convotree import _citus
from convotree._schema import metadata
from convotree.errors import ConfigurationError, InvalidArgument
from tests import sql_audit
from tests.conftest import CITUS_WORKERS, PostgresServer, _require
from tests.test_cli_support import run_cli

# --- always ---------------------------------------------------------------------------------

#: The single-shard current-branch walk of docs/scale-out.md (test_the_documented_walk
#: keeps the two equal): the conversation id in the anchor and in the recursive member.
CURRENT_BRANCH_WALK = """
WITH RECURSIVE branch AS (
     SELECT n.id, n.parent_id, n.depth FROM convotree_nodes n
       JOIN convotree_conversations c ON c.id = n.conversation_id AND n.id = c.current_node_id
      WHERE n.conversation_id = :conversation_id AND c.id = :conversation_id
     UNION ALL
     SELECT p.id, p.parent_id, p.depth FROM branch b
       JOIN convotree_nodes p ON p.id = b.parent_id
      WHERE p.conversation_id = :conversation_id)
SELECT id, depth FROM branch ORDER BY depth"""


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url)


def _query(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = _engine(url)
    try:
        with sql_audit.unaudited(), engine.begin() as conn:
            result = conn.execute(sa.text(sql), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _build(store: convotree.Store) -> dict[str, Any]:
    conv = store.create_conversation(title="before distribution")
    root = store.append(conv, role="system", content="Be brief.")
    ask = store.append(conv, parent=root, role="user", content="Plan a trip to Lisbon")
    long = store.append(conv, parent=ask, role="assistant", content="Three days.")
    short = store.edit(long, "Two days.")
    more = store.append(conv, parent=long, role="user", content="Add a food tour")
    return {"conv": conv, "root": root, "ask": ask, "long": long, "short": short,
            "more": more}


@pytest.mark.parametrize("table", metadata.sorted_tables, ids=lambda t: t.name)
def test_every_key_carries_the_distribution_column(table: sa.Table) -> None:
    column = _citus.distribution_column(table)
    assert column in table.primary_key.columns
    for index in table.indexes:
        if index.unique:
            assert column in [c.name for c in index.columns], index.name
    for key in table.foreign_key_constraints:
        target = key.referred_table
        pairs = {element.parent.name: element.column.name for element in key.elements}
        # The distribution column points at the target's distribution column: both
        # ends of every key are on the same shard.
        assert pairs.get(column) == _citus.distribution_column(target), key.name


def test_distribute_refuses_sqlite(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    convotree.migrate(url)
    with pytest.raises(ConfigurationError, match="Citus is a PostgreSQL extension"):
        convotree.distribute(url)
    result = run_cli("db", "distribute", "--url", url)
    assert result.code == 1
    assert "Citus is a PostgreSQL extension" in result.err


def _schema_snapshot(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with sql_audit.unaudited(), engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT c.relname, c.relkind, k.conname, pg_get_constraintdef(k.oid) "
                "FROM pg_class c LEFT JOIN pg_constraint k ON k.conrelid = c.oid "
                "WHERE c.relname LIKE 'convotree%' ORDER BY 1, 3"))]
    finally:
        engine.dispose()


@pytest.fixture
def plain_postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A migrated PostgreSQL database without the citus extension (also in the Citus
    mode: made on the coordinator directly, never joined to the cluster)."""
    _require(postgres)
    assert postgres.admin is not None
    name = f"convotree_plain_{uuid.uuid4().hex[:12]}"
    with postgres.admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres.url.set(database=name).render_as_string(hide_password=False)
    convotree.migrate(url)
    yield url
    with postgres.admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_distribute_refuses_postgresql_without_citus_and_changes_nothing(
        plain_postgres_url: str) -> None:
    store = convotree.Store(plain_postgres_url)
    conv = store.create_conversation(title="kept")
    store.append(conv, role="user", content="still here")
    store.close()
    before = _schema_snapshot(plain_postgres_url)
    with pytest.raises(ConfigurationError, match=r"citus.*nothing was changed"):
        convotree.distribute(plain_postgres_url)
    result = run_cli("db", "distribute", "--url", plain_postgres_url)
    assert result.code == 1
    assert "citus" in result.err
    assert "nothing was changed" in result.err
    assert _schema_snapshot(plain_postgres_url) == before
    store = convotree.Store(plain_postgres_url)
    assert [n.content for n in store.path(store.current(conv))] == ["still here"]
    store.close()


def test_distribute_refuses_a_bad_shard_count(plain_postgres_url: str) -> None:
    for bad in (0, -3, True, "8", 64_001):
        with pytest.raises(InvalidArgument, match="shard_count"):
            convotree.distribute(plain_postgres_url, shard_count=bad)  # type: ignore[arg-type]


def test_distribute_needs_a_current_schema_on_citus_only(postgres: PostgresServer) -> None:
    """Without citus the missing extension is named first, whatever the schema."""
    _require(postgres)
    url = postgres.create_database()
    if CITUS_WORKERS:
        with pytest.raises(convotree.errors.SchemaOutOfDate, match="no convotree schema"):
            convotree.distribute(url)
    else:
        with pytest.raises(ConfigurationError, match="citus"):
            convotree.distribute(url)


def test_the_documented_walk(migrated_urls: dict[str, str], postgres: PostgresServer) -> None:
    """docs/scale-out.md's current-branch walk answers like ``Store.path`` (on plain
    PostgreSQL here; in the Citus mode it is the single-shard form Citus accepts)."""
    _require(postgres)
    url = migrated_urls["postgresql"]
    store = convotree.Store(url)
    made = _build(store)
    store.close()
    branch = _query(url, CURRENT_BRANCH_WALK, conversation_id=made["conv"].id)
    assert [r[0] for r in branch] == [
        made["root"].id, made["ask"].id, made["long"].id, made["more"].id]
    doc = (Path(__file__).parents[1] / "docs" / "scale-out.md").read_text(encoding="utf-8")
    assert CURRENT_BRANCH_WALK.strip() in doc


# --- on a real Citus cluster ---------------------------------------------------------------

if CITUS_WORKERS:

    def _migrated(postgres: PostgresServer) -> str:
        """A fresh database of the cluster, migrated, not distributed."""
        url = postgres.create_database()
        convotree.migrate(url)
        return url

    def _placement(url: str) -> dict[str, tuple[str, str, int]]:
        rows = _query(url, "SELECT logicalrelid::text, partmethod, "
                           "column_to_column_name(logicalrelid, partkey), colocationid "
                           "FROM pg_dist_partition")
        return {name: (method, column, group) for name, method, column, group in rows}

    ALL_TABLES = [t.name for t in _citus._tables()]

    def test_distribute_a_database_with_conversations(postgres: PostgresServer) -> None:
        url = _migrated(postgres)
        store = convotree.Store(url)
        made = _build(store)
        store.close()

        done = convotree.distribute(url, shard_count=6)
        assert done.changed
        assert set(done.distributed) == set(ALL_TABLES)
        assert done.already == ()
        assert done.shard_count == 6
        placement = _placement(url)
        assert set(placement) == set(ALL_TABLES)
        groups = {group for _, _, group in placement.values()}
        assert len(groups) == 1, "every table in one co-location group"
        for table in _citus._tables():
            assert placement[table.name][:2] == ("h", _citus.distribution_column(table))
        # The mutual foreign key is back, with its definition.
        keys = _query(url, "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                           "WHERE conrelid = 'convotree_conversations'::regclass "
                           "AND contype = 'f'")
        assert keys == [("fk_convotree_conversations_id_current_node_id",
                         "FOREIGN KEY (id, current_node_id) REFERENCES "
                         "convotree_nodes(conversation_id, id)")]
        # The rows live on the shards now, not in the coordinator's local tables.
        assert _query(url, "SELECT pg_relation_size('convotree_nodes')") == [(0,)]

        store = convotree.Store(url)
        assert [n.content for n in store.path(made["more"])] == [
            "Be brief.", "Plan a trip to Lisbon", "Three days.", "Add a food tour"]
        assert store.current(made["conv"]).id == made["more"].id
        assert len(store.leaves(made["conv"])) == 2
        added = store.append(made["conv"], parent=made["short"], role="user", content="ok")
        assert store.context(added, model="gpt-4o-mini").messages[-1]["content"] == "ok"
        store.close()

        again = convotree.distribute(url)
        assert not again.changed
        assert set(again.already) == set(ALL_TABLES)
        result = run_cli("db", "distribute", "--url", url)
        assert result.code == 0
        assert "already distributed" in result.out

    def test_keys_are_enforced_per_shard_after_distributing(postgres: PostgresServer) -> None:
        url = _migrated(postgres)
        convotree.distribute(url)
        store = convotree.Store(url)
        made = _build(store)
        other = store.create_conversation(title="other")
        store.close()
        engine = _engine(url)
        try:
            with sql_audit.unaudited():
                # The current node must be a node of the same conversation.
                with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
                    conn.execute(sa.text(
                        "UPDATE convotree_conversations SET current_node_id = :n "
                        "WHERE id = :c"), {"n": made["more"].id, "c": other.id})
                # A parent in another conversation is impossible.
                with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
                    conn.execute(sa.text(
                        "INSERT INTO convotree_nodes (conversation_id, id, parent_id, depth, "
                        "kind, role, content, token_count, overhead_tokens, encoding, "
                        "created_at) VALUES (:c, gen_random_uuid(), :p, 1, 'message', "
                        "'user', 'x', 1, 1, 'o200k_base', now())"),
                        {"c": other.id, "p": made["ask"].id})
        finally:
            engine.dispose()

    def test_refuses_a_table_held_another_way_and_changes_nothing(
            postgres: PostgresServer) -> None:
        url = _migrated(postgres)
        _query(url, "SELECT create_reference_table('convotree_pydantic_ai_names')")
        with pytest.raises(ConfigurationError, match="reference table"):
            convotree.distribute(url)
        assert set(_placement(url)) == {"convotree_pydantic_ai_names"}
        assert len(_query(url, "SELECT 1 FROM pg_constraint WHERE conname = "
                               "'fk_convotree_conversations_id_current_node_id'")) == 1

    def test_row_level_security_and_distribution_exclude_each_other(
            postgres: PostgresServer) -> None:
        """Citus supports no policy that reads another table (convotree's node policy
        reads the conversation's tenant): each refuses the other, changing nothing."""
        secured = postgres.create_database()
        convotree.migrate(secured)
        convotree.enable_row_level_security(secured)
        with pytest.raises(ConfigurationError, match="disable-rls"):
            convotree.distribute(secured)
        assert _placement(secured) == {}
        distributed = postgres.create_database()
        convotree.migrate(distributed)
        convotree.distribute(distributed)
        with pytest.raises(ConfigurationError, match="distributed by Citus"):
            convotree.enable_row_level_security(distributed)
        assert _query(distributed, "SELECT count(*) FROM pg_class WHERE relrowsecurity "
                                   "AND relname LIKE 'convotree%'") == [(0,)]

    def test_a_table_distributed_before_the_conversations_is_refused(
            postgres: PostgresServer) -> None:
        url = _migrated(postgres)
        _query(url, "SELECT create_distributed_table('convotree_pydantic_ai_names', "
                    "'conversation_id', shard_count => 4, colocate_with => 'none')")
        with pytest.raises(ConfigurationError, match="cannot be co-located"):
            convotree.distribute(url)
        assert set(_placement(url)) == {"convotree_pydantic_ai_names"}

    def test_tables_distributed_by_hand_get_the_distributed_views(
            postgres: PostgresServer) -> None:
        url = _migrated(postgres)
        engine = _engine(url)
        with sql_audit.unaudited(), engine.begin() as conn:
            _citus.distribute_tables(conn)          # the tables only, not the views
        engine.dispose()
        with pytest.raises(sa.exc.DBAPIError, match="recursive CTEs"):
            _query(url, "SELECT count(*) FROM convotree_messages")
        done = convotree.distribute(url)
        assert not done.changed
        assert _query(url, "SELECT count(*) FROM convotree_messages") == [(0,)]

    def test_an_application_key_into_convotree_is_refused_first(
            postgres: PostgresServer) -> None:
        url = _migrated(postgres)
        _query(url, "CREATE TABLE app_tags (conversation_id uuid REFERENCES "
                    "convotree_conversations (id), tag text)")
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with pytest.raises(ConfigurationError,
                               match=r"app_tags\.app_tags_conversation_id_fkey"):
                convotree.distribute(engine)
        finally:
            engine.dispose()
        assert _placement(url) == {}
        assert len(_query(url, "SELECT 1 FROM pg_constraint WHERE conname = "
                               "'fk_convotree_conversations_id_current_node_id'")) == 1

    def test_convotree_gets_a_colocation_group_of_its_own(postgres: PostgresServer) -> None:
        url = _migrated(postgres)
        _query(url, "CREATE TABLE app_events (id uuid PRIMARY KEY)")
        _query(url, "SELECT create_distributed_table('app_events', 'id')")
        convotree.distribute(url)
        groups = {name: group for name, (_, _, group) in _placement(url).items()}
        assert len({groups[name] for name in ALL_TABLES}) == 1
        assert groups["app_events"] != groups["convotree_conversations"]

    def test_a_different_shard_count_later_is_refused(postgres: PostgresServer) -> None:
        url = _migrated(postgres)
        convotree.distribute(url, shard_count=4)
        with pytest.raises(ConfigurationError, match="already distributed with 4 shards"):
            convotree.distribute(url, shard_count=8)
        assert convotree.distribute(url, shard_count=4).shard_count == 4

    def test_a_database_without_workers_is_refused(postgres: PostgresServer) -> None:
        assert postgres.admin is not None
        name = f"convotree_noworkers_{uuid.uuid4().hex[:8]}"
        with postgres.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        postgres.created.append(name)
        url = postgres.url.set(database=name).render_as_string(hide_password=False)
        _query(url, "CREATE EXTENSION citus")
        convotree.migrate(url)
        with pytest.raises(ConfigurationError, match="no worker to hold the shards"):
            convotree.distribute(url)
        assert _placement(url) == {}

    def test_a_worker_is_refused(postgres: PostgresServer) -> None:
        url = postgres.create_database()
        host, _, port = CITUS_WORKERS[0].rpartition(":")
        worker = sa.make_url(url).set(host=host, port=int(port)).render_as_string(
            hide_password=False)
        with pytest.raises(ConfigurationError, match="worker"):
            convotree.distribute(worker)

    def test_every_migration_after_the_first_runs_on_distributed_tables(
            postgres: PostgresServer) -> None:
        url = postgres.create_database()
        convotree.migrate(url, "0001")
        engine = _engine(url)
        with sql_audit.unaudited(), engine.begin() as conn:
            assert _citus.distribute_tables(conn) == [
                "convotree_conversations", "convotree_nodes"]
        engine.dispose()
        store_url = url
        convotree.migrate(store_url)           # 0002 ... head on distributed tables
        assert set(_placement(url)) == set(ALL_TABLES), "new tables follow"
        store = convotree.Store(url)
        made = _build(store)
        store.close()
        convotree.downgrade(url, "0001")
        assert set(_placement(url)) == {"convotree_conversations", "convotree_nodes"}
        convotree.migrate(url)
        assert set(_placement(url)) == set(ALL_TABLES)
        store = convotree.Store(url)
        assert [n.content for n in store.path(made["short"])][-1] == "Two days."
        store.close()
        # The views came back in their distributed form.
        rows = _query(url, "SELECT on_current_branch FROM convotree_messages "
                           "WHERE conversation_id = :c", c=made["conv"].id)
        assert rows and {r[0] for r in rows} == {None}
        assert not convotree.distribute(url).changed

    #: Calls whose every statement must be single-shard (docs/scale-out.md's table).
    SINGLE_SHARD: dict[str, Callable[[convotree.Store, dict[str, Any]], object]] = {
        "context": lambda s, m: s.context(m["more"], model="gpt-4o-mini"),
        "append": lambda s, m: s.append(m["conv"], parent=m["more"], role="assistant",
                                        content="sure"),
        "edit": lambda s, m: s.edit(m["long"], "One day."),
        "append_chain": lambda s, m: s.append_chain(m["short"], [
            {"role": "user", "content": "and?"}, {"role": "assistant", "content": "so."}]),
        "delete_subtree": lambda s, m: s.delete_subtree(m["short"]),
        "path": lambda s, m: s.path(m["more"]),
        "tail": lambda s, m: s.tail(m["more"], 2),
        "tree": lambda s, m: s.tree(m["conv"]),
        "leaves": lambda s, m: s.leaves(m["conv"]),
        "current": lambda s, m: s.current(m["conv"]),
    }

    @pytest.mark.parametrize("call", list(SINGLE_SHARD))
    def test_per_conversation_calls_are_single_shard_plans(
            migrated_urls: dict[str, str], call: str) -> None:
        store = convotree.Store(migrated_urls["postgresql"])
        made = _build(store)
        engine = store.engine
        sent: list[tuple[str, Any]] = []

        def keep(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                 executemany: bool) -> None:
            if re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", statement):
                sent.append((statement, parameters))

        sa.event.listen(engine, "before_cursor_execute", keep)
        try:
            SINGLE_SHARD[call](store, made)
        finally:
            sa.event.remove(engine, "before_cursor_execute", keep)
        assert sent
        for statement, parameters in sent:
            with sql_audit.unaudited(), engine.connect() as conn:
                plan = "\n".join(str(r[0]) for r in conn.exec_driver_sql(
                    f"EXPLAIN (COSTS OFF) {statement}", parameters))
                conn.rollback()
            counts = re.findall(r"Task Count: (\d+)", plan)
            assert counts and set(counts) == {"1"}, plan
            assert "pull to coordinator" not in plan, plan
            if call == "context":
                assert len(sent) == 1 and "Custom Scan (Citus Adaptive)" in plan
        store.close()

    def test_reporting_views_on_a_distributed_database(migrated_urls: dict[str, str]) -> None:
        db_url = migrated_urls["postgresql"]
        store = convotree.Store(db_url)
        made = _build(store)
        store.close()
        conv = made["conv"].id
        messages = _query(db_url, "SELECT count(*), count(on_current_branch), "
                                  "sum(CASE WHEN is_regeneration THEN 1 ELSE 0 END) "
                                  "FROM convotree_messages WHERE conversation_id = :c", c=conv)
        assert messages == [(5, 0, 1)]
        stats = _query(db_url, "SELECT messages, branches, regenerations FROM "
                               "convotree_conversation_stats WHERE conversation_id = :c", c=conv)
        assert stats == [(5, 2, 1)]
        with pytest.raises(sa.exc.DBAPIError, match="recursive CTEs"):
            _query(db_url, "SELECT id FROM convotree_current_branch WHERE conversation_id = :c",
                   c=conv)
        # docs/scale-out.md: the walk with the id in both halves is one shard's query.
        branch = _query(db_url, CURRENT_BRANCH_WALK, conversation_id=conv)
        assert [r[0] for r in branch] == [
            made["root"].id, made["ask"].id, made["long"].id, made["more"].id]
