"""The reporting views and docs/reporting.md's cookbook, on both backends.

In the Citus mode of the suite (``make test-citus``) the PostgreSQL database is
distributed after it is built (its rows move to the shards) and the views are checked in
their distributed form: ``on_current_branch`` is NULL there, ``convotree_current_branch``
is refused by Citus, and the cookbook's walks with the id in both halves (its ``citus``
forms) give the current branch instead.

The database: the 95 real OASST2 trees of ``tests/fixtures/real`` (branching, with their
own timestamps) split between two tenants, plus generated usage on every answer (models,
billed/counted/cached/reasoning tokens, some missing), tool-call exchanges, summaries,
branches moved to, a conversation with two roots and an empty one. Every view is compared
row by row, every column, with ``reporting_model`` (plain Python over the raw tables),
and every cookbook query, read from the document itself, with an answer computed in
Python from the same rows.
"""

from __future__ import annotations

import random
import re
import statistics
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convotree
from benchmarks._cookbook import DOCUMENT, queries
from convotree import _views, reporting
from convotree.interchange import import_file

from . import sql_audit
from .conftest import BACKENDS, CITUS_WORKERS, PostgresServer, examples, new_database_url
from .reporting_model import World, utc_day

OASST = Path(__file__).parent / "fixtures" / "real" / "oasst2_sample.jsonl"
CHOSEN = "the conversation the cookbook's per-conversation questions ask about"
MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-5", "o4-mini")
TOOLS = ("get_weather", "search_docs", "lookup_order")


# --- the database ------------------------------------------------------------------------


def build(url: str) -> None:
    """The fixture database (deterministic: one seed)."""
    rng = random.Random(2026)
    convotree.migrate(url)
    with convotree.Store(url, tenant="acme") as store:
        result = import_file(store, OASST, "oasst")
        assert result.imported == 95 and result.failed == 0
        ids = sorted(result.conversation_ids)
        for index, cid in enumerate(ids):
            leaves = store.leaves(cid)
            if index % 4 == 0 and len(leaves) > 1:          # another branch is current
                store.set_current(cid, rng.choice(leaves))
            leaf = store.current(cid)
            assert leaf is not None
            when = leaf.created_at
            if index % 7 == 0 and leaf.role == "user":       # a tool-call exchange
                names = rng.sample(TOOLS, rng.randint(1, 2))
                calls = [{"id": f"call_{index}_{i}", "type": "function",
                          "function": {"name": name, "arguments": "{}"}}
                         for i, name in enumerate(names)]
                asked = store.append(cid, role="assistant", tool_calls=calls, parent=leaf,
                                     model="gpt-4o", created_at=when + timedelta(minutes=1),
                                     finish_reason="tool_calls")
                last = asked
                for i, call in enumerate(calls):
                    last = store.append(cid, role="tool", content=f"result {i}",
                                        tool_call_id=call["id"], parent=last,
                                        created_at=when + timedelta(minutes=2 + i))
                store.append(cid, role="assistant", content="Done.", parent=last,
                             model="gpt-4o", created_at=when + timedelta(minutes=5))
            path = store.path(store.current(cid))                    # type: ignore[arg-type]
            if index % 5 == 0 and len(path) >= 3:            # a summary, sometimes two
                first = store.add_summary(path[1], "Summary of the start.", model="gpt-4o-mini",
                                          input_tokens=300 + index, output_tokens=40)
                if len(path) >= 5:
                    store.add_summary(path[3], "Summary, extended.", base=first,
                                      model="gpt-4o-mini", input_tokens=500, output_tokens=50)
        # The conversation the per-conversation questions ask about: a system prompt and a
        # pinned message on the summarized path (kept in every context, so a summary does
        # not replace them), a regeneration, an edit, two summaries, a moved current node.
        chosen = store.create_conversation(title=CHOSEN)
        at = datetime(2023, 5, 1, 9, 0, tzinfo=UTC)
        system = store.append(chosen, role="system", content="You are a careful guide.",
                              created_at=at)
        q1 = store.append(chosen, role="user", content="Which trams cross Lisbon?",
                          parent=system, created_at=at + timedelta(minutes=1))
        a1 = store.append(chosen, role="assistant", content="Lines 12, 15, 18, 24 and 28.",
                          parent=q1, model="gpt-4o", created_at=at + timedelta(minutes=2))
        store.append(chosen, role="assistant", content="Five lines; 28 is the famous one.",
                     parent=q1, model="gpt-5", created_at=at + timedelta(minutes=3))
        q2 = store.append(chosen, role="user", content="Keep answers short, please.",
                          parent=a1, pinned=True, created_at=at + timedelta(minutes=4))
        a2 = store.append(chosen, role="assistant", content="Understood.", parent=q2,
                          model="gpt-4o", created_at=at + timedelta(minutes=5))
        q3 = store.append(chosen, role="user", content="Is 28 crowded in May?", parent=a2,
                          created_at=at + timedelta(minutes=6))
        q3b = store.append(chosen, role="user", content="Is 28 crowded in June?", parent=a2,
                           created_at=at + timedelta(minutes=7))
        a3 = store.append(chosen, role="assistant", content="Yes, mornings.", parent=q3b,
                          model="gpt-4o-mini", created_at=at + timedelta(minutes=8))
        first = store.add_summary(a2, "Summary: trams, short answers.", model="gpt-4o-mini",
                                  input_tokens=120, output_tokens=9)
        store.add_summary(a3, "Summary: trams, June crowds.", base=first,
                          model="gpt-4o-mini", input_tokens=140, output_tokens=9)
        store.append(chosen, role="assistant", content="Very, in the afternoon.", parent=q3,
                     model="gpt-4o", created_at=at + timedelta(minutes=9))
        store.set_current(chosen, a3)
        two_roots = store.create_conversation(title="edited first prompt")
        first_prompt = store.append(two_roots, role="user", content="Hello",
                                    created_at=datetime(2023, 3, 1, 23, 59, 59, tzinfo=UTC))
        store.append(two_roots, role="assistant", content="Hi!", parent=first_prompt,
                     model="gpt-5", input_tokens=9, output_tokens=3, counted_input_tokens=8,
                     created_at=datetime(2023, 3, 2, 0, 0, 1, tzinfo=UTC))
        store.append(two_roots, role="user", content="Hello again", parent=None,
                     created_at=datetime(2023, 3, 2, 0, 0, 5, tzinfo=UTC))
        store.create_conversation(title="nothing yet")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        world = World.read(conn)
        updates = []
        for n in sorted(world.nodes.values(), key=lambda n: (n["conversation_id"], n["id"])):
            if n["kind"] != "message" or n["role"] != "assistant" or n["input_tokens"]:
                continue
            model = n["model"] or rng.choice(MODELS)
            billed = rng.randrange(50, 4000)
            counted = None if rng.random() < 0.2 else billed - rng.randrange(-5, 15)
            updates.append({
                "c": n["conversation_id"], "i": n["id"], "model": model,
                "input_tokens": None if rng.random() < 0.1 else billed,
                "output_tokens": n["token_count"], "counted": counted,
                "cached": billed // 3 if rng.random() < 0.5 else None,
                "reasoning": rng.randrange(0, 900) if model in ("gpt-5", "o4-mini") else None})
        nodes = convotree._schema.nodes
        conn.execute(
            nodes.update()
            .where(nodes.c.conversation_id == sa.bindparam("c"), nodes.c.id == sa.bindparam("i"))
            .values(model=sa.bindparam("model"), input_tokens=sa.bindparam("input_tokens"),
                    output_tokens=sa.bindparam("output_tokens"),
                    counted_input_tokens=sa.bindparam("counted"),
                    cached_tokens=sa.bindparam("cached"),
                    reasoning_tokens=sa.bindparam("reasoning")), updates)
        conversations = convotree._schema.conversations
        moved = [cid for index, cid in enumerate(sorted(world.conversations)) if index % 3 == 1]
        conn.execute(conversations.update().where(conversations.c.id.in_(moved))
                     .values(tenant_id="globex"))
    engine.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def reporting_db(request: pytest.FixtureRequest, postgres: PostgresServer,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, sa.Engine]]:
    backend = str(request.param)
    url = new_database_url(backend, postgres, tmp_path_factory.mktemp("reporting"))
    with sql_audit.unaudited():
        build(url)
        if backend == "postgresql" and CITUS_WORKERS:
            convotree.distribute(url)
    engine = convotree.create_engine(url)   # real transactions on SQLite too (a rollback)
    yield backend, engine
    engine.dispose()


@pytest.fixture(scope="module")
def world(reporting_db: tuple[str, sa.Engine]) -> World:
    with sql_audit.unaudited(), reporting_db[1].connect() as conn:
        return World.read(conn)


@pytest.fixture(autouse=True)
def views_unaudited() -> Iterator[None]:
    """The views read across conversations by design: the audit is for the store."""
    with sql_audit.cross_conversation():
        yield


def flavour(backend: str) -> str:
    """The cookbook's name for the database: ``citus`` for a distributed PostgreSQL."""
    return "citus" if backend == "postgresql" and CITUS_WORKERS else backend


def distributed(backend: str) -> bool:
    return flavour(backend) == "citus"


def as_distributed(expected: dict[Any, dict[str, Any]], backend: str
                   ) -> dict[Any, dict[str, Any]]:
    """What ``convotree_messages`` says on this database: no walk when distributed."""
    if not distributed(backend):
        return expected
    return {key: {**row, "on_current_branch": None} for key, row in expected.items()}


def current_branch_ids(conn: sa.Connection, backend: str, conversation_id: uuid.UUID
                       ) -> list[uuid.UUID]:
    """One conversation's current branch, root first: the view, or on a distributed
    database the cookbook's walk (the view is refused there; checked separately)."""
    if not distributed(backend):
        view = _views.current_branch
        return [r.id for r in conn.execute(sa.select(view.c.id, view.c.depth).where(
            view.c.conversation_id == conversation_id).order_by(view.c.depth))]
    walk = queries("citus")["current_transcript"].replace(
        "SELECT n.depth, n.role, n.model, n.content", "SELECT n.id")
    return [r.id for r in conn.execute(sa.text(walk), {"conversation_id": conversation_id})]


def read(engine: sa.Engine, view: sa.Table) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(view))]


# --- the views, column by column -----------------------------------------------------------


def test_every_view_has_exactly_its_documented_columns(reporting_db: tuple[str, sa.Engine]
                                                       ) -> None:
    _, engine = reporting_db
    inspector = sa.inspect(engine)
    assert set(inspector.get_view_names()) >= {v.name for v in _views.VIEWS}
    documented = DOCUMENT.read_text(encoding="utf-8")
    for view in _views.VIEWS:
        reflected = [c["name"] for c in inspector.get_columns(view.name)]
        assert reflected == [c.name for c in view.columns], view.name
        section = documented.split(f"### `{view.name}`", 1)[1].split("\n### ", 1)[0]
        listed = re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)
        assert listed == reflected, f"docs/reporting.md's table of {view.name}"


def test_messages_view(reporting_db: tuple[str, sa.Engine], world: World) -> None:
    rows = read(reporting_db[1], _views.messages)
    expected = as_distributed(world.messages(), reporting_db[0])
    assert len(rows) == len(world.nodes) == len(expected)
    for row in rows:
        key = (row["conversation_id"], row["id"])
        node = world.nodes[key]
        for column in ("parent_id", "depth", "kind", "role", "name", "content", "model",
                       "tool_calls", "tool_call_id", "finish_reason", "response_id",
                       "overhead_tokens", "input_tokens", "output_tokens", "cached_tokens",
                       "reasoning_tokens", "counted_input_tokens", "pinned", "compacted",
                       "summary_base_id", "metadata", "created_at"):
            assert row[column] == node[column], column
        assert {k: row[k] for k in expected[key]} == expected[key], key
    flags = Counter((r["is_leaf"], r["on_current_branch"], r["is_regeneration"], r["is_edit"])
                    for r in rows)
    seen = [i for i in range(4) if any(key[i] for key in flags)]        # each flag is seen
    assert seen == ([0, 2, 3] if distributed(reporting_db[0]) else [0, 1, 2, 3]), flags


def test_conversation_stats_view(reporting_db: tuple[str, sa.Engine], world: World) -> None:
    rows = read(reporting_db[1], _views.conversation_stats)
    expected = world.stats()
    assert {r["conversation_id"] for r in rows} == set(expected)
    for row in rows:
        want = expected[row["conversation_id"]]
        assert {k: row[k] for k in want} == want, row["conversation_id"]
    assert any(r["edits"] for r in rows) and any(r["regenerations"] for r in rows)
    assert any(r["messages"] == 0 for r in rows)            # the empty conversation


def test_reporting_functions_give_the_views_numbers(reporting_db: tuple[str, sa.Engine],
                                                     world: World) -> None:
    """``convotree.reporting`` (behind ``convotree report`` and ``ls``) reads the views:
    every field of its rows is the Python model's number."""
    engine = reporting_db[1]
    stats = world.stats()
    with convotree.Store(engine, tenant="acme") as store:
        page = reporting.conversation_stats(store, limit=500)
        totals = reporting.totals(store)
        models = reporting.by_model(store)
    mine = {c: s for c, s in stats.items() if s["tenant_id"] == "acme"}
    assert [r.id for r in page] == [c for c, _ in sorted(
        ((c, world.conversations[c]) for c in mine),
        key=lambda i: (i[1]["updated_at"], i[0]), reverse=True)]
    for row in page:
        want = mine[row.id]
        assert (row.messages, row.summaries, row.branches, row.tokens, row.branch_points,
                row.regenerations, row.edits, row.max_depth, row.input_tokens,
                row.output_tokens, row.last_activity) == (
            want["messages"], want["summaries"], want["branches"], want["content_tokens"],
            want["branch_points"], want["regenerations"], want["edits"], want["max_depth"],
            want["input_tokens"], want["output_tokens"], want["last_activity"])
    assert any(r.regenerations for r in page) and any(r.edits for r in page)
    assert totals.conversations == len(mine)
    assert totals.branches == sum(s["branches"] for s in mine.values())
    assert totals.input_tokens == sum(s["input_tokens"] for s in mine.values())
    nodes = [n for n in world.nodes.values() if world.tenant(n) == "acme"]
    assert {m.model: m.messages for m in models} == Counter(n["model"] for n in nodes)


def test_usage_daily_view(reporting_db: tuple[str, sa.Engine], world: World) -> None:
    rows = read(reporting_db[1], _views.usage_daily)
    got = {(r["day"], r["tenant_id"], r["model"]): {k: v for k, v in r.items()
           if k not in ("day", "tenant_id", "model")} for r in rows}
    assert len(got) == len(rows)
    assert got == world.usage_daily()


def test_usage_daily_buckets_in_utc_whatever_the_session_zone(
        reporting_db: tuple[str, sa.Engine], world: World) -> None:
    backend, engine = reporting_db
    with engine.connect() as conn:
        if backend == "postgresql":      # UTC+14: every UTC evening is tomorrow there
            conn.exec_driver_sql("SET TIME ZONE 'Pacific/Kiritimati'")
        rows = [dict(r._mapping) for r in conn.execute(sa.select(_views.usage_daily))]
    got = {(r.pop("day"), r.pop("tenant_id"), r.pop("model")): r for r in rows}
    assert got == world.usage_daily()
    (edited,) = [c for c, row in world.conversations.items()
                 if row["title"] == "edited first prompt"]
    tenant = world.conversations[edited]["tenant_id"]
    # "Hello" at 23:59:59 UTC on March 1st, its answer two seconds later on March 2nd.
    assert got[(date(2023, 3, 1), tenant, None)]["messages"] >= 1
    assert got[(date(2023, 3, 2), tenant, "gpt-5")]["answers"] == 1


def test_branch_points_view(reporting_db: tuple[str, sa.Engine], world: World) -> None:
    rows = read(reporting_db[1], _views.branch_points)
    got = {(r["conversation_id"], r["node_id"]): {k: v for k, v in r.items()
           if k not in ("conversation_id", "node_id")} for r in rows}
    assert got == world.branch_points() and len(got) > 10


def test_current_branch_view(reporting_db: tuple[str, sa.Engine], world: World) -> None:
    backend, engine = reporting_db
    if distributed(backend):
        # Citus plans no recursive CTE across shards, and a filter on the view does not
        # reach the walk: it refuses, with its own message (docs/scale-out.md).
        with pytest.raises(sa.exc.DBAPIError, match="recursive CTEs are only supported"):
            read(engine, _views.current_branch)
        with engine.connect() as conn:
            for cid in world.conversations:
                assert current_branch_ids(conn, backend, cid) == [
                    n["id"] for n in world.current_path(cid)], cid
        return
    rows = read(engine, _views.current_branch)
    got: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["depth"]):
        got[row["conversation_id"]].append(row)
    for cid in world.conversations:
        path = world.current_path(cid)
        assert [r["id"] for r in got.get(cid, [])] == [n["id"] for n in path], cid
        assert [r["is_current"] for r in got.get(cid, [])] == [
            n is path[-1] for n in path]
        for row, node in zip(got.get(cid, []), path, strict=True):
            assert (row["role"], row["content"], row["content_tokens"], row["tenant_id"]) == (
                node["role"], node["content"], node["token_count"],
                world.conversations[cid]["tenant_id"])


def test_views_follow_every_change_at_once(reporting_db: tuple[str, sa.Engine]) -> None:
    """Nothing is stored ahead: a new answer, a move of the current node and a delete show
    in the very next query (inside the writing transaction, too)."""
    engine = reporting_db[1]
    with engine.connect() as conn:
        trans = conn.begin()
        store = convotree.Store(engine, tenant="acme").bind(conn)
        cid = store.create_conversation(title="fresh").id
        root = store.append(cid, role="user", content="one")
        first = store.append(cid, role="assistant", content="two", parent=root)
        second = store.append(cid, role="assistant", content="again", parent=root)
        stats = _views.conversation_stats.c

        def row() -> Any:
            return conn.execute(sa.select(stats.branches, stats.regenerations,
                                          stats.current_node_id)
                                .where(stats.conversation_id == cid)).one()

        assert tuple(row()) == (2, 1, second.id)
        store.set_current(cid, first)
        flags = dict(conn.execute(
            sa.select(_views.messages.c.id, _views.messages.c.on_current_branch)
            .where(_views.messages.c.conversation_id == cid)).all())
        if distributed(reporting_db[0]):
            assert flags == {root.id: None, first.id: None, second.id: None}
            assert current_branch_ids(conn, reporting_db[0], cid) == [root.id, first.id]
        else:
            assert flags == {root.id: True, first.id: True, second.id: False}
        store.delete_subtree(second)
        assert tuple(row()) == (1, 0, first.id)
        trans.rollback()


#: One step of a random conversation: a message under the node at ``parent`` (modulo the
#: nodes so far; None: a new root), its role, and its time in seconds (ties are common,
#: so the id decides "earlier"); or a summary under that node.
STEP = st.tuples(st.one_of(st.none(), st.integers(0, 40)),
                 st.sampled_from(["user", "assistant", "summary"]), st.integers(0, 4))


@settings(max_examples=examples(30), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, min_size=1, max_size=18), current=st.integers(0, 40))
def test_views_agree_with_the_tree_for_random_conversations(
        db_url: str, backend: str, steps: list[tuple[int | None, str, int]], current: int
        ) -> None:
    start = datetime(2026, 11, 30, 23, 59, 58, tzinfo=UTC)
    tenant = f"random-{uuid.uuid4().hex[:12]}"       # its own tenant: usage_daily is per tenant
    with convotree.Store(db_url, tenant=tenant) as store:
        cid = store.create_conversation(title="random").id
        made: list[convotree.Node] = []
        for parent, role, second in steps:
            under = None if parent is None or not made else made[parent % len(made)]
            when = start + timedelta(seconds=second)
            if role == "summary":
                if under is not None:
                    store.add_summary(under, "a summary", model="gpt-4o-mini",
                                      input_tokens=second, output_tokens=1)
                continue
            made.append(store.append(cid, role=role, content=f"{role} {len(made)}",
                                     parent=under, created_at=when, model="gpt-4o"
                                     if role == "assistant" else None,
                                     input_tokens=second if role == "assistant" else None))
        if made:
            store.set_current(cid, made[current % len(made)])
        engine = store.engine
        with sql_audit.unaudited(), engine.connect() as conn:
            world = World.read(conn, cid)
            expected = as_distributed(world.messages(), backend)

            def rows(view: sa.Table) -> list[dict[str, Any]]:
                return [dict(r._mapping) for r in conn.execute(
                    sa.select(view).where(view.c.conversation_id == cid))]

            messages = rows(_views.messages)
            assert {(r["conversation_id"], r["id"]): {k: r[k] for k in expected[key]}
                    for r in messages for key in [(r["conversation_id"], r["id"])]} == expected
            (stats,) = rows(_views.conversation_stats)
            want = world.stats()[cid]
            assert {k: stats[k] for k in want} == want
            points = {(r["conversation_id"], r["node_id"]): {
                k: v for k, v in r.items() if k not in ("conversation_id", "node_id")}
                for r in rows(_views.branch_points)}
            assert points == world.branch_points()
            assert current_branch_ids(conn, backend, cid) == [
                n["id"] for n in world.current_path(cid)]
            daily = [r._mapping for r in conn.execute(
                sa.select(_views.usage_daily).where(_views.usage_daily.c.tenant_id == tenant))]
            assert sum(r["messages"] for r in daily) == len(made)
        store.delete_conversation(cid)


# --- the cookbook ----------------------------------------------------------------------------

HEX = re.compile(r"[0-9a-f]{32}")
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?")


def normal(value: Any) -> Any:
    """One value as both backends mean it: ids, days and times typed, numbers plain."""
    if isinstance(value, str) and HEX.fullmatch(value):
        return uuid.UUID(value)
    if isinstance(value, str) and STAMP.fullmatch(value):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d", value):
        return date.fromisoformat(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else round(float(value), 6)
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, bool):
        return int(value)
    return value


def parameters(backend: str, world: World) -> dict[str, Any]:
    (chosen,) = [c for c, row in world.conversations.items() if row["title"] == CHOSEN]
    days = sorted({utc_day(n["created_at"]) for n in world.nodes.values()})
    since = days[len(days) // 2]
    last = sorted(s["last_activity"] for s in world.stats().values())
    cutoff = last[len(last) // 3]
    months: dict[tuple[str, date], int] = defaultdict(int)
    for n in world.nodes.values():
        day = utc_day(n["created_at"])
        months[(world.tenant(n), day.replace(day=1))] += (n["input_tokens"] or 0) + (
            n["output_tokens"] or 0)
    quota = int(statistics.median(v for v in months.values() if v))
    if backend == "sqlite":
        return {"tenant": "acme", "conversation_id": chosen.hex, "since": since.isoformat(),
                "cutoff": cutoff.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
                "quota": quota}
    return {"tenant": "acme", "conversation_id": chosen, "since": since, "cutoff": cutoff,
            "quota": quota}


def expected_answers(world: World, p: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Each cookbook question answered in Python (``p``: the PostgreSQL-typed parameters)."""
    nodes = list(world.nodes.values())
    acme = [n for n in nodes if world.tenant(n) == "acme"]
    stats = world.stats()
    mine = sorted((s | {"id": c} for c, s in stats.items() if s["tenant_id"] == "acme"),
                  key=lambda s: s["id"])
    flags = world.messages()
    chosen = p["conversation_id"]
    answers: dict[str, list[tuple[Any, ...]]] = {}

    usage = world.usage_daily()
    answers["daily_spend"] = [
        (day, tenant, model, u["answers"], u["summaries"], u["input_tokens"],
         u["output_tokens"], u["cached_tokens"], u["reasoning_tokens"])
        for (day, tenant, model), u in sorted(usage.items(), key=lambda i: (i[0][0], i[0][1],
                                                                             i[0][2] or ""))
        if day >= p["since"] and model is not None]

    compared: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for n in nodes:
        if n["input_tokens"] is not None and n["counted_input_tokens"] is not None:
            compared[n["model"]].append(n)
    answers["counting_accuracy"] = [
        (model, len(rows), sum(n["counted_input_tokens"] for n in rows),
         sum(n["input_tokens"] for n in rows),
         round(sum(n["input_tokens"] - n["counted_input_tokens"] for n in rows) / len(rows), 2))
        for model, rows in sorted(compared.items())]

    answers["most_regenerated_conversations"] = [
        (s["id"], s["title"], s["regenerations"], s["branches"])
        for s in sorted((s for s in mine if s["regenerations"] > 0),
                        key=lambda s: (-s["regenerations"], s["id"]))[:10]]

    regenerated: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for n in acme:
        if flags[(n["conversation_id"], n["id"])]["is_regeneration"]:
            regenerated[n["model"]].append(n)
    answers["regenerations_by_model"] = [
        (model, len(rows), len({n["parent_id"] for n in rows}))
        for model, rows in sorted(regenerated.items(), key=lambda i: (-len(i[1]), i[0]))]

    firsts: dict[uuid.UUID, int] = {}
    for (cid, _), point in world.branch_points().items():
        if point["tenant_id"] == "acme":
            firsts[cid] = min(firsts.get(cid, 1 << 30), point["depth"] + 1)
    answers["turns_before_first_branch"] = [
        (len(firsts), round(sum(firsts.values()) / len(firsts), 6))]

    months: dict[tuple[str, date], int] = defaultdict(int)
    for (day, tenant, _), u in usage.items():
        months[(tenant, day.replace(day=1))] += u["input_tokens"] + u["output_tokens"]
    answers["tenants_over_quota"] = [
        (tenant, month, tokens) for (tenant, month), tokens in
        sorted(months.items(), key=lambda i: (i[0][1], i[0][0])) if tokens > p["quota"]]

    answers["longest_threads"] = [
        (s["id"], s["title"], s["max_depth"] + 1, s["messages"], s["branches"])
        for s in sorted((s for s in mine if s["messages"]),
                        key=lambda s: (-s["max_depth"], s["id"]))[:10]]

    answers["idle_conversations"] = [
        (s["id"], s["title"], s["last_activity"], s["messages"])
        for s in sorted((s for s in mine if s["last_activity"] < p["cutoff"]),
                        key=lambda s: (s["last_activity"], s["id"]))]

    summaries_by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for n in nodes:
        if n["kind"] == "summary":
            summaries_by_tenant[world.tenant(n)].append(n)
    answers["summaries_per_tenant"] = [
        (tenant, len({n["conversation_id"] for n in rows}), len(rows),
         sum(n["token_count"] for n in rows), sum(n["input_tokens"] for n in rows),
         sum(n["output_tokens"] for n in rows))
        for tenant, rows in sorted(summaries_by_tenant.items())]

    savings = []
    for s in sorted((n for n in nodes if n["conversation_id"] == chosen
                     and n["kind"] == "summary"), key=lambda n: (n["depth"], n["id"])):
        covered = world.path_to(world.nodes[(chosen, s["parent_id"])])
        replaced = [n for n in covered
                    if n["role"] not in ("system", "developer") and not n["pinned"]]
        tokens = sum(n["token_count"] + n["overhead_tokens"] for n in replaced)
        own = s["token_count"] + s["overhead_tokens"]
        savings.append((s["id"], s["depth"], len(replaced), tokens, own, tokens - own))
    assert len(savings) == 2 and savings[0][2] == 3     # q1, a1, a2 (not system, pinned q2)
    answers["summary_savings"] = savings

    tools: Counter[str] = Counter()
    for n in acme:
        for call in n["tool_calls"] or ():
            tools[call["function"]["name"]] += 1
    answers["tool_calls_by_name"] = sorted(tools.items(), key=lambda i: (-i[1], i[0]))

    answers["current_transcript"] = [(n["depth"], n["role"], n["model"], n["content"])
                                     for n in world.current_path(chosen)]

    hours = Counter(n["created_at"].astimezone(UTC).hour for n in acme if n["kind"] == "message")
    answers["messages_per_hour"] = sorted(hours.items())

    answers["branch_points_of_conversation"] = [
        (node_id, b["depth"], b["role"], b["children"], b["regenerations"], b["edits"])
        for (cid, node_id), b in sorted(world.branch_points().items(),
                                        key=lambda i: (i[1]["depth"], i[0][1]))
        if cid == chosen]

    messages = [n for n in nodes if n["conversation_id"] == chosen and n["kind"] == "message"]
    on = {n["id"] for n in world.current_path(chosen)}
    answers["off_current_branch"] = [(sum(n["id"] not in on for n in messages), len(messages))]
    return answers


@pytest.fixture(scope="module")
def cookbook(reporting_db: tuple[str, sa.Engine], world: World
             ) -> tuple[dict[str, Any], dict[str, list[tuple[Any, ...]]]]:
    backend = reporting_db[0]
    return parameters(backend, world), expected_answers(world, parameters("postgresql", world))


def test_the_cookbook_has_at_least_twelve_questions_on_each_backend() -> None:
    for backend in (*BACKENDS, "citus"):
        assert len(queries(backend)) >= 12
        assert queries(backend).keys() == queries("postgresql").keys()
    # A distributed database walks a branch only with the id in both halves.
    for name, sql in queries("citus").items():
        if "WITH RECURSIVE" in sql:
            member = sql.split("UNION ALL", 1)[1]
            assert "conversation_id = :conversation_id" in member, name
        assert "convotree_current_branch" not in sql and "on_current_branch" not in sql, name


@pytest.mark.parametrize("name", list(queries("postgresql")))
def test_cookbook_query(name: str, reporting_db: tuple[str, sa.Engine],
                        cookbook: tuple[dict[str, Any], dict[str, list[tuple[Any, ...]]]]
                        ) -> None:
    backend, engine = reporting_db
    params, answers = cookbook
    sql = queries(flavour(backend))[name]
    used = {k: v for k, v in params.items() if re.search(rf":{k}\b", sql)}
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), used).all()
    got = [tuple(normal(v) for v in row) for row in rows]
    want = [tuple(normal(v) for v in row) for row in answers[name]]
    assert got == want
    assert want, f"{name}: the fixture must give this question a non-empty answer"


def test_a_missing_or_duplicated_cookbook_query_is_an_error(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- cookbook: twice -->\n```sql\nSELECT 1\n```\n"
                    "<!-- cookbook: twice -->\n```sql\nSELECT 2\n```\n")
    with pytest.raises(ValueError, match="twice"):
        queries("sqlite", page)
    with pytest.raises(ValueError, match="backend"):
        queries("oracle", page)




def test_the_python_example_of_the_page_runs(reporting_db: tuple[str, sa.Engine],
                                            world: World) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", DOCUMENT.read_text(encoding="utf-8"),
                          re.DOTALL)
    scope: dict[str, Any] = {}
    exec(compile(block, "docs/reporting.md", "exec"), scope)
    with reporting_db[1].connect() as conn:
        got = dict(conn.execute(scope["query"]).all())
    want: Counter[str | None] = Counter()
    for n in world.nodes.values():
        if world.tenant(n) == "acme":
            want[n["model"]] += n["output_tokens"] or 0
    assert got == dict(want) and len(got) > 2


def test_a_report_on_a_database_before_the_views_says_to_upgrade(empty_db_url: str) -> None:
    with sql_audit.unaudited():
        convotree.migrate(empty_db_url)
        convotree.downgrade(empty_db_url, "0005")
        engine = convotree.create_engine(empty_db_url)
        try:
            with engine.connect() as conn, pytest.raises(
                    convotree.errors.SchemaOutOfDate, match=r"revision 0006.*db upgrade"):
                reporting.totals(conn, tenant="acme")
        finally:
            engine.dispose()
