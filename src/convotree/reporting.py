"""Headline numbers about a tenant's conversations, computed by the database.

Every function here is one SQL statement over the reporting views of revision 0006
(``convotree_conversation_stats``, ``convotree_usage_daily``; see docs/reporting.md), so
the Python API, ``convotree report``/``convotree ls`` and an analyst's SQL see the same
numbers; nothing loads messages into Python, so a report on a million-message database
costs what the aggregate costs. They take a ``Store`` (for its engine and tenant) or a
``Connection`` plus a tenant, and return typed rows:

    from convotree import Store, reporting
    with Store(url) as store:
        reporting.totals(store)                  # Totals(conversations=..., ...)
        reporting.by_model(store)                # [ModelUsage(model=..., ...), ...]
        reporting.by_day(store, days=7)          # [DayUsage(day=date(...), ...), ...]
        reporting.conversation_stats(store, limit=20)

Why these statements are not confined to one conversation: they are the reports
*across* conversations, the one place where that is the point. On Citus they run as
multi-shard queries over views joined and correlated on the distribution column
(``conversation_id``). The test suite's SQL audit (``tests/sql_audit.py``) demands
``conversation_id = <param>`` on every statement touching ``convotree_nodes``; these
statements all go through :func:`_execute`, and the tests exempt that one function and
nothing else (see ``tests/test_reporting.py``).

Portability: the same statements run on SQLite and PostgreSQL; the views bucket days in
UTC on both (``convotree_usage_daily.day``). ``reporting.views`` holds the five views as
SQLAlchemy tables with typed columns, for queries of your own that read ids, times,
days and flags as Python values on both backends:
``select(views.usage_daily).where(views.usage_daily.c.tenant_id == "acme")``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Row, func, select
from sqlalchemy.exc import SQLAlchemyError

from . import _args, _dberrors, _rls
from . import _views as views
from ._schema import conversations
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
    "views",
]


#: The longest span ``by_day`` reports (ten years of days).
MAX_DAYS = 3660


# --- typed rows ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationStats:
    """One conversation with its size (a row of ``convotree_conversation_stats``):
    ``branches`` counts message leaves, ``tokens`` the messages' content tokens,
    ``regenerations``/``edits`` the answers/prompts added beside an earlier one,
    ``input_tokens``/``output_tokens`` the usage the API reported (summaries included),
    ``last_activity`` the newest node's time."""

    id: uuid.UUID
    title: str | None
    created_at: datetime
    updated_at: datetime
    current_node_id: uuid.UUID | None
    messages: int
    summaries: int
    branches: int
    tokens: int
    branch_points: int = 0
    regenerations: int = 0
    edits: int = 0
    max_depth: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    last_activity: datetime | None = None


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


def _sum(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


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

    One statement: the page of conversations is chosen first (``IN`` a ``LIMIT``ed
    subquery over the ``(tenant_id, updated_at)`` index), then the view aggregates only
    that page's nodes (PostgreSQL: its ``LATERAL`` per conversation; SQLite: its
    correlated subqueries), whatever the tenant's size. A plain join and an ``IN``
    rather than a subquery in FROM: the shape Citus accepts for a multi-shard query.
    """
    limit = _args.limit(limit)

    def build(tenant: str) -> Executable:
        page = (select(conversations.c.id)
                .where(conversations.c.tenant_id == tenant)
                .order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
                .limit(limit))
        v = views.conversation_stats.c
        return (
            select(v.conversation_id.label("id"), v.title, v.created_at, v.updated_at,
                   v.current_node_id, v.messages, v.summaries, v.branches,
                   v.content_tokens.label("tokens"), v.branch_points, v.regenerations,
                   v.edits, v.max_depth, v.input_tokens, v.output_tokens, v.last_activity)
            .where(v.tenant_id == tenant, v.conversation_id.in_(page))
            .order_by(v.updated_at.desc(), v.conversation_id.desc())
        )

    return [ConversationStats(**row._mapping) for row in _run(source, tenant, build)]


def totals(source: Store | Connection, *, tenant: str | None = None) -> Totals:
    """Conversations, messages, summaries, branches and tokens of the tenant: the sums
    of its rows of ``convotree_conversation_stats``."""
    def build(tenant: str) -> Executable:
        v = views.conversation_stats.c
        return (select(func.count().label("conversations"),
                       _sum(v.messages).label("messages"),
                       _sum(v.summaries).label("summaries"),
                       _sum(v.branches).label("branches"),
                       _sum(v.content_tokens).label("tokens"),
                       _sum(v.summary_tokens).label("summary_tokens"),
                       _sum(v.input_tokens).label("input_tokens"),
                       _sum(v.output_tokens).label("output_tokens"))
                .where(v.tenant_id == tenant))

    (row,) = _run(source, tenant, build)
    return Totals(**{key: int(value) for key, value in row._mapping.items()})


def by_model(source: Store | Connection, *, tenant: str | None = None) -> list[ModelUsage]:
    """Messages and summaries grouped by the model that wrote them, most tokens first
    (``convotree_usage_daily`` summed over the days)."""
    def build(tenant: str) -> Executable:
        v = views.usage_daily.c
        tokens = _sum(v.content_tokens)
        return (
            select(v.model, _sum(v.messages + v.summaries).label("messages"),
                   tokens.label("tokens"), _sum(v.input_tokens).label("input_tokens"),
                   _sum(v.output_tokens).label("output_tokens"))
            .where(v.tenant_id == tenant)
            .group_by(v.model)
            # NULLs sort differently on the two backends: put "no model" last on both.
            .order_by(tokens.desc(), v.model.is_(None), v.model)
        )

    return [ModelUsage(model=row.model, messages=int(row.messages), tokens=int(row.tokens),
                       input_tokens=int(row.input_tokens), output_tokens=int(row.output_tokens))
            for row in _run(source, tenant, build)]


def by_day(source: Store | Connection, *, tenant: str | None = None, days: int = 7,
           today: date | None = None) -> list[DayUsage]:
    """Nodes created on each of the last ``days`` UTC days (``today`` included), oldest
    first; days with nothing stored are left out (``convotree_usage_daily`` summed over
    the models)."""
    days = _args.required_count(days, "days", minimum=1, maximum=MAX_DAYS)
    if today is not None and (not isinstance(today, date) or isinstance(today, datetime)):
        raise InvalidArgument(f"today must be a date, not {today!r}")
    last = today or datetime.now(UTC).date()
    try:
        first = last - timedelta(days=days - 1)
    except OverflowError:
        raise InvalidArgument(f"{days} days up to {last} reach outside the calendar "
                              "(years 1 to 9999)") from None

    def build(tenant: str) -> Executable:
        v = views.usage_daily.c
        return (
            select(v.day, _sum(v.messages + v.summaries).label("messages"),
                   _sum(v.content_tokens).label("tokens"),
                   _sum(v.input_tokens).label("input_tokens"),
                   _sum(v.output_tokens).label("output_tokens"))
            .where(v.tenant_id == tenant, v.day >= first, v.day <= last)
            .group_by(v.day)
            .order_by(v.day)
        )

    return [DayUsage(day=row.day, messages=int(row.messages), tokens=int(row.tokens),
                     input_tokens=int(row.input_tokens), output_tokens=int(row.output_tokens))
            for row in _run(source, tenant, build)]
