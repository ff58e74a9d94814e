"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import decimal
import math
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

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        # SQLite keeps JSON text as given; PostgreSQL's jsonb normalizes it. Store it on
        # SQLite the way jsonb would, so both backends read back the same value.
        if value is None or dialect.name == "postgresql":
            return value
        return as_jsonb(value)


def _jsonb_key(key: str) -> tuple[int, bytes]:
    encoded = key.encode("utf-8")
    return len(encoded), encoded


def as_jsonb(value: Any) -> Any:
    """``value`` as PostgreSQL's jsonb gives it back: object keys shorter first, then by
    their UTF-8 bytes; numbers as exact decimals, so a float written with a positive
    exponent (``1e+16`` and above, every one of them integral) reads back as that
    integer, and -0.0 as 0.0. Values already in that form are returned as they are."""
    if isinstance(value, dict):
        keys = list(value)
        ordered = sorted(keys, key=_jsonb_key) if len(keys) > 1 else keys
        changed = ordered != keys
        items = []
        for key in ordered:
            inner = value[key]
            normal = as_jsonb(inner) if isinstance(inner, dict | list | float) else inner
            changed = changed or normal is not inner
            items.append((key, normal))
        return dict(items) if changed else value
    if isinstance(value, list):
        normals = [as_jsonb(inner) if isinstance(inner, dict | list | float) else inner
                   for inner in value]
        return normals if any(a is not b for a, b in zip(normals, value, strict=True)) \
            else value
    if isinstance(value, float) and not isinstance(value, bool):
        if value == 0.0 and math.copysign(1.0, value) < 0:
            return 0.0
        text = repr(value)
        if "e+" in text:
            return int(decimal.Decimal(text))
    return value


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
