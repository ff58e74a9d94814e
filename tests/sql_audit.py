"""The Citus audit: every statement on ``convotree_nodes`` must pin one conversation.

A listener on every SQLAlchemy engine records each statement the code under test sends;
the ``audit_sql`` fixture (autouse, in conftest) fails a test whose statements read or
write ``convotree_nodes`` without ``<alias>.conversation_id = <parameter>`` for every
reference to the table. Test helpers that deliberately look at whole tables wrap
themselves in ``unaudited()``.

The state is the process's, not a thread's: the async twins run their statements on
the event loop's thread (``tests/twins.py``), and a test's worker threads run theirs
elsewhere; all of them are the test's statements and all are audited.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator


class _State:
    paused = 0
    logs: tuple[list[str], ...] = ()


_state = _State()
_lock = threading.Lock()

_REFERENCE = re.compile(
    r"\b(FROM|JOIN|INTO|UPDATE)\s+\"?convotree_nodes\"?"
    r"(?:\s+(?:AS\s+)?(?!(?:WHERE|JOIN|ON|SET|LEFT|INNER|ORDER|GROUP|LIMIT|VALUES|RETURNING|"
    r"USING|CROSS|UNION)\b)([A-Za-z_]\w*))?",
    re.IGNORECASE,
)
_PARAM = r"(?:\?|%\(\w+\)s|:\w+|\$\d+)"
_DML = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)


def violations(statement: str) -> list[str]:
    """Why ``statement`` is not confined to one conversation (empty when it is)."""
    if not _DML.match(statement) or "convotree_nodes" not in statement:
        return []
    problems = []
    for match in _REFERENCE.finditer(statement):
        keyword, alias = match.group(1).upper(), match.group(2) or "convotree_nodes"
        if keyword == "INTO":
            columns = statement[match.end(): statement.find(")", match.end()) + 1]
            if "conversation_id" not in columns:
                problems.append("INSERT INTO convotree_nodes without conversation_id")
            continue
        if keyword == "UPDATE":
            alias = "convotree_nodes"
        pinned = re.search(
            rf"(?<![\w.]){re.escape(alias)}\.conversation_id\s*=\s*{_PARAM}", statement
        )
        if not pinned:
            problems.append(f"{alias!r} (convotree_nodes) has no conversation_id = <param>")
    return problems


def record(statement: str) -> None:
    with _lock:
        if _state.paused:
            return
        for log in _state.logs:
            log.append(statement)


@contextlib.contextmanager
def unaudited() -> Iterator[None]:
    """Statements run inside are the test's own, not the store's: do not audit them."""
    with _lock:
        _state.paused += 1
    try:
        yield
    finally:
        with _lock:
            _state.paused -= 1


@contextlib.contextmanager
def capture() -> Iterator[list[str]]:
    """Collect the statements sent inside; nested captures all see them."""
    log: list[str] = []
    with _lock:
        _state.logs = (*_state.logs, log)
    try:
        yield log
    finally:
        with _lock:
            _state.logs = tuple(other for other in _state.logs if other is not log)
