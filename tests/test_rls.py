"""PostgreSQL row-level security for the tenants (``convotree._rls``).

Everything here runs in databases this module creates (``convotree_rls_<random>``) and
drops at the end, as a NON-superuser login role it creates and drops too (the local
server trusts 127.0.0.1, so the role connects without a password): the way an
application is meant to run under row-level security. The shared test database is
never touched. On a run without PostgreSQL the cases skip the way every PostgreSQL case
does (loudly; a failure under ``CONVOTREE_REQUIRE_POSTGRES=1``).

Besides convotree's five reporting views (migration 0006), the module makes two more
``convotree_*`` views (one over the tables, one over the other view), owned by the
superuser, to stand for views people add themselves: without ``security_invoker`` any
of them would show every tenant's rows to anyone who may read them. Every check of
"what a tenant sees" adds to ``LEDGER``; the last test prints the figures and demands
zero rows of another tenant.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import convotree
from convotree import _rls, _views, reporting
from convotree.errors import ConfigurationError, ConversationExists, NotFound
from tests import sql_audit
from tests.conftest import PG_URL, PostgresServer, _require
from tests.test_cli_support import exempt_reporting, run_cli

TENANTS = ("a", "b")
VIEWS = {
    "convotree_probe_sizes": (
        "SELECT c.tenant_id, c.id AS conversation_id, count(n.id) AS nodes, "
        "coalesce(sum(n.token_count), 0) AS tokens FROM convotree_conversations c "
        "LEFT JOIN convotree_nodes n ON n.conversation_id = c.id GROUP BY c.tenant_id, c.id"),
    "convotree_probe_tenants": (
        "SELECT tenant_id, count(*) AS conversations, sum(nodes) AS nodes "
        "FROM convotree_probe_sizes GROUP BY tenant_id"),
}
#: The migrations' views (in every database here), and those with the probes, by name.
OUR_VIEWS = tuple(sorted(view.name for view in _views.VIEWS))
ALL_VIEWS = tuple(sorted({*VIEWS, *OUR_VIEWS}))


# --- the figures --------------------------------------------------------------------------


@dataclass
class Ledger:
    """Every isolation check of the module: how many, rows seen, rows of another tenant."""

    checks: int = 0
    rows: int = 0
    foreign: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def saw(self, kind: str, seen: Iterable[Any], *, foreign: Iterable[Any]) -> set[Any]:
        seen = set(seen)
        crossed = seen & set(foreign)
        self.checks += 1
        self.rows += len(seen)
        self.foreign += len(crossed)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        assert not crossed, f"{kind}: {len(crossed)} rows of another tenant"
        return seen

    def refused(self, kind: str, call: Callable[[], Any]) -> None:
        """A call on another tenant's id: NotFound, or nothing at all."""
        try:
            result = call()
        except NotFound:
            result = []
        self.saw(kind, result if isinstance(result, list) else [result], foreign=[result]
                 if not isinstance(result, list) else result)


LEDGER = Ledger()


# --- the databases ------------------------------------------------------------------------


@dataclass
class Built:
    """What one tenant wrote, through the application role."""

    main: convotree.Conversation
    small: convotree.Conversation
    root: convotree.Node
    leaf: convotree.Node
    summary: convotree.Node
    conversations: set[uuid.UUID] = field(default_factory=set)
    nodes: set[uuid.UUID] = field(default_factory=set)
    main_nodes: set[uuid.UUID] = field(default_factory=set)


@dataclass
class World:
    server: PostgresServer
    tag: str
    roles: dict[str, str]               # app, bypass, member, owner -> role name
    databases: list[str] = field(default_factory=list)
    built: dict[str, Built] = field(default_factory=dict)

    def url(self, database: str, user: str | None = None, password: str | None = None
            ) -> str:
        base = make_url(PG_URL).set(database=database)
        if user is not None:
            base = base.set(username=user, password=password)
        return base.render_as_string(hide_password=False)

    @property
    def main(self) -> str:
        return self.databases[0]

    @property
    def admin_url(self) -> str:
        return self.url(self.main)

    @property
    def app_url(self) -> str:
        return self.url(self.main, self.roles["app"])

    def new_database(self, suffix: str) -> str:
        assert self.server.admin is not None
        name = f"convotree_rls_{self.tag}_{suffix}"
        with self.server.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        self.databases.append(name)
        convotree.migrate(self.url(name))
        return name


def build(store: convotree.Store) -> Built:
    """A conversation with branches, a tool round, a summary, usage; and a small one."""
    tenant = store.tenant
    main = store.create_conversation(title=f"{tenant} main", metadata={"of": tenant})
    root = store.append(main, role="system", content="Be brief.")
    ask = store.append(main, parent=root, role="user", content=f"A question of {tenant}")
    first = store.append(main, parent=ask, role="assistant", content="An answer",
                         model="gpt-4o", input_tokens=20, output_tokens=3)
    second = store.edit(first, "Another answer", input_tokens=20, output_tokens=4)
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    asked = store.append(main, parent=second, role="assistant", tool_calls=calls,
                         model="gpt-4o")
    result = store.append(main, parent=asked, role="tool", tool_call_id="c1", content="42")
    chain = store.append_chain(result, [{"role": "assistant", "content": "It is 42."},
                                        {"role": "user", "content": "Thanks!"}])
    summary = store.add_summary(chain[0], f"{tenant} asked; it is 42.")
    store.update_conversation(main, title=f"{tenant} main (renamed)")
    small = store.create_conversation(title=f"{tenant} small")
    store.append(small, role="user", content="hello")
    built = Built(main=store.get_conversation(main), small=store.get_conversation(small),
                  root=root, leaf=chain[-1], summary=summary)
    built.main_nodes = {n.id for n in store.tree(main)}
    built.nodes = built.main_nodes | {n.id for n in store.tree(small)}
    built.conversations = {main.id, small.id}
    return built


@pytest.fixture(scope="module")
def world(postgres: PostgresServer) -> Iterator[World]:
    _require(postgres)
    assert postgres.admin is not None
    tag = uuid.uuid4().hex[:10]
    roles = {kind: f"convotree_rls_{kind}_{tag}" for kind in ("app", "bypass", "member",
                                                              "owner")}
    made = World(postgres, tag, roles)
    try:
        with sql_audit.unaudited():
            with postgres.admin.connect() as conn:
                conn.execute(sa.text(f'CREATE ROLE "{roles["app"]}" LOGIN'))
                conn.execute(sa.text(f'CREATE ROLE "{roles["bypass"]}" LOGIN BYPASSRLS'))
                conn.execute(sa.text(f'CREATE ROLE "{roles["member"]}" LOGIN'))
                conn.execute(sa.text(f'GRANT "{roles["bypass"]}" TO "{roles["member"]}"'))
                conn.execute(sa.text(f'CREATE ROLE "{roles["owner"]}" LOGIN'))
            made.new_database("main")
            with sa.create_engine(made.admin_url).begin() as conn:
                for name, body in VIEWS.items():
                    conn.execute(sa.text(f"CREATE VIEW {name} AS {body}"))
            done = _rls.enable_row_level_security(made.admin_url, role=roles["app"])
            assert done.views == ALL_VIEWS
            for tenant in TENANTS:
                with convotree.Store(made.app_url, tenant=tenant) as store:
                    made.built[tenant] = build(store)
            # Rows of the empty tenant, written by the superuser (whom nothing filters).
            with convotree.Store(made.admin_url) as store:
                loose = store.create_conversation(title="nobody's")
                store.append(loose, role="user", content="of the empty tenant")
        yield made
    finally:
        with sql_audit.unaudited(), postgres.admin.connect() as conn:
            for name in made.databases:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            for role in (roles["member"], roles["bypass"], roles["owner"], roles["app"]):
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))


@pytest.fixture(scope="module")
def spare(world: World) -> str:
    """A second database (superuser-written rows of a and b) for enabling, disabling and
    refusals, so the main one stays as built."""
    with sql_audit.unaudited():
        name = world.new_database("spare")
        for tenant in TENANTS:
            with convotree.Store(world.url(name), tenant=tenant) as store:
                conv = store.create_conversation(title=tenant)
                store.append(conv, role="user", content=f"of {tenant}")
    return name


@pytest.fixture
def stores(world: World) -> Iterator[dict[str, convotree.Store]]:
    opened = {tenant: convotree.Store(world.app_url, tenant=tenant) for tenant in TENANTS}
    yield opened
    for store in opened.values():
        store.close()


def other(tenant: str) -> str:
    return "b" if tenant == "a" else "a"


# --- raw SQL, the way people write it -----------------------------------------------------


def raw(conn: sa.Connection, statement: str, params: dict[str, Any] | None = None
        ) -> list[tuple[Any, ...]]:
    with sql_audit.unaudited():
        result = conn.execute(sa.text(statement), params or {})
        return [tuple(row) for row in result] if result.returns_rows else []


def scope(conn: sa.Connection, tenant: str) -> None:
    """What a person's SQL does: SET LOCAL, in the function form."""
    raw(conn, "SELECT set_config('convotree.tenant', :t, true)", {"t": tenant})


def everything(conn: sa.Connection) -> dict[str, set[Any]]:
    """Every row id and tenant the connection can see, in the tables and the views."""
    seen = {
        "conversations": {r[0] for r in raw(conn, "SELECT id FROM convotree_conversations")},
        "tenants": {r[0] for r in raw(conn, "SELECT tenant_id FROM convotree_conversations")},
        "nodes": {r[0] for r in raw(conn, "SELECT id FROM convotree_nodes")},
        "view sizes": {r[0] for r in raw(conn, "SELECT conversation_id FROM "
                                               "convotree_probe_sizes")},
        "view tenants": {r[0] for r in raw(conn, "SELECT tenant_id FROM "
                                                 "convotree_probe_tenants")},
    }
    for view in convotree_views(conn):
        seen[f"rows of {view}"] = {repr(r) for r in raw(conn, f"SELECT * FROM {view}")}
    return seen


def convotree_views(conn: sa.Connection) -> list[str]:
    """Every convotree view in the database: the probes and any the migrations make."""
    return [r[0] for r in raw(conn, "SELECT c.oid::regclass::text FROM pg_class c "
                                    "WHERE c.relkind = 'v' AND c.relname LIKE 'convotree%' "
                                    "ORDER BY 1")]


def foreign_ids(world: World, tenant: str) -> set[Any]:
    """Ids and tenant names that the tenant must never see."""
    theirs = world.built[other(tenant)]
    return theirs.conversations | theirs.nodes | {other(tenant), ""}


# --- the rules themselves (no database) ---------------------------------------------------


def test_every_table_of_the_schema_has_a_policy() -> None:
    rules = _rls.policies()
    assert set(rules) == set(convotree._schema.metadata.tables)
    assert rules["convotree_conversations"] == f"tenant_id = {_rls.TENANT_EXPRESSION}"
    # Nodes through their conversation, one primary-key probe per row.
    assert rules["convotree_nodes"].startswith(
        "(SELECT o.tenant_id FROM convotree_conversations o WHERE o.id = "
        "convotree_nodes.conversation_id)")
    assert "nullif(current_setting('convotree.tenant', true), '')" in _rls.TENANT_EXPRESSION


def test_a_table_no_rule_covers_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    grown = sa.MetaData()
    for table in convotree._schema.metadata.tables.values():
        table.to_metadata(grown)
    sa.Table("convotree_tags", grown, sa.Column("conversation_id", sa.Uuid()),
             sa.Column("tag", sa.Text()),
             sa.ForeignKeyConstraint(["conversation_id"], ["convotree_conversations.id"]))
    monkeypatch.setattr(_rls, "metadata", grown)
    assert "o.id = convotree_tags.conversation_id" in _rls.policies()["convotree_tags"]
    sa.Table("convotree_settings", grown, sa.Column("key", sa.Text(), primary_key=True))
    with pytest.raises(ConfigurationError, match="convotree_settings"):
        _rls.policies()


def test_the_migration_lock_is_the_one_migrations_take() -> None:
    from pathlib import Path

    env = (Path(__file__).resolve().parents[1] / "migrations" / "env.py").read_text()
    assert "from convotree._revision import MIGRATION_LOCK_KEY" in env
    assert "pg_advisory_xact_lock(:key)" in env and '{"key": MIGRATION_LOCK_KEY}' in env
    # enable-rls takes it through the shared helper (and distribute too, in _citus)
    assert "lock_schema(conn, LOCK_TIMEOUT)" in Path(_rls.__file__).read_text()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_is_refused_and_untouched(backend: str, db_url: str, tmp_path: Any) -> None:
    missing = tmp_path / "never.db"
    for call in (_rls.enable_row_level_security, _rls.disable_row_level_security):
        with pytest.raises(ConfigurationError, match="PostgreSQL feature"):
            call(f"sqlite:///{missing}")
    assert not missing.exists()
    engine = convotree.create_engine(db_url)
    with pytest.raises(ConfigurationError, match="PostgreSQL feature"):
        _rls.enable_row_level_security(engine)
    # Stores on SQLite send nothing for row-level security; the empty tenant works.
    sent: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    with convotree.Store(engine) as store:
        store.list_conversations()
    assert _rls.known_inactive(engine)
    assert sent and not [s for s in sent if "set_config" in s or "relrowsecurity" in s]
    engine.dispose()


# --- enabling -----------------------------------------------------------------------------


def _catalog(conn: sa.Connection) -> list[tuple[Any, ...]]:
    """Security of every convotree table and view (pg_get_expr locks the tables it
    reads: the transaction ends here, or an ACCESS EXCLUSIVE lock would wait for it)."""
    found = raw(conn, """
        SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
               (SELECT array_agg(p.polname || ':' || p.polcmd::text || ':' ||
                                 pg_get_expr(p.polqual, p.polrelid) || ':' ||
                                 pg_get_expr(p.polwithcheck, p.polrelid) ORDER BY p.polname)
                  FROM pg_policy p WHERE p.polrelid = c.oid),
               c.reloptions
          FROM pg_class c WHERE c.relname LIKE 'convotree%' AND c.relkind IN ('r', 'v')
         ORDER BY 1""")
    conn.rollback()
    return found


def test_enable_sets_policies_force_views_and_grants_idempotently(world: World) -> None:
    app = world.roles["app"]
    engine = sa.create_engine(world.admin_url)
    with engine.connect() as conn:
        before = _catalog(conn)
        again = _rls.enable_row_level_security(world.admin_url, role=app)
        after = _catalog(conn)
        tables = {r[0]: r for r in after if r[0] in _rls.policies()}
        privileges = raw(conn, """
            SELECT c.relname, has_table_privilege(:r, c.oid, 'SELECT'),
                   has_table_privilege(:r, c.oid, 'INSERT'),
                   has_table_privilege(:r, c.oid, 'UPDATE'),
                   has_table_privilege(:r, c.oid, 'DELETE'),
                   has_table_privilege(:r, c.oid, 'TRUNCATE')
              FROM pg_class c WHERE c.relname LIKE 'convotree%' AND c.relkind IN ('r', 'v')
             ORDER BY 1""", {"r": app})
    engine.dispose()
    assert before == after          # the second run changed nothing
    assert again == _rls.RowLevelSecurity(True, tuple(_rls.policies()), ALL_VIEWS, app)
    for name, enabled, forced, policies, _ in tables.values():
        assert enabled and forced, name
        assert len(policies) == 1 and policies[0].startswith(f"{_rls.POLICY}:*:"), policies
        assert "current_setting('convotree.tenant'::text, true)" in policies[0]
    views = {r[0]: r[4] for r in after if r[0] in ALL_VIEWS}
    assert views == {name: ["security_invoker=true"] for name in ALL_VIEWS}
    granted = {r[0]: r[1:] for r in privileges}
    for table in _rls.policies():
        assert granted[table] == (True, True, True, True, False)   # never TRUNCATE
    for view in ALL_VIEWS:
        assert granted[view][0] is True
    assert granted["convotree_alembic_version"][:2] == (True, False)


# --- what each tenant sees through the store ----------------------------------------------


def _reads(store: convotree.Store, mine: Built) -> dict[str, set[Any]]:
    conv, leaf = mine.main, mine.leaf
    return {
        "get_conversation": {store.get_conversation(conv).id},
        "list_conversations": {c.id for c in store.list_conversations()},
        "path": {n.id for n in store.path(leaf)},
        "tree": {n.id for n in store.tree(conv)},
        "roots": {n.id for n in store.roots(conv)},
        "leaves": {n.id for n in store.leaves(conv)},
        "children": {n.id for n in store.children(mine.root)},
        "node": {store.node(conv, leaf.id).id},
        "current": {n.id for n in [store.current(conv)] if n is not None},
        "context": set(store.context(leaf, model="gpt-4o", budget=2_000).node_ids),
        "context (responses)": set(store.context(leaf, model="gpt-4o", budget=2_000,
                                                 format="responses").node_ids),
        "conversation_stats": {s.id for s in reporting.conversation_stats(store)},
    }


def test_each_tenant_reads_only_its_own(world: World, stores: dict[str, convotree.Store],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    exempt_reporting(monkeypatch)
    for tenant, store in stores.items():
        mine, theirs = world.built[tenant], world.built[other(tenant)]
        for kind, seen in _reads(store, mine).items():
            LEDGER.saw(f"store.{kind}", seen, foreign=foreign_ids(world, tenant))
            assert seen and seen <= mine.nodes | mine.conversations, kind
        assert _reads(store, mine)["tree"] == mine.main_nodes
        assert _reads(store, mine)["list_conversations"] == mine.conversations
        totals = reporting.totals(store)
        assert (totals.conversations, totals.messages, totals.summaries) == (2, 9, 1)
        assert {m.model for m in reporting.by_model(store)} == {"gpt-4o", None}
        assert sum(d.messages for d in reporting.by_day(store, days=2)) == 10
        _theirs_are_unknown(store, theirs)
    for tenant, store in stores.items():   # the refused writes changed nothing
        assert store.get_conversation(world.built[tenant].main).title == f"{tenant} main " \
                                                                           "(renamed)"
        assert {n.id for n in store.tree(world.built[tenant].main)} == \
            world.built[tenant].main_nodes


def _theirs_are_unknown(store: convotree.Store, theirs: Built) -> None:
    """Another tenant's ids behave as unknown ids, for reads and writes."""
    LEDGER.refused("store.get_conversation (theirs)",
                   lambda: store.get_conversation(theirs.main).id)
    LEDGER.refused("store.node (theirs)", lambda: store.node(theirs.main, theirs.leaf.id).id)
    LEDGER.refused("store.path (theirs)", lambda: [n.id for n in store.path(theirs.leaf)])
    LEDGER.refused("store.tree (theirs)", lambda: [n.id for n in store.tree(theirs.main)])
    LEDGER.refused("store.context (theirs)", lambda: list(
        store.context(theirs.leaf, model="gpt-4o", budget=2_000).node_ids))
    writes: list[Callable[[], Any]] = [
        lambda: store.append(theirs.main, role="user", content="intrusion"),
        lambda: store.update_conversation(theirs.main, title="mine now"),
        lambda: store.delete_conversation(theirs.main),
        lambda: store.edit(theirs.leaf, "rewritten"),
    ]
    for write in writes:
        with pytest.raises(NotFound):
            write()
    # Ids are unique across tenants: taken, without saying whose (as without RLS).
    with pytest.raises(ConversationExists):
        store.create_conversation(id=theirs.main.id)


def test_a_report_filters_even_when_its_own_filter_names_another_tenant(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database is the second wall: a report asked (by mistake) for tenant b on a
    connection scoped to a returns a's view of b: nothing."""
    exempt_reporting(monkeypatch)
    engine = convotree.create_engine(world.app_url)
    with _rls.connect(engine, "a") as conn:
        assert reporting.totals(conn, tenant="a").conversations == 2
        assert reporting.CrossTenant(conn).totals("a").conversations == 2
        wrong = reporting.totals(conn, tenant="b")
        assert reporting.CrossTenant(conn).totals("b") == wrong
        stats = reporting.conversation_stats(conn, tenant="b")
    engine.dispose()
    LEDGER.saw("report for b on a's connection", [s.id for s in stats],
               foreign=world.built["b"].conversations)
    assert (wrong.conversations, wrong.messages, wrong.tokens) == (0, 0, 0)


# --- raw SQL ------------------------------------------------------------------------------


def test_raw_sql_after_a_store_call_on_the_same_connection_sees_nothing(world: World) -> None:
    engine = convotree.create_engine(world.app_url, pool_size=1, max_overflow=0)
    store = convotree.Store(engine, tenant="a")
    a = world.built["a"]
    calls: list[Callable[[], Any]] = [
        lambda: store.list_conversations(), lambda: store.path(a.leaf),
        lambda: store.context(a.leaf, model="gpt-4o", budget=500),
        lambda: store.delete_subtree(store.append(a.main, parent=a.leaf, role="user",
                                                  content="one more", set_current=False)),
    ]
    pids = set()
    for call in calls:
        call()
        for autocommit in (False, True):
            with engine.connect() as conn:
                if autocommit:
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                pids.add(raw(conn, "SELECT pg_backend_pid()")[0][0])
                assert raw(conn, "SELECT current_setting('convotree.tenant', true)")[0][0] \
                    in ("", None)
                for kind, seen in everything(conn).items():
                    LEDGER.saw(f"raw {kind} after a store call", seen,
                               foreign=foreign_ids(world, "a"))
                    assert seen == set(), kind
    store.close()
    engine.dispose()
    assert len(pids) == 1     # one pooled connection all along


def _only(world: World, tenant: str, view: str) -> set[str]:
    """The view's rows as the superuser computes them from this tenant's rows alone."""
    with sa.create_engine(world.admin_url).connect() as conn:
        raw(conn, "DELETE FROM convotree_conversations WHERE tenant_id <> :t", {"t": tenant})
        rows = {repr(r) for r in raw(conn, f"SELECT * FROM {view}")}
        conn.rollback()
    return rows


def test_raw_sql_scoped_to_a_tenant_sees_its_rows_in_tables_and_every_view(
        world: World) -> None:
    engine = sa.create_engine(world.app_url)
    admin = sa.create_engine(world.admin_url)
    for tenant in TENANTS:
        mine = world.built[tenant]
        with engine.connect() as conn:
            scope(conn, tenant)
            seen = everything(conn)
            views = convotree_views(conn)
        for kind, rows in seen.items():
            LEDGER.saw(f"raw {kind} scoped", rows, foreign=foreign_ids(world, tenant))
        assert seen["tenants"] == seen["view tenants"] == {tenant}
        assert seen["conversations"] == seen["view sizes"] == mine.conversations
        assert seen["nodes"] == mine.nodes
        assert set(VIEWS) <= set(views)
        with admin.connect() as conn:   # what the views hold for everybody
            every = {view: {repr(r) for r in raw(conn, f"SELECT * FROM {view}")}
                     for view in views}
        for view in views:
            assert seen[f"rows of {view}"] == _only(world, tenant, view), view
            assert every[view] > seen[f"rows of {view}"], view   # the view would leak
    engine.dispose()
    admin.dispose()


def test_with_check_refuses_rows_for_another_tenant(world: World) -> None:
    engine = sa.create_engine(world.app_url)
    b = world.built["b"]
    now = datetime.now(UTC)
    refused = 0
    attempts = [
        ("INSERT INTO convotree_conversations (id, tenant_id, created_at, updated_at) "
         "VALUES (:id, 'b', :now, :now)", {"id": uuid.uuid4(), "now": now}),
        ("INSERT INTO convotree_conversations (id, created_at, updated_at) "
         "VALUES (:id, :now, :now)", {"id": uuid.uuid4(), "now": now}),   # tenant ''
        ("UPDATE convotree_conversations SET tenant_id = 'b'", {}),
        ("INSERT INTO convotree_nodes (conversation_id, id, depth, kind, role, content, "
         "token_count, overhead_tokens, encoding, created_at) VALUES (:c, :id, 0, "
         "'message', 'user', 'planted', 1, 4, 'o200k_base', :now)",
         {"c": b.main.id, "id": uuid.uuid4(), "now": now}),
        ("UPDATE convotree_nodes SET conversation_id = :c", {"c": b.small.id}),
    ]
    for statement, params in attempts:
        with engine.connect() as conn:
            scope(conn, "a")
            with pytest.raises(sa.exc.DBAPIError,
                               match=r"violates row-level security|foreign key"):
                raw(conn, statement, params)
            refused += 1
    with engine.connect() as conn:   # b's rows cannot be changed or removed from a
        scope(conn, "a")
        with sql_audit.unaudited():
            touched = [conn.execute(sa.text(s), p).rowcount for s, p in (
                ("UPDATE convotree_conversations SET title = 'x' WHERE id = :c",
                 {"c": b.main.id}),
                ("DELETE FROM convotree_nodes WHERE conversation_id = :c", {"c": b.main.id}),
                ("DELETE FROM convotree_conversations WHERE tenant_id = 'b'", {}))]
        conn.commit()
    assert touched == [0, 0, 0] and refused == len(attempts)
    with convotree.Store(world.app_url, tenant="b") as store:
        assert {n.id for n in store.tree(b.main)} == b.main_nodes
    engine.dispose()


def test_the_application_role_cannot_lift_the_policies(world: World) -> None:
    engine = sa.create_engine(world.app_url)
    attempts = {
        "ALTER TABLE convotree_nodes DISABLE ROW LEVEL SECURITY": "must be owner",
        "ALTER TABLE convotree_conversations NO FORCE ROW LEVEL SECURITY": "must be owner",
        f"DROP POLICY {_rls.POLICY} ON convotree_conversations": "must be owner",
        f"ALTER POLICY {_rls.POLICY} ON convotree_nodes USING (true)": "must be owner",
        "ALTER VIEW convotree_probe_sizes RESET (security_invoker)": "must be owner",
        "TRUNCATE convotree_nodes": "permission denied",
        "SET ROLE postgres": "permission denied",
        "SET SESSION AUTHORIZATION postgres": "permission denied",
        "CREATE VIEW convotree_mine AS SELECT * FROM convotree_nodes": "permission denied",
    }
    for statement, error in attempts.items():
        with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match=error):
            raw(conn, statement)
    for statement in ("SELECT count(*) FROM convotree_conversations",
                      "SELECT count(*) FROM convotree_probe_tenants"):
        with engine.connect() as conn:
            raw(conn, "SET row_security = off")
            scope(conn, "a")
            with pytest.raises(sa.exc.DBAPIError, match="affected by row-level security"):
                raw(conn, statement)
    engine.dispose()
    with sa.create_engine(world.admin_url).connect() as conn:
        assert {r[1:3] for r in _catalog(conn) if r[0] in _rls.policies()} == {(True, True)}


# --- the shells and the ways of holding a connection --------------------------------------


@pytest.mark.parametrize("driver", ["postgresql+psycopg", "postgresql+asyncpg"])
def test_the_async_twin_is_filtered_the_same(world: World, driver: str) -> None:
    url = make_url(world.app_url).set(drivername=driver).render_as_string(False)

    async def scenario(tenant: str) -> dict[str, set[Any]]:
        mine, theirs = world.built[tenant], world.built[other(tenant)]
        async with convotree.AsyncStore(url, tenant=tenant) as store:
            assert store.engine.dialect.driver == driver.split("+")[1]
            seen = {
                "list": {c.id for c in await store.list_conversations()},
                "path": {n.id for n in await store.path(mine.leaf)},
                "tree": {n.id for n in await store.tree(mine.main)},
                "context": set((await store.context(mine.leaf, model="gpt-4o",
                                                    budget=2_000)).node_ids),
            }
            async with store.transaction() as tx:
                conv = await tx.create_conversation(title=f"async {tenant}")
                node = await tx.append(conv, role="user", content="async hello")
                seen["transaction"] = {n.id for n in await tx.path(node)}
            await store.delete_conversation(conv)
            for call in (store.get_conversation(theirs.main), store.path(theirs.leaf),
                         store.tree(theirs.main)):
                try:
                    found = await call
                except NotFound:
                    found = []
                seen.setdefault("theirs", set()).update(
                    [getattr(x, "id", x) for x in (found if isinstance(found, list)
                                                   else [found])])
            return seen

    for tenant in TENANTS:
        seen = asyncio.run(scenario(tenant))
        for kind, rows in seen.items():
            LEDGER.saw(f"async {driver} {kind}", rows, foreign=foreign_ids(world, tenant))
        mine = world.built[tenant]
        assert seen["list"] == mine.conversations and seen["tree"] == mine.main_nodes
        assert seen["path"] <= mine.nodes and len(seen["transaction"]) == 1
        assert seen["theirs"] == set()


def test_transaction_and_bind_under_rls(world: World, stores: dict[str, convotree.Store]
                                        ) -> None:
    a, b = stores["a"], stores["b"]
    with a.transaction() as tx:
        conv = tx.create_conversation(title="in one transaction")
        node = tx.append(conv, role="user", content="first")
        node = tx.append(conv, parent=node, role="assistant", content="second")
        assert [n.content for n in tx.path(node)] == ["first", "second"]
        LEDGER.saw("transaction list", [c.id for c in tx.list_conversations()],
                   foreign=foreign_ids(world, "a"))
        with pytest.raises(NotFound):
            tx.get_conversation(world.built["b"].main)
    assert a.get_conversation(conv).title == "in one transaction"
    with pytest.raises(NotFound):
        b.get_conversation(conv)
    gone: list[convotree.Conversation] = []
    with pytest.raises(RuntimeError, match="undo"):   # rolled back: nothing stays
        _rolled_back(a, gone)
    with pytest.raises(NotFound):
        a.get_conversation(gone[0])
    a.delete_conversation(conv)

    engine = convotree.create_engine(world.app_url)
    with engine.connect() as conn:
        bound = a.bind(conn).create_conversation(title="bound")
        # The caller's own SQL in its transaction sees the tenant of the last call.
        after_a = {r[0] for r in raw(conn, "SELECT tenant_id FROM convotree_conversations")}
        seen_b = {c.id for c in b.bind(conn).list_conversations()}
        after_b = {r[0] for r in raw(conn, "SELECT tenant_id FROM convotree_conversations")}
        conn.commit()
        after_commit = raw(conn, "SELECT id FROM convotree_conversations")
    engine.dispose()
    LEDGER.saw("bind: b in a's transaction", seen_b, foreign=foreign_ids(world, "b") | {
        bound.id})
    assert (after_a, after_b, after_commit) == ({"a"}, {"b"}, [])
    assert a.get_conversation(bound).title == "bound"
    a.delete_conversation(bound)


def test_imports_and_exports_under_rls(world: World, stores: dict[str, convotree.Store],
                                       tmp_path: Any) -> None:
    """Bulk writes pass the policies' WITH CHECK; an id of another tenant is refused
    as taken, as without row-level security, and nothing of it is seen."""
    import json
    from pathlib import Path

    from convotree.interchange import export_conversation, import_file

    a, b = stores["a"], stores["b"]
    fixture = Path(__file__).parent / "fixtures" / "interchange" / "chatgpt_branching.json"
    imported = import_file(a, fixture, "chatgpt")
    assert imported.imported == 2 and not imported.failures
    path = tmp_path / "native.json"
    path.write_text(json.dumps(export_conversation(a, world.built["a"].main, "native")))
    taken = import_file(b, path, "native")
    assert taken.imported == 0 and len(taken.failures) == 1
    # Without row-level security "already taken"; under it the importer's look-up cannot
    # see the other tenant's row and the primary key refuses the insert instead (same
    # outcome, cruder message: see docs/tenants.md).
    reason = taken.failures[0].reason
    assert "already taken" in reason or "pk_convotree_conversations" in reason, reason
    LEDGER.saw("import of a's ids by b", [c.id for c in b.list_conversations()],
               foreign=foreign_ids(world, "b") | set(imported.conversation_ids))
    for conversation_id in imported.conversation_ids:
        a.delete_conversation(conversation_id)

def _rolled_back(store: convotree.Store, made: list[convotree.Conversation]) -> None:
    with store.transaction() as tx:
        made.append(tx.create_conversation(title="rolled back"))
        raise RuntimeError("undo")


def test_two_tenants_alternating_on_one_pooled_connection(world: World) -> None:
    """What a transaction-pooling proxy (pgbouncer) does: the same server connection
    serves one tenant's transaction, then another's."""
    engine = convotree.create_engine(world.app_url, pool_size=1, max_overflow=0)
    on_one = {tenant: convotree.Store(engine, tenant=tenant) for tenant in TENANTS}
    pids = set()
    for round_ in range(10):
        for tenant, store in on_one.items():
            mine = world.built[tenant]
            seen = ({c.id for c in store.list_conversations()}
                    | {n.id for n in store.path(mine.leaf)}
                    | set(store.context(mine.leaf, model="gpt-4o", budget=300).node_ids)
                    | {store.get_conversation(mine.small).id})
            added = store.append(mine.small, role="user", content=f"round {round_}")
            LEDGER.saw("one connection, alternating", seen, foreign=foreign_ids(world, tenant))
            assert seen <= mine.conversations | mine.nodes
            with engine.connect() as conn:
                pids.add(raw(conn, "SELECT pg_backend_pid()")[0][0])
                LEDGER.saw("one connection, raw between", everything(conn)["nodes"] | {
                    added.id}, foreign=foreign_ids(world, tenant))
                assert everything(conn)["nodes"] == set()
            store.delete_subtree(added)
    assert len(pids) == 1
    assert not _rls.known_inactive(engine)
    engine.dispose()


# --- stores that cannot be filtered, and processes that have not noticed ------------------


def test_the_empty_tenant_is_refused_under_rls(world: World) -> None:
    with convotree.Store(world.app_url) as store:
        with pytest.raises(ConfigurationError, match="tenant '' cannot be used"):
            store.list_conversations()
        with pytest.raises(ConfigurationError, match="tenant '' cannot be used"):
            store.create_conversation()


def test_a_superuser_store_works_and_warns_once(world: World,
                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="convotree.rls"), \
            convotree.Store(world.admin_url, tenant="a") as store:
        first = {c.id for c in store.list_conversations()}
        second = {c.id for c in store.list_conversations()}
        _rls.forget(store.engine)        # a recheck does not warn again
        store.list_conversations()
    warned = [r for r in caplog.records if r.name == "convotree.rls"]
    assert len(warned) == 1 and "superuser or BYPASSRLS" in warned[0].getMessage()
    assert "postgres@" in warned[0].getMessage() or "***" not in warned[0].getMessage()
    assert first == second == world.built["a"].conversations   # its own filter still holds


def test_a_process_that_has_not_noticed_fails_closed(world: World, spare: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _rls.enable_row_level_security(world.url(spare), role=world.roles["app"])
    engine = convotree.create_engine(world.url(spare, world.roles["app"]))
    store = convotree.Store(engine, tenant="a")
    assert [c.title for c in store.list_conversations()] == ["a"]
    # Another process believes (freshly) that the database has no policies: its reads
    # run outside any transaction, so without the setting, and find nothing.
    monkeypatch.setitem(_rls._known, engine, _rls._State(False, time.monotonic()))
    assert _rls.known_inactive(engine)
    conv = store.list_conversations()
    assert conv == []
    # It reads the catalog again once its belief is RECHECK_SECONDS old.
    monkeypatch.setattr(_rls, "RECHECK_SECONDS", 0.0)
    assert not _rls.known_inactive(engine)
    assert [c.title for c in store.list_conversations()] == ["a"]
    store.close()
    engine.dispose()



def test_tables_left_without_policies_are_reported(world: World, spare: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A table without row-level security next to ones with it (what an upgrade that
    adds a table leaves): the store says so, once, and names the command."""
    url = world.url(spare)
    _rls.enable_row_level_security(url, role=world.roles["app"])
    with sa.create_engine(url).begin() as conn:
        raw(conn, "ALTER TABLE convotree_nodes DISABLE ROW LEVEL SECURITY")
    try:
        with caplog.at_level(logging.WARNING, logger="convotree.rls"), \
                convotree.Store(world.url(spare, world.roles["app"]), tenant="a") as store:
            store.list_conversations()
            _rls.forget(store.engine)
            store.list_conversations()
        warned = [r.getMessage() for r in caplog.records if r.name == "convotree.rls"]
        assert len(warned) == 1 and "some of convotree's tables only" in warned[0]
        assert "convotree db enable-rls" in warned[0]
    finally:
        _rls.enable_row_level_security(url)


def test_enable_gives_up_on_a_busy_table_and_changes_nothing(
        world: World, spare: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A queued ACCESS EXCLUSIVE request would block every later query on the table:
    enabling waits LOCK_TIMEOUT at most, then raises StoreBusy (retryable)."""
    url = world.url(spare)
    _rls.disable_row_level_security(url)
    monkeypatch.setattr(_rls, "LOCK_TIMEOUT", "200ms")
    holder = sa.create_engine(url)
    with holder.connect() as conn:
        raw(conn, "SELECT count(*) FROM convotree_nodes")   # holds ACCESS SHARE
        with pytest.raises(convotree.errors.StoreBusy, match="lock timeout") as caught:
            _rls.enable_row_level_security(url)
        conn.rollback()
    assert caught.value.retryable
    with holder.connect() as conn:
        assert {r[1] for r in _catalog(conn) if r[0] in _rls.policies()} == {False}
    holder.dispose()
    _rls.enable_row_level_security(url)

# --- refusals, disabling, the command line ------------------------------------------------


def test_enable_refuses_roles_and_views_that_would_bypass(world: World, spare: str) -> None:
    url = world.url(spare)
    _rls.disable_row_level_security(url)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    cases = [
        ({"role": "postgres"}, "is a superuser"),
        ({"role": world.roles["bypass"]}, "is a BYPASSRLS role"),
        ({"role": world.roles["member"]}, f"member of {world.roles['bypass']}"),
        ({"role": f"nobody_{world.tag}"}, "no role named"),
        ({"role": ""}, "non-empty role name"),
    ]
    with admin.connect() as conn:
        for options, error in cases:
            with pytest.raises(ConfigurationError, match=re.escape(error)):
                _rls.enable_row_level_security(url, **options)
        raw(conn, f'ALTER TABLE convotree_nodes OWNER TO "{world.roles["owner"]}"')
        try:
            with pytest.raises(ConfigurationError, match=r"owns .*convotree_nodes"):
                _rls.enable_row_level_security(url, role=world.roles["owner"])
        finally:
            raw(conn, "ALTER TABLE convotree_nodes OWNER TO postgres")
        with pytest.raises(ConfigurationError, match="does not own"):
            _rls.enable_row_level_security(world.url(spare, world.roles["app"]))
        raw(conn, "CREATE VIEW probe_leak AS SELECT id, content FROM convotree_nodes")
        try:
            with pytest.raises(ConfigurationError, match="probe_leak"):
                _rls.enable_row_level_security(url)
            assert {r[1] for r in _catalog(conn) if r[0] in _rls.policies()} == {False}
            raw(conn, "ALTER VIEW probe_leak SET (security_invoker = true)")
            done = _rls.enable_row_level_security(url)
            assert done.views == OUR_VIEWS and done.role is None   # probe_leak: not ours
        finally:
            raw(conn, "DROP VIEW probe_leak")
    admin.dispose()


def test_disable_and_enable_again(world: World, spare: str) -> None:
    url, app = world.url(spare), world.url(spare, world.roles["app"])
    _rls.enable_row_level_security(url, role=world.roles["app"])
    engine = sa.create_engine(app)
    with engine.connect() as conn:
        assert everything_plain(conn) == set()
    off = _rls.disable_row_level_security(url)
    assert off == _rls.disable_row_level_security(url)   # idempotent
    assert off.enabled is False and off.tables == tuple(_rls.policies())
    with engine.connect() as conn:
        assert everything_plain(conn) == {"a", "b"}             # the grants stayed
    admin = sa.create_engine(url)
    with admin.connect() as conn:
        assert {r[1:4] for r in _catalog(conn) if r[0] in _rls.policies()} == {
            (False, False, None)}
    _rls.enable_row_level_security(url)
    with engine.connect() as conn:
        assert everything_plain(conn) == set()
        scope(conn, "b")
        assert everything_plain(conn) == {"b"}
    engine.dispose()
    admin.dispose()


def everything_plain(conn: sa.Connection) -> set[str]:
    return {r[0] for r in raw(conn, "SELECT tenant_id FROM convotree_conversations")}


def test_the_command_line(world: World, spare: str) -> None:
    secret = "hunter2-not-a-real-password"
    url = world.url(spare, "postgres", secret)
    on = run_cli("db", "enable-rls", "--url", url, "--role", world.roles["app"])
    assert on.code == 0, on.err
    shown = url.replace(secret, "***")
    # Every table of the schema, in the order enabling visits them (0005 added three).
    assert on.out.strip() == (f"{shown}: row-level security "
                              f"on for {', '.join(_rls.policies())}; views "
                              f"{', '.join(OUR_VIEWS)} as security_invoker; role "
                              f"{world.roles['app']} granted")
    assert "convotree_conversations, " in on.out and "convotree_pydantic_ai_records" in on.out
    off = run_cli("db", "disable-rls", "--url", url)
    assert off.code == 0 and "row-level security off for convotree_conversations" in off.out
    refused = run_cli("db", "enable-rls", "--url", url, "--role", "postgres")
    assert refused.code == 1 and refused.out == ""
    assert refused.err.startswith("convotree: error: ") and refused.err.count("\n") == 1
    assert "superuser" in refused.err
    for result in (on, off, refused):
        assert secret not in result.out + result.err
    assert "PostgreSQL feature" in run_cli("db", "enable-rls", "--url", "sqlite://").err
    for action in ("enable-rls", "disable-rls"):
        assert run_cli("db", action, "--help").code == 0
    assert run_cli("db", "enable-rls", "--url", world.url(spare)).code == 0


def test_migrations_and_schema_checks_are_undisturbed(world: World, spare: str) -> None:
    from alembic import command
    from alembic.config import Config

    from convotree._migrate import migrations_dir

    _rls.enable_row_level_security(world.url(spare), role=world.roles["app"])
    with sql_audit.unaudited():
        convotree.migrate(world.url(spare))                     # nothing to do
        convotree.migrate(world.admin_url)
        engine = convotree.create_engine(world.url(spare))
        with engine.connect() as conn:
            config = Config()
            config.set_main_option("script_location", str(migrations_dir()))
            config.attributes["connection"] = conn
            command.check(config)                                # models match migrations
        engine.dispose()
    convotree._migrate.check(world.url(spare, world.roles["app"]))   # the app role reads it


# --- plans --------------------------------------------------------------------------------


def test_every_statement_keeps_index_probes_under_rls(world: World) -> None:
    """test_plans' rules (no sequential scan; node scans pinned to a conversation and a
    node; no per-row scan of a conversation) hold for every statement the store sends
    as the application role under the policies, with generic and custom plans over
    misleading statistics. The node policy's probe of the conversation is a primary-key
    lookup; an EXISTS policy planned as a hashed subplan would scan the tenant's
    conversations by ``tenant_id`` and fail here."""
    from tests.test_plans import (
        WHOLE_TREE,
        _explain,
        _explainer,
        _grow,
        _is_plannable,
        _operations,
        plan_problems,
    )

    name = world.new_database("plans")
    admin_url, app_url = world.url(name), world.url(name, world.roles["app"])
    with sql_audit.unaudited():
        with convotree.Store(admin_url, tenant="plans") as owner:
            for _ in range(2):   # statistics that describe two tiny conversations
                conv = owner.create_conversation()
                owner.append_chain(owner.append(conv, role="system", content="Be brief."),
                                   [{"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": "hello"}])
            with owner.engine.connect() as conn:
                conn.execute(sa.text("ANALYZE"))
                conn.commit()
            made = _grow(owner)
        _rls.enable_row_level_security(admin_url, role=world.roles["app"])
    store = convotree.Store(app_url, tenant="plans")
    by_operation: dict[str, list[Any]] = {}
    current: list[Any] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        if not executemany:
            current.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    for operation_name, operation in _operations(store, made):
        current.clear()
        operation()
        by_operation[operation_name] = [s for s in current if _is_plannable(s[0])]
    sa.event.remove(store.engine, "before_cursor_execute", record)
    problems: dict[str, list[str]] = {}
    explained = filtered = 0
    engine = _explainer(store)
    with sql_audit.unaudited(), engine.connect() as conn:
        scope(conn, "plans")
        for mode in ("force_generic_plan", "force_custom_plan"):
            for operation_name, statements in by_operation.items():
                for statement, parameters in statements:
                    if statement.lstrip().upper().startswith("INSERT") and \
                            "SELECT" not in statement.upper():
                        continue
                    plan = _explain(conn, statement, parameters, mode)
                    if "'Relation Name': 'convotree_" not in repr(plan):
                        continue   # the store's catalog read (pg_class), no table of ours
                    explained += 1
                    filtered += "convotree.tenant" in repr(plan)
                    found = plan_problems(plan, whole_tree=operation_name in WHOLE_TREE,
                                          once=operation_name in {"delete", "redact"})
                    if found:
                        problems.setdefault(f"{operation_name} ({mode})", []).extend(found)
        conn.rollback()
    engine.dispose()
    store.close()
    assert explained >= 40 and filtered == explained   # every plan carries the policies
    assert problems == {}


# --- the figures --------------------------------------------------------------------------


def test_figures() -> None:
    """Printed with ``-s``: the checks of this run, the rows they saw, and the rows of
    another tenant among them (zero, or an earlier test failed)."""
    print(f"\nrow-level security: {LEDGER.checks} isolation checks of {len(LEDGER.kinds)} "
          f"kinds, {LEDGER.rows} rows seen, {LEDGER.foreign} rows of another tenant")
    assert LEDGER.foreign == 0


def test_upgrading_to_the_views_under_row_level_security_keeps_them_filtered(
        world: World) -> None:
    """A database that had row-level security before migration 0006 (the release
    before the views): the upgrade makes its views ``security_invoker`` and readable by
    the application role, so reports work and raw SQL through a view sees one tenant."""
    app = world.roles["app"]
    with sql_audit.unaudited():
        name = world.new_database("upgrade")
        _rls.enable_row_level_security(world.url(name), role=app)
        for tenant in TENANTS:
            with convotree.Store(world.url(name, app), tenant=tenant) as store:
                conv = store.create_conversation(title=f"secret of {tenant}")
                store.append(conv, role="user", content=f"secret of {tenant}")
        convotree.downgrade(world.url(name), "0005")        # the release before the views
        convotree.migrate(world.url(name))                  # as the owner, like a deploy
        admin = sa.create_engine(world.url(name))
        with admin.connect() as conn:
            options = dict(raw(conn, "SELECT relname, reloptions FROM pg_class "
                                     "WHERE relkind = 'v' AND relname LIKE 'convotree_%'"))
        admin.dispose()
        assert options == {view: ["security_invoker=true"] for view in OUR_VIEWS}
        engine = sa.create_engine(world.url(name, app))
        for tenant in TENANTS:
            with convotree.Store(world.url(name, app), tenant=tenant) as store:
                with sql_audit.unaudited():
                    assert reporting.totals(store).conversations == 1
                    (row,) = reporting.conversation_stats(store)
                assert row.title == f"secret of {tenant}"
            with engine.connect() as conn:
                scope(conn, tenant)
                for view in OUR_VIEWS:
                    seen = " ".join(repr(r) for r in raw(conn, f"SELECT * FROM {view}"))
                    assert f"secret of {other(tenant)}" not in seen, view
                contents = {r[0] for r in raw(conn, "SELECT content FROM convotree_messages")}
                assert contents == {f"secret of {tenant}"}
        engine.dispose()
