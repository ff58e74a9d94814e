"""Hot statements compiled once per dialect and run on the driver's cursor.

SQLAlchemy's ``Connection.execute`` looks the statement up in its compiled cache,
builds its parameters and wraps the result, every time: tens of microseconds per
statement, which is as much as the statement itself for an append or a small context.
The statements on convotree's hot paths are therefore compiled once per dialect here
and sent with ``exec_driver_sql`` (still audited by SQLAlchemy's cursor events, still
inside the caller's transaction), their parameters converted by SQLAlchemy's own type
processors (UUIDs as SQLite text, JSON, timestamps) so the driver receives exactly
what ``execute`` would have sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, CursorResult
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from ._schema import nodes


@dataclass(frozen=True, slots=True)
class Compiled:
    """One statement for one dialect, with its parameter and node-id converters."""

    sql: str
    positions: tuple[str, ...] | None
    binders: Mapping[str, Callable[[Any], Any] | None]
    id_reader: Callable[[Any], Any] | None

    def params(self, values: Mapping[str, Any]) -> Any:
        bound = {}
        for name, value in values.items():
            binder = self.binders.get(name)
            bound[name] = binder(value) if binder and value is not None else value
        if self.positions is None:
            return bound
        return tuple(bound[name] for name in self.positions)

    def run(self, conn: Connection, values: Mapping[str, Any]) -> CursorResult[Any]:
        return conn.exec_driver_sql(self.sql, self.params(values))

    def first(self, conn: Connection, values: Mapping[str, Any]) -> Any:
        """The first row (a plain tuple of driver values), or None."""
        return self.run(conn, values).first()

    def node_id(self, value: Any) -> uuid.UUID:
        """A node id column as a ``UUID`` (SQLite returns its text)."""
        if self.id_reader is None or value is None or isinstance(value, uuid.UUID):
            return value  # type: ignore[no-any-return]
        return self.id_reader(value)  # type: ignore[no-any-return]


class Statement:
    """A statement builder whose compiled form is kept per dialect and driver.

    ``build(postgresql)`` makes the construct (PostgreSQL and SQLite may differ, see
    ``_queries.PerDialect``)."""

    def __init__(self, build: Callable[[bool], ClauseElement]) -> None:
        self._build = build
        self._compiled: dict[tuple[str, str], Compiled] = {}

    def compiled(self, dialect: Dialect) -> Compiled:
        key = (dialect.name, dialect.driver)
        found = self._compiled.get(key)
        if found is None:
            compiled = cast(SQLCompiler, self._build(dialect.name == "postgresql").compile(
                dialect=dialect))
            # The dialect's own implementation of each type (a TypeDecorator's, a
            # dialect-specific JSONB...), exactly what ``execute`` would use.
            binders = {name: param.type.dialect_impl(dialect).bind_processor(dialect)
                       for name, param in compiled.binds.items()}
            positions = tuple(compiled.positiontup or ()) if compiled.positional else None
            found = self._compiled[key] = Compiled(
                str(compiled), positions, binders,
                nodes.c.id.type.result_processor(dialect, None))
        return found

    def run(self, conn: Connection, values: Mapping[str, Any]) -> CursorResult[Any]:
        return self.compiled(conn.dialect).run(conn, values)
