"""``Node`` objects from the driver's rows, fast: a path of 100,000 makes 100,000.

Reading rows through ``Connection.execute`` runs SQLAlchemy's per-row machinery and
its result processors; on SQLite those parse every UUID and timestamp the slow way.
For the statements that return many nodes (a path, a tree) the rows are fetched raw
(``_driver``) and converted here: SQLAlchemy's own processor for each column, except
for the two that dominate on SQLite, a node id (text there; the parent of one row is
the id of the next, so each is parsed once) and a timestamp (ISO text, parsed by
``datetime.fromisoformat``). The conversation id is the one the caller asked for.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Uuid
from sqlalchemy.engine import Dialect

from ._queries import NODE_COLUMN_NAMES
from ._schema import nodes
from ._types import UTCDateTime
from .models import NODE_FIELDS, Node

_ORDER = tuple(NODE_COLUMN_NAMES.index(name) for name in NODE_FIELDS)
_CONVERSATION = NODE_COLUMN_NAMES.index("conversation_id")


def _sqlite_time(value: str) -> datetime:
    """convotree writes naive UTC text there; anything else is read as it says."""
    try:
        return datetime.fromisoformat(value + "+00:00")   # five times faster than replace()
    except ValueError:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class NodeReader:
    """Turns raw rows of ``_queries.NODE_COLUMN_NAMES`` into nodes, for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        sqlite = dialect.name == "sqlite"
        self._ids: list[int] = []
        self._convert: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(NODE_COLUMN_NAMES):
            column_type = nodes.c[name].type
            if name == "conversation_id":
                continue
            if sqlite and isinstance(column_type, Uuid):
                self._ids.append(index)
            elif sqlite and isinstance(column_type, UTCDateTime):
                self._convert.append((index, _sqlite_time))
            else:
                processor = column_type.dialect_impl(dialect).result_processor(dialect, None)
                if processor is not None:
                    self._convert.append((index, processor))

    def nodes(self, rows: Iterable[Any], conversation_id: uuid.UUID) -> list[Node]:
        parsed: dict[str, uuid.UUID] = {}
        made = []
        for row in rows:
            values = list(row)
            values[_CONVERSATION] = conversation_id
            for index in self._ids:
                raw = values[index]
                if raw is not None:
                    found = parsed.get(raw)
                    if found is None:
                        found = parsed[raw] = uuid.UUID(int=int(raw, 16))
                    values[index] = found
            for index, convert in self._convert:
                if values[index] is not None:
                    values[index] = convert(values[index])
            made.append(Node(*[values[i] for i in _ORDER]))
        return made


_READERS: dict[tuple[str, str], NodeReader] = {}


def reader(dialect: Dialect) -> NodeReader:
    key = (dialect.name, dialect.driver)
    found = _READERS.get(key)
    if found is None:
        found = _READERS[key] = NodeReader(dialect)
    return found
