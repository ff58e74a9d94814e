"""The reporting views (revision 0006) as SQLAlchemy tables, for reading them typed.

Why a second ``MetaData``: these are views, created by the migration from SQL written
per backend; ``_schema.metadata`` holds what ``create_all`` and alembic's comparison
manage, and must never try to create a table of the same name. The columns here are the
views' public interface (docs/reporting.md describes each one); a test reflects every
view on both backends and checks it has exactly these columns, in this order.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, Integer, MetaData, Table, Text, Uuid
from sqlalchemy.engine import Dialect
from sqlalchemy.types import Date, TypeDecorator

from ._types import JSONType, UTCDateTime

__all__ = ["VIEWS", "branch_points", "conversation_stats", "current_branch", "messages",
           "usage_daily", "view_metadata"]

view_metadata = MetaData()


class UTCDate(TypeDecorator[date]):
    """A UTC calendar day: ``date`` on PostgreSQL, ``YYYY-MM-DD`` text on SQLite."""

    impl = Date
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> date | None:
        return date.fromisoformat(value) if isinstance(value, str) else value


def _node_columns() -> list[Column[Any]]:
    return [
        Column("id", Uuid()), Column("parent_id", Uuid()), Column("depth", Integer()),
        Column("kind", Text()), Column("role", Text()), Column("name", Text()),
        Column("content", Text()), Column("model", Text()),
        Column("tool_calls", JSONType), Column("tool_call_id", Text()),
    ]


current_branch = Table(
    "convotree_current_branch", view_metadata,
    Column("conversation_id", Uuid()), Column("tenant_id", Text()),
    Column("conversation_title", Text()), *_node_columns(),
    Column("content_tokens", Integer()), Column("overhead_tokens", Integer()),
    Column("input_tokens", Integer()), Column("output_tokens", Integer()),
    Column("created_at", UTCDateTime()), Column("is_current", Boolean()),
)

messages = Table(
    "convotree_messages", view_metadata,
    Column("conversation_id", Uuid()), Column("tenant_id", Text()),
    Column("conversation_title", Text()), *_node_columns(),
    Column("finish_reason", Text()), Column("response_id", Text()),
    Column("content_tokens", Integer()), Column("overhead_tokens", Integer()),
    Column("tokens", Integer()), Column("input_tokens", Integer()),
    Column("output_tokens", Integer()), Column("cached_tokens", Integer()),
    Column("reasoning_tokens", Integer()), Column("counted_input_tokens", Integer()),
    Column("pinned", Boolean()), Column("compacted", Boolean()),
    Column("summary_base_id", Uuid()), Column("metadata", JSONType),
    Column("created_at", UTCDateTime()), Column("is_leaf", Boolean()),
    Column("on_current_branch", Boolean()), Column("siblings", Integer()),
    Column("is_regeneration", Boolean()), Column("is_edit", Boolean()),
)

conversation_stats = Table(
    "convotree_conversation_stats", view_metadata,
    Column("conversation_id", Uuid()), Column("tenant_id", Text()), Column("title", Text()),
    Column("created_at", UTCDateTime()), Column("updated_at", UTCDateTime()),
    Column("current_node_id", Uuid()),
    *(Column(name, BigInteger()) for name in (
        "messages", "summaries", "branches", "branch_points", "regenerations", "edits")),
    Column("max_depth", Integer()),
    *(Column(name, BigInteger()) for name in (
        "content_tokens", "summary_tokens", "input_tokens", "output_tokens",
        "cached_tokens", "reasoning_tokens")),
    Column("first_activity", UTCDateTime()), Column("last_activity", UTCDateTime()),
)

usage_daily = Table(
    "convotree_usage_daily", view_metadata,
    Column("day", UTCDate()), Column("tenant_id", Text()), Column("model", Text()),
    *(Column(name, BigInteger()) for name in (
        "messages", "answers", "summaries", "content_tokens", "input_tokens",
        "output_tokens", "cached_tokens", "reasoning_tokens", "compared_answers",
        "counted_input_tokens", "counting_error")),
)

branch_points = Table(
    "convotree_branch_points", view_metadata,
    Column("conversation_id", Uuid()), Column("tenant_id", Text()),
    Column("node_id", Uuid()), Column("depth", Integer()), Column("role", Text()),
    Column("model", Text()), Column("children", BigInteger()),
    Column("regenerations", BigInteger()), Column("edits", BigInteger()),
    Column("first_child_at", UTCDateTime()), Column("last_child_at", UTCDateTime()),
)

#: Every view, in the order the migration creates them.
VIEWS = (current_branch, messages, conversation_stats, usage_daily, branch_points)
