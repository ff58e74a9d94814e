"""Headline numbers about a tenant's conversations, computed by the database.

Every function here is one SQL statement over the two tables; nothing loads messages
into Python, so a report on a million-message database costs what the aggregate costs.
They take a ``Store`` (for its engine and tenant) or a ``Connection`` plus a tenant,
and return typed rows:

    from convotree import Store, reporting
    with Store(url) as store:
        reporting.totals(store)                  # Totals(conversations=..., ...)
        reporting.by_model(store)                # [ModelUsage(model=..., ...), ...]
        reporting.by_day(store, days=7)          # [DayUsage(day=date(...), ...), ...]
        reporting.conversation_stats(store, limit=20)

Why these statements are not confined to one conversation: they are the reports
*across* conversations, the one place where that is the point. On Citus they run as
multi-shard queries grouped or joined on the distribution column (``conversation_id``),
which Citus supports. The test suite's SQL audit (``tests/sql_audit.py``) demands
``conversation_id = <param>`` on every statement touching ``convotree_nodes``; these
statements all go through :func:`_execute`, and the tests exempt that one function and
nothing else (see ``tests/test_reporting.py``).

Portability: the same statements run on SQLite and PostgreSQL. Dates are bucketed in
UTC by :class:`utc_date`, compiled per dialect (SQLite stores naive UTC text, so
``date(x)``; PostgreSQL stores ``timestamptz``, so ``(x AT TIME ZONE 'UTC')::date``,
which does not depend on the session's time zone).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Date,
    Engine,
    Executable,
    Row,
    and_,
    case,
    exists,
    func,
    select,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from . import _args, _dberrors, _rls
from ._schema import conversations, nodes
from .errors import ConfigurationError, InvalidArgument
from .store import Store, check_tenant

__all__ = [
    "ConversationStats",
    "CrossTenant",
    "DayUsage",
    "ModelUsage",
    "Totals",
    "by_day",
    "by_model",
    "conversation_stats",
    "totals",
]


#: The longest span ``by_day`` reports (ten years of days).
MAX_DAYS = 3660


# --- typed rows ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationStats:
    """One conversation with its size: ``branches`` counts message leaves."""

    id: uuid.UUID
    title: str | None
    created_at: datetime
    updated_at: datetime
    current_node_id: uuid.UUID | None
    messages: int
    summaries: int
    branches: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Totals:
    """Everything the tenant stores, in one row.

    ``tokens``: content tokens counted at insert (``token_count``) of messages;
    ``summary_tokens``: the same for summary nodes (``by_model`` and ``by_day`` count
    both: their totals are ``tokens + summary_tokens``);
    ``input_tokens``/``output_tokens``: usage the API reported, summed over messages and
    summaries (a summary records what making it cost).
    """

    conversations: int
    messages: int
    summaries: int
    branches: int
    tokens: int
    summary_tokens: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """Nodes (messages and summaries) written by one model (``None``: messages with no
    model, e.g. the user's); ``messages`` counts those nodes, ``tokens`` their content
    tokens."""

    model: str | None
    messages: int
    tokens: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class DayUsage:
    """Nodes (messages and summaries) created on one UTC day; ``messages`` counts those
    nodes, ``tokens`` their content tokens."""

    day: date
    messages: int
    tokens: int
    input_tokens: int
    output_tokens: int


# --- portable pieces ---------------------------------------------------------------------


class utc_date(FunctionElement[date]):  # lower case: reads as a SQL function
    """The UTC calendar day of a timestamp column, on SQLite and PostgreSQL."""

    type = Date()
    inherit_cache = True


@compiles(utc_date, "sqlite")
def _utc_date_sqlite(element: utc_date, compiler: SQLCompiler, **kw: Any) -> str:
    # convotree stores naive UTC text on SQLite ("2025-01-31 23:59:59.000000").
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_date)
def _utc_date_default(element: utc_date, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(({compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC') AS DATE)"


def _as_date(value: date | str) -> date:
    # SQLite returns date() as text; PostgreSQL as a date.
    return date.fromisoformat(value) if isinstance(value, str) else value


def _sum(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


def _is_message_leaf(n: Any) -> Any:
    """A message with no message child: the end of one branch."""
    child = nodes.alias("child")
    return and_(n.c.kind == "message", ~exists().where(
        child.c.conversation_id == n.c.conversation_id,
        child.c.parent_id == n.c.id,
        child.c.kind == "message",
    ))


def _count_if(condition: Any) -> Any:
    return _sum(case((condition, 1), else_=0))


def _tenant_nodes(tenant: str) -> tuple[Any, Any]:
    """Nodes joined to their conversation, limited to the tenant (the join is on the
    distribution column, so Citus runs it shard by shard)."""
    n = nodes.alias("n")
    c = conversations.alias("c")
    joined = n.join(c, and_(c.c.id == n.c.conversation_id, c.c.tenant_id == tenant))
    return n, joined


# --- execution ---------------------------------------------------------------------------


def _execute(conn: Connection, statement: Executable) -> Sequence[Row[Any]]:
    """Run one reporting statement: the only way this module reaches the database."""
    return conn.execute(statement).all()


def _run(source: Store | Connection, tenant: str | None, build: Any) -> Sequence[Row[Any]]:
    """A tenant-bound ``Store`` reports on its own tenant and nothing else; a raw
    ``Connection`` (the operator's way, see ``CrossTenant``) names the tenant."""
    if isinstance(source, Store):
        if tenant is not None and tenant != source.tenant:
            raise ConfigurationError(
                "a store reports on its own tenant only; for another tenant open a store "
                "with Store(url, tenant=...) or, as an operator, use "
                "convotree.reporting.CrossTenant(engine)")
        with source._transaction(write=False) as conn:
            return _execute(conn, build(source.tenant))
    if not isinstance(source, Connection):
        raise InvalidArgument(f"reports take a Store or an SQLAlchemy Connection, not "
                              f"{type(source).__name__}")
    if tenant is None:
        raise InvalidArgument("a report on a Connection needs tenant= (the tenant to "
                              "report on); a Store reports on its own")
    check_tenant(tenant)
    try:
        return _execute(source, build(tenant))
    except SQLAlchemyError as exc:
        raise _dberrors.translate(exc, "the report") from exc


class CrossTenant:
    """Reports on any tenant: the operator's entry point, kept apart on purpose.

    A ``Store`` made for tenant "acme" only ever reports on "acme"; whoever may see
    every tenant's numbers opens this on an engine (or a connection) and names the
    tenant on each call: ``CrossTenant(engine).totals("acme")``.
    """

    def __init__(self, source: Engine | Connection) -> None:
        if not isinstance(source, Engine | Connection):
            raise InvalidArgument("CrossTenant takes an SQLAlchemy Engine or Connection")
        self._source = source

    def _call(self, report: Any, tenant: str, **options: Any) -> Any:
        if isinstance(self._source, Connection):
            return report(self._source, tenant=tenant, **options)
        with _rls.connect(self._source, tenant) as conn:   # scoped under RLS too
            return report(conn, tenant=tenant, **options)

    def totals(self, tenant: str) -> Totals:
        return self._call(totals, tenant)   # type: ignore[no-any-return]

    def by_model(self, tenant: str) -> list[ModelUsage]:
        return self._call(by_model, tenant)   # type: ignore[no-any-return]

    def by_day(self, tenant: str, *, days: int = 7, today: date | None = None
               ) -> list[DayUsage]:
        return self._call(by_day, tenant, days=days, today=today)  # type: ignore[no-any-return]

    def conversation_stats(self, tenant: str, *, limit: int = 50) -> list[ConversationStats]:
        return self._call(  # type: ignore[no-any-return]
            conversation_stats, tenant, limit=limit)


# --- reports -------------------------------------------------------------------------------


def conversation_stats(source: Store | Connection, *, tenant: str | None = None,
                       limit: int = 50) -> list[ConversationStats]:
    """The ``limit`` conversations with the newest activity, with their sizes.

    One statement: the page of conversations is chosen first (index on
    ``(tenant_id, updated_at)``), then only its nodes are aggregated.
    """
    limit = _args.limit(limit)

    def build(tenant: str) -> Executable:
        page = (select(conversations)
                .where(conversations.c.tenant_id == tenant)
                .order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
                .limit(limit)
                .subquery("c"))
        n = nodes.alias("n")
        message = n.c.kind == "message"
        return (
            select(
                page.c.id, page.c.title, page.c.created_at, page.c.updated_at,
                page.c.current_node_id,
                _count_if(message).label("messages"),
                _count_if(n.c.kind == "summary").label("summaries"),
                _count_if(_is_message_leaf(n)).label("branches"),
                _sum(case((message, n.c.token_count), else_=0)).label("tokens"),
            )
            .select_from(page.outerjoin(n, n.c.conversation_id == page.c.id))
            .group_by(page.c.id, page.c.title, page.c.created_at, page.c.updated_at,
                      page.c.current_node_id)
            .order_by(page.c.updated_at.desc(), page.c.id.desc())
        )

    return [ConversationStats(**row._mapping) for row in _run(source, tenant, build)]


def totals(source: Store | Connection, *, tenant: str | None = None) -> Totals:
    """Conversations, messages, summaries, branches and tokens of the tenant."""
    def build(tenant: str) -> Executable:
        n, joined = _tenant_nodes(tenant)
        node_totals = (
            select(
                _count_if(n.c.kind == "message").label("messages"),
                _count_if(n.c.kind == "summary").label("summaries"),
                _count_if(_is_message_leaf(n)).label("branches"),
                _sum(case((n.c.kind == "message", n.c.token_count), else_=0)).label("tokens"),
                _sum(case((n.c.kind == "summary", n.c.token_count), else_=0)
                     ).label("summary_tokens"),
                _sum(n.c.input_tokens).label("input_tokens"),
                _sum(n.c.output_tokens).label("output_tokens"),
            ).select_from(joined).subquery("t")
        )
        count = (select(func.count()).select_from(conversations)
                 .where(conversations.c.tenant_id == tenant).scalar_subquery())
        return select(count.label("conversations"), *node_totals.c)

    (row,) = _run(source, tenant, build)
    return Totals(**{key: int(value) for key, value in row._mapping.items()})


def by_model(source: Store | Connection, *, tenant: str | None = None) -> list[ModelUsage]:
    """Messages and summaries grouped by the model that wrote them, most tokens first."""
    def build(tenant: str) -> Executable:
        n, joined = _tenant_nodes(tenant)
        tokens = _sum(n.c.token_count)
        return (
            select(n.c.model, func.count().label("messages"), tokens.label("tokens"),
                   _sum(n.c.input_tokens).label("input_tokens"),
                   _sum(n.c.output_tokens).label("output_tokens"))
            .select_from(joined)
            .group_by(n.c.model)
            # NULLs sort differently on the two backends: put "no model" last on both.
            .order_by(tokens.desc(), n.c.model.is_(None), n.c.model)
        )

    return [ModelUsage(**row._mapping) for row in _run(source, tenant, build)]


def by_day(source: Store | Connection, *, tenant: str | None = None, days: int = 7,
           today: date | None = None) -> list[DayUsage]:
    """Nodes created on each of the last ``days`` UTC days (``today`` included), oldest
    first; days with nothing stored are left out."""
    days = _args.required_count(days, "days", minimum=1, maximum=MAX_DAYS)
    if today is not None and (not isinstance(today, date) or isinstance(today, datetime)):
        raise InvalidArgument(f"today must be a date, not {today!r}")
    last = today or datetime.now(UTC).date()
    try:
        since = datetime.combine(last - timedelta(days=days - 1), time(), tzinfo=UTC)
        until = datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC)
    except OverflowError:
        raise InvalidArgument(f"{days} days up to {last} reach outside the calendar "
                              "(years 1 to 9999)") from None

    def build(tenant: str) -> Executable:
        n, joined = _tenant_nodes(tenant)
        day = utc_date(n.c.created_at)
        return (
            select(day.label("day"), func.count().label("messages"),
                   _sum(n.c.token_count).label("tokens"),
                   _sum(n.c.input_tokens).label("input_tokens"),
                   _sum(n.c.output_tokens).label("output_tokens"))
            .select_from(joined)
            .where(n.c.created_at >= since, n.c.created_at < until)
            .group_by(day)
            .order_by(day)
        )

    rows = _run(source, tenant, build)
    return [DayUsage(**{**row._mapping, "day": _as_date(row.day)}) for row in rows]
