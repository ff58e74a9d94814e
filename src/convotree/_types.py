"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class _JSON(TypeDecorator[Any]):
    """JSON on SQLite, JSONB on PostgreSQL (indexable, and what reporting SQL expects).

    Python None is stored as SQL NULL, not as the JSON text 'null', so that reporting
    SQL can write ``tool_calls IS NULL`` on both backends. The PostgreSQL type is chosen
    when a PostgreSQL dialect asks for it: importing SQLAlchemy's PostgreSQL dialect
    costs tens of milliseconds (it pulls in asyncio), which a SQLite user and every
    command-line start would otherwise pay.
    """

    impl = JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))


JSONType: TypeEngine[Any] = _JSON()


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware.

    SQLite has no time zone type and silently drops offsets, so values are converted
    to naive UTC before they are written there, and marked UTC when read back.
    PostgreSQL stores ``timestamptz``; values come back converted to UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; convotree stores aware (UTC) timestamps")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
