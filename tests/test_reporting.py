"""convotree.reporting: the numbers are right, computed in SQL, on both backends.

The reports aggregate across conversations, so their statements cannot carry
``conversation_id = <param>``; they all run through ``reporting._execute``, and the
``reporting_unaudited`` fixture exempts exactly that function from the SQL audit
(everything else a test does stays audited).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa

import convotree
from convotree import errors, reporting
from tests import sql_audit
from tests.test_cli_support import exempt_reporting


@pytest.fixture(autouse=True)
def reporting_unaudited(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exempt the reporting statements (and only them) from the one-conversation audit."""
    exempt_reporting(monkeypatch)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def tenant_store(db_url: str) -> Iterator[convotree.Store]:
    """A store on a tenant of its own: the shared database holds other tests' data."""
    with convotree.Store(db_url, tenant=f"report-{uuid.uuid4().hex}") as store:
        yield store


def build(store: convotree.Store) -> dict[str, Any]:
    """Two conversations with known counts: 6 messages, 3 branches, usage on two."""
    first = store.create_conversation(title="first")
    system = store.append(first, role="system", content="Be brief.", created_at=at(1, 23, 30))
    ask = store.append(first, parent=system, role="user", content="Hello there",
                       created_at=at(1, 23, 40))
    answer = store.append(first, parent=ask, role="assistant", content="Hi!", model="gpt-4o",
                          input_tokens=100, output_tokens=7, created_at=at(2, 0, 30))
    store.edit(answer, "Hello, how can I help?", input_tokens=100, output_tokens=9,
               created_at=at(2, 0, 31))
    second = store.create_conversation(title="second")
    question = store.append(second, role="user", content="Count to three",
                            created_at=at(2, 9))
    store.append(second, parent=question, role="assistant", content="1, 2, 3",
                 model="gpt-4o-mini", created_at=at(2, 9, 1))
    nodes = [n for conv in (first, second) for n in store.tree(conv)]
    return {"first": first, "second": second, "nodes": nodes}


def test_totals(tenant_store: convotree.Store) -> None:
    data = build(tenant_store)
    totals = reporting.totals(tenant_store)
    assert totals == reporting.Totals(
        conversations=2, messages=6, summaries=0, branches=3,
        tokens=sum(n.token_count for n in data["nodes"]), summary_tokens=0,
        input_tokens=200, output_tokens=16)


def test_the_three_reports_agree_with_a_summary_stored(tenant_store: convotree.Store) -> None:
    """Headline, by-model and by-day token numbers add up to the same total (summaries
    are counted apart in the headline, inside the two tables)."""
    data = build(tenant_store)
    leaf = tenant_store.leaves(data["second"])[0]
    summary = tenant_store.add_summary(leaf, "Summary of the earlier conversation:\n- counted")
    totals = reporting.totals(tenant_store)
    assert totals.summaries == 1 and totals.summary_tokens == summary.token_count > 0
    everything = totals.tokens + totals.summary_tokens
    assert everything == sum(n.token_count for n in data["nodes"]) + summary.token_count
    assert sum(m.tokens for m in reporting.by_model(tenant_store)) == everything
    days = reporting.by_day(tenant_store, days=3660)
    assert sum(d.tokens for d in days) == everything
    assert sum(d.messages for d in days) == totals.messages + totals.summaries


def test_empty_tenant_reports_zeros(tenant_store: convotree.Store) -> None:
    assert reporting.totals(tenant_store) == reporting.Totals(0, 0, 0, 0, 0, 0, 0, 0)
    assert reporting.by_model(tenant_store) == []
    assert reporting.conversation_stats(tenant_store) == []


def test_other_tenants_are_not_counted(db_url: str, tenant_store: convotree.Store) -> None:
    build(tenant_store)
    with convotree.Store(db_url, tenant=f"other-{uuid.uuid4().hex}") as other:
        other.append(other.create_conversation(), role="user", content="not yours")
        assert reporting.totals(other).messages == 1
    assert reporting.totals(tenant_store).messages == 6


def test_by_model(tenant_store: convotree.Store) -> None:
    data = build(tenant_store)
    rows = reporting.by_model(tenant_store)
    assert {r.model for r in rows} == {None, "gpt-4o", "gpt-4o-mini"}
    gpt4o = next(r for r in rows if r.model == "gpt-4o")
    assert (gpt4o.messages, gpt4o.input_tokens, gpt4o.output_tokens) == (2, 200, 16)
    nobody = next(r for r in rows if r.model is None)
    assert (nobody.messages, nobody.input_tokens) == (3, 0)
    assert sum(r.tokens for r in rows) == sum(n.token_count for n in data["nodes"])
    assert [r.tokens for r in rows] == sorted((r.tokens for r in rows), reverse=True)


def test_by_model_puts_no_model_last_on_a_tie(tenant_store: convotree.Store) -> None:
    conv = tenant_store.create_conversation()
    ask = tenant_store.append(conv, role="user", content="same")
    tenant_store.append(conv, parent=ask, role="assistant", content="same", model="m")
    assert [r.model for r in reporting.by_model(tenant_store)] == ["m", None]


def test_by_day_buckets_in_utc(tenant_store: convotree.Store) -> None:
    build(tenant_store)
    rows = reporting.by_day(tenant_store, days=2, today=date(2025, 3, 2))
    assert [(r.day, r.messages) for r in rows] == [(date(2025, 3, 1), 2), (date(2025, 3, 2), 4)]
    assert rows[1].input_tokens == 200
    assert reporting.by_day(tenant_store, days=1, today=date(2025, 3, 1))[0].messages == 2
    assert reporting.by_day(tenant_store, days=3, today=date(2025, 2, 27)) == []


def test_by_day_ignores_the_session_time_zone(tenant_store: convotree.Store,
                                              backend: str) -> None:
    build(tenant_store)
    with tenant_store.engine.connect() as conn:
        if backend == "postgresql":
            # 23:30 UTC is the next day in Tokyo: buckets must still be UTC days.
            conn.execute(sa.text("SET TIME ZONE 'Asia/Tokyo'"))
        rows = reporting.by_day(conn, tenant=tenant_store.tenant, days=2,
                                today=date(2025, 3, 2))
    assert [(r.day, r.messages) for r in rows] == [(date(2025, 3, 1), 2), (date(2025, 3, 2), 4)]


def test_by_day_rejects_no_days(tenant_store: convotree.Store) -> None:
    with pytest.raises(ValueError, match="between 1"):
        reporting.by_day(tenant_store, days=0)


def test_conversation_stats(tenant_store: convotree.Store) -> None:
    data = build(tenant_store)
    summarized = tenant_store.context(
        tenant_store.current(data["first"]), model="gpt-4o-mini", budget=40,
        summarizer=convotree.ExtractiveSummarizer(),
        summary_options=convotree.SummaryOptions(keep_recent=0.2, max_summary_tokens=12))
    rows = reporting.conversation_stats(tenant_store)
    assert [r.title for r in rows] == ["second", "first"]  # newest activity first
    second, first = rows
    assert (first.messages, first.branches, second.messages, second.branches) == (4, 2, 2, 1)
    assert first.summaries == (1 if summarized.report.summary_created else 0)
    assert first.tokens == sum(n.token_count for n in data["nodes"]
                               if n.conversation_id == data["first"].id)
    assert first.current_node_id == tenant_store.get_conversation(data["first"]).current_node_id
    assert reporting.conversation_stats(tenant_store, limit=1)[0].title == "second"


def test_each_report_is_one_statement(tenant_store: convotree.Store) -> None:
    build(tenant_store)
    for report in (reporting.totals, reporting.by_model, reporting.by_day,
                   reporting.conversation_stats):
        statements: list[str] = []

        def count(conn: sa.Connection, statement: Any, seen: list[str] = statements) -> Any:
            seen.append(str(statement))
            with sql_audit.unaudited():
                return conn.execute(statement).all()

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(reporting, "_execute", count)
            report(tenant_store)  # type: ignore[operator]
        assert len(statements) == 1, report


def test_a_tenant_store_never_reports_on_another_tenant(db_url: str,
                                                        tenant_store: convotree.Store) -> None:
    """A store bound to tenant B asked for acme's numbers refuses; the operator's
    ``CrossTenant`` entry point gives them, and a raw connection must name the tenant."""
    build(tenant_store)
    with convotree.Store(db_url, tenant=f"b-{uuid.uuid4().hex}") as other:
        for report in (reporting.totals, reporting.by_model, reporting.by_day,
                       reporting.conversation_stats):
            with pytest.raises(errors.ConfigurationError, match="own tenant"):
                report(other, tenant=tenant_store.tenant)
        assert reporting.totals(other, tenant=other.tenant).conversations == 0
        admin = reporting.CrossTenant(other.engine)
        assert admin.totals(tenant_store.tenant) == reporting.totals(tenant_store)
        assert admin.by_model(tenant_store.tenant) == reporting.by_model(tenant_store)
        assert admin.conversation_stats(tenant_store.tenant, limit=5) == \
            reporting.conversation_stats(tenant_store, limit=5)
        assert admin.by_day(tenant_store.tenant, days=3660) == \
            reporting.by_day(tenant_store, days=3660)
        with other.engine.connect() as conn:
            with pytest.raises(errors.InvalidArgument, match="tenant="):
                reporting.totals(conn)
            assert reporting.CrossTenant(conn).totals(tenant_store.tenant).messages > 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda s: reporting.by_day(s, days=0), "days"),
    (lambda s: reporting.by_day(s, days="7"), "days"),
    (lambda s: reporting.by_day(s, days=True), "days"),
    (lambda s: reporting.by_day(s, days=10**9), "days"),
    (lambda s: reporting.by_day(s, today="2025-01-01"), "today"),
    (lambda s: reporting.conversation_stats(s, limit=-1), "limit"),
    (lambda s: reporting.conversation_stats(s, limit=0), "limit"),
    (lambda s: reporting.conversation_stats(s, limit=2**63), "limit"),
    (lambda s: reporting.totals("sqlite://"), "Store or"),
])
def test_bad_report_arguments_are_typed_on_both_backends(
        tenant_store: convotree.Store, call: Any, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        call(tenant_store)
