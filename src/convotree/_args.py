"""The checks every public call makes on its arguments, in one place.

Each function takes what a caller passed and returns the value convotree uses, or
raises ``InvalidArgument`` saying what to pass instead. They run before any
statement, so a bad argument costs no round trip, writes nothing, and gets the same
error on SQLite and PostgreSQL (left to the database, ``2**31`` tokens would be stored
by SQLite and refused by PostgreSQL, and ``limit=-1`` would mean "all" on one and be an
error on the other).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .errors import InvalidArgument
from .models import Conversation, Node

#: The largest count a token or usage column holds (32-bit ``INTEGER`` on PostgreSQL).
MAX_COUNT = 2**31 - 1
#: The most rows one listing returns (a page; ``before=`` gives the next one).
MAX_LIMIT = 10_000


def _described(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def as_id(value: Any, what: str) -> uuid.UUID:
    """A UUID, or its string form (any spelling ``uuid.UUID`` reads)."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise InvalidArgument(f"{what} must be a UUID or its string form, not "
                          f"{_described(value)}")


def conversation_id(value: Any) -> uuid.UUID:
    """A conversation given as the object or its id."""
    if isinstance(value, Conversation):
        return value.id
    if isinstance(value, Node):
        raise InvalidArgument("expected a conversation, got a Node (pass "
                              "node.conversation_id)")
    return as_id(value, "conversation")


def node_id(value: Any) -> uuid.UUID:
    """A node given as the object or its id (where the conversation is given too)."""
    if isinstance(value, Node):
        return value.id
    return as_id(value, "node")


def node(value: Any, what: str = "node") -> Node:
    """A ``Node`` object: a node's key is (conversation_id, id), so an id alone does not
    name one; ``store.node(conversation, node_id)`` turns the pair into a Node."""
    if isinstance(value, Node):
        return value
    raise InvalidArgument(
        f"{what} must be a Node (as returned by append, node(), path()...), not "
        f"{_described(value)}; from ids: store.node(conversation_id, node_id)")


def timestamp(value: Any, what: str) -> datetime | None:
    """None, or a timezone-aware datetime (a naive one has no defined instant)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{what} must be a timezone-aware datetime, not "
                              f"{_described(value)}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(f"{what} must be timezone-aware (e.g. "
                              "datetime.now(timezone.utc)), not a naive datetime")
    return value


def count(value: Any, what: str, *, minimum: int = 0, maximum: int = MAX_COUNT,
          optional: bool = False) -> int | None:
    """An integer in ``[minimum, maximum]`` (not a bool, not a float or a string)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what} must be an integer, not {_described(value)}")
    if not minimum <= value <= maximum:
        raise InvalidArgument(f"{what} must be between {minimum:,} and {maximum:,}, not "
                              f"{value:,}")
    return value


def required_count(value: Any, what: str, *, minimum: int = 0,
                   maximum: int = MAX_COUNT) -> int:
    checked = count(value, what, minimum=minimum, maximum=maximum)
    assert checked is not None
    return checked


def limit(value: Any) -> int:
    """How many rows a listing returns: 1 to ``MAX_LIMIT``."""
    return required_count(value, "limit", minimum=1, maximum=MAX_LIMIT)


def flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{what} must be True or False, not {_described(value)}")
    return value


def choice(value: Any, what: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgument(f"{what} must be one of {', '.join(map(repr, choices))}, not "
                              f"{_described(value)}")
    return value


def tools(value: Any) -> list[Mapping[str, Any]] | None:
    """Tool definitions: None or a list of JSON objects (checked as JSON when priced)."""
    if value is None:
        return None
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence) or not all(
            isinstance(tool, Mapping) for tool in value):
        raise InvalidArgument("tools must be a list of tool definitions (JSON objects such "
                              "as {'type': 'function', 'function': {...}}), not "
                              f"{_described(value)}")
    return list(value)


def conversation_or_none(value: Any, what: str) -> Conversation | None:
    if value is None or isinstance(value, Conversation):
        return value
    raise InvalidArgument(f"{what} must be a Conversation from a previous page, not "
                          f"{_described(value)}")
