"""Hostile input to every public call: a typed error that says what to fix, nothing written.

The contract (README, ``convotree.errors``): every bad input to a public call raises a
``ConvotreeError`` subclass whose message names what to change, and every convotree
table is row for row the same afterwards; the same input has the same outcome on
SQLite and PostgreSQL; no call hangs; the tree invariants hold after every call.

Each case below is one concrete bad input, run on both backends and, where the method
exists there, on both shells (``Store`` and ``AsyncStore``, see ``tests/twins.py``).
``judge`` is the one verdict: it runs the call in a thread with a hard timeout (a hang
fails instead of stalling the run), demands a ``ConvotreeError`` of the expected kind
whose message matches the hint, compares a snapshot of every row of every
``convotree_*`` table before and after, and checks the tree invariants (stored token
counts included). A raw Python or driver exception is reported as ``ESCAPE`` with its
type, a call that should have been refused as ``ACCEPTED``, so a failing run reads as
a list of what to fix.

The tests run on databases of their own (one per backend, made for this module), so the
whole-table snapshots stay small and another module's rows never interfere; the tree a
case is judged against (``World``) is built once per backend and shell and rebuilt only
after a test changed the database. The helpers (``bounded``, ``snapshot``,
``check_invariants``, ``wipe``) are shared with ``tests/test_api_fuzz.py``.

Cases named ``test_decided_*`` pin semantics the maintainers decided (edit or redact of
a summary or a deleted node, another tenant's conversation id).
"""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import json
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import convotree
from convotree import errors, reporting
from convotree._schema import conversations as conversations_table
from convotree._schema import nodes as nodes_table
from convotree.testing import FakeOpenAI
from tests import sql_audit, twins
from tests.conftest import PostgresServer, _require, migrate_and_distribute
from tests.test_cli_support import exempt_reporting

#: Every test that takes the ``shell`` fixture runs on Store and on AsyncStore.
TWINS = True

#: ``max_message_bytes`` of the test stores: "just over the limit" stays cheap to build.
LIMIT = 4096
#: Seconds one call may take before it counts as a hang (a generous bound, not a timing
#: assertion: the slowest legitimate call here takes well under a second).
CALL_TIMEOUT = 30.0

Err = type[BaseException] | tuple[type[BaseException], ...]


# --- the judge, shared with test_api_fuzz -----------------------------------------------


class Hang(AssertionError):
    """A call did not return within ``CALL_TIMEOUT``."""


#: Timeouts that fired: the stores (and event loop) a hung call may still hold are
#: abandoned by ``Worlds.settle`` instead of reused.
HUNG: list[float] = []


def bounded(call: Callable[[], Any], timeout: float = CALL_TIMEOUT) -> tuple[bool, Any]:
    """Run ``call`` in a daemon thread: ``(True, result)`` or ``(False, exception)``;
    ``Hang`` if it does not finish in time (the thread is abandoned, the run goes on)."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True, name="convotree-hostile-call")
    thread.start()
    thread.join(timeout)
    if not outcome:
        HUNG.append(timeout)
        raise Hang(f"HANG: the call did not return within {timeout:.0f} s")
    return outcome[0]


def _normal(value: Any) -> Any:
    """A comparable, order-independent form of one column value."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, memoryview | bytes):
        return bytes(value).hex()
    return value


_TABLES: dict[str, list[str]] = {}


def _table_names(conn: sa.Connection) -> list[str]:
    """The ``convotree_*`` tables of the database (read once per database URL)."""
    key = conn.engine.url.render_as_string(hide_password=False)
    if key not in _TABLES:
        _TABLES[key] = sorted(name for name in sa.inspect(conn).get_table_names()
                              if name.startswith("convotree_"))
    return _TABLES[key]


def snapshot(engine: sa.Engine) -> dict[str, list[str]]:
    """Every row of every ``convotree_*`` table (the version table included), sorted."""
    with sql_audit.unaudited(), engine.connect() as conn:
        names = _table_names(conn)
        tables: dict[str, list[str]] = {}
        for name in names:
            rows = conn.execute(sa.text(f'SELECT * FROM "{name}"')).all()
            tables[name] = sorted(repr(tuple(_normal(v) for v in row)) for row in rows)
        return tables


def wipe(engine: sa.Engine) -> None:
    """Empty the conversation tables of a database this module owns, so the snapshots
    of the next test stay small (the schema and its version stay)."""
    with sql_audit.unaudited(), engine.begin() as conn:
        conn.execute(sa.update(conversations_table).values(current_node_id=None))
        conn.execute(sa.delete(nodes_table))
        conn.execute(sa.delete(conversations_table))


def _diff(before: dict[str, list[str]], after: dict[str, list[str]]) -> str:
    lines = []
    for name in sorted(set(before) | set(after)):
        old, new = set(before.get(name, [])), set(after.get(name, []))
        if old != new:
            lines.append(f"{name}: {len(new - old)} row(s) added or changed, "
                         f"{len(old - new)} removed or changed; first new: "
                         f"{sorted(new - old)[:1]}")
    return "; ".join(lines) or "no difference"


def _tool_run(by_id: dict[tuple[Any, Any], Any], row: Any) -> tuple[Any, list[Any]]:
    """(the nearest non-tool ancestor-or-self of ``row``'s parent chain head, the tool
    results between it and ``row``, ``row`` included when it is a tool result)."""
    run: list[Any] = []
    current = row
    while current is not None and current.role == "tool":
        run.append(current)
        current = by_id.get((current.conversation_id, current.parent_id))
    return current, run


def check_invariants(engine: sa.Engine) -> None:
    """The tree invariants over the whole database; AssertionError naming the first break.

    Each parent is in the same conversation with depth = parent's + 1 (roots at 0);
    summaries hang under messages, have no children, and extend (``summary_base_id``)
    an existing summary of the same branch above them; a conversation's current node is
    null or one of its own messages; tool calls only on assistants, tool_call_id only on
    tool results; each result answers a call of the assistant above its run, once; no
    other message follows a call before all of its results; the pinned-ancestor pointer
    is the nearest kept-always strict ancestor.
    """
    n, c = nodes_table.c, conversations_table.c
    with sql_audit.unaudited(), engine.connect() as conn:
        rows = conn.execute(sa.select(
            n.conversation_id, n.id, n.parent_id, n.depth, n.kind, n.role, n.tool_calls,
            n.tool_call_id, n.pinned, n.pinned_ancestor_id, n.summary_base_id, n.content,
            n.parts, n.name, n.encoding, n.token_count, n.overhead_tokens)).all()
        convs = conn.execute(sa.select(c.id, c.current_node_id)).all()
    by_id = {(r.conversation_id, r.id): r for r in rows}
    for r in rows:
        where = f"node {r.id} of conversation {r.conversation_id}"
        _check_counts(r, where)
        parent = by_id.get((r.conversation_id, r.parent_id)) if r.parent_id else None
        if r.parent_id is None:
            assert r.depth == 0, f"{where}: a root at depth {r.depth}"
        else:
            assert parent is not None, f"{where}: parent {r.parent_id} not in its conversation"
            assert r.depth == parent.depth + 1, f"{where}: depth {r.depth} under {parent.depth}"
            assert parent.kind == "message", f"{where}: a child of a summary"
        if r.kind == "summary":
            assert parent is not None, f"{where}: a summary without a covered node"
            if r.summary_base_id is not None:
                base = by_id.get((r.conversation_id, r.summary_base_id))
                assert base is not None and base.kind == "summary", (
                    f"{where}: summary_base_id {r.summary_base_id} is not a summary of "
                    "this conversation")
                up, above = parent, set()
                while up is not None:
                    above.add(up.id)
                    up = by_id.get((up.conversation_id, up.parent_id)) if up.parent_id else None
                assert base.parent_id in above, f"{where}: its base is not above it"
            continue
        assert r.tool_calls is None or r.role == "assistant", f"{where}: tool_calls on {r.role}"
        assert r.tool_call_id is None or r.role == "tool", f"{where}: tool_call_id on {r.role}"
        head, run = _tool_run(by_id, r)
        if r.role == "tool":
            assert head is not None and head.role == "assistant" and head.tool_calls, (
                f"{where}: a tool result under no tool call")
            call_ids = [str(call["id"]) for call in head.tool_calls]
            answered = [t.tool_call_id for t in run]
            assert r.tool_call_id in call_ids, f"{where}: answers no call of {head.id}"
            assert answered.count(r.tool_call_id) == 1, f"{where}: a call answered twice"
        elif parent is not None:
            above_head, above_run = (_tool_run(by_id, parent) if parent.role == "tool"
                                     else (parent, []))
            if above_head is not None and above_head.role == "assistant" and above_head.tool_calls:
                calls = {str(call["id"]) for call in above_head.tool_calls}
                answered = {t.tool_call_id for t in above_run}
                assert calls <= answered, f"{where}: follows calls {calls - answered} unanswered"
        expected, up = None, parent
        while up is not None:
            if up.kind == "message" and (up.pinned or up.role in ("system", "developer")):
                expected = up.id
                break
            up = by_id.get((up.conversation_id, up.parent_id)) if up.parent_id else None
        assert r.pinned_ancestor_id == expected, (
            f"{where}: pinned_ancestor_id {r.pinned_ancestor_id}, expected {expected}")
    for conv in convs:
        if conv.current_node_id is not None:
            current = by_id.get((conv.id, conv.current_node_id))
            assert current is not None and current.kind == "message", (
                f"conversation {conv.id}: current node {conv.current_node_id} is not one "
                "of its messages")


_TEXT_PARTS = ("text", "input_text", "output_text", "refusal")


def _check_counts(r: Any, where: str) -> None:
    """The stored token counts are what the row's own fields count to (once, at insert
    or redaction): a count computed from anything but the row would skew every
    context that sends it."""
    from convotree import tokens

    if r.parts is not None:
        texts = [str(p.get("text", p.get("refusal"))) for p in r.parts
                 if p.get("type") in _TEXT_PARTS]
    else:
        texts = [r.content] if r.content else []
    counted = sum(tokens.count_text(text, r.encoding) for text in texts)
    assert r.token_count == counted, f"{where}: token_count {r.token_count}, content has {counted}"
    overhead = tokens.message_overhead(role=r.role, name=r.name, tool_calls=r.tool_calls,
                                       tool_call_id=r.tool_call_id, encoding=r.encoding)
    assert r.overhead_tokens == overhead, (
        f"{where}: overhead_tokens {r.overhead_tokens}, its role/name/calls cost {overhead}")


def judge(engines: list[sa.Engine], call: Callable[[], Any], error: Err,
          hint: str | None = None) -> BaseException:
    """The one verdict: ``call`` raises ``error`` (a ``ConvotreeError``) whose message
    matches ``hint``, leaves every table of ``engines`` as it was, keeps the invariants."""
    before = [snapshot(engine) for engine in engines]
    ok, value = bounded(call)
    if ok:
        after = [snapshot(engine) for engine in engines]
        changed = [_diff(b, a) for b, a in zip(before, after, strict=True) if b != a]
        tables = "changed: " + changed[0] if changed else "unchanged"
        pytest.fail(f"ACCEPTED: returned {value!r:.200} instead of raising "
                    f"{_names(error)}; tables {tables}", pytrace=False)
    if not isinstance(value, errors.ConvotreeError):
        pytest.fail(f"ESCAPE: {type(value).__module__}.{type(value).__name__}: "
                    f"{str(value)[:300]}", pytrace=False)
    message = str(value)
    assert isinstance(value, error), (
        f"WRONG TYPE: {type(value).__name__} ({message[:200]}), expected {_names(error)}")
    assert len(message) >= 10 and "Traceback" not in message, f"UNHELPFUL MESSAGE: {message!r}"
    if hint is not None:
        assert re.search(hint, message, re.IGNORECASE), (
            f"MESSAGE says {message[:300]!r}, which does not name /{hint}/")
    for engine, old in zip(engines, before, strict=True):
        new = snapshot(engine)
        assert new == old, f"WROTE despite {type(value).__name__}: {_diff(old, new)}"
        check_invariants(engine)
    return value


def _names(error: Err) -> str:
    classes = error if isinstance(error, tuple) else (error,)
    return " or ".join(cls.__name__ for cls in classes)


# --- databases and stores of this module ------------------------------------------------


@pytest.fixture(scope="module")
def hostile_urls(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
                 ) -> dict[str, str]:
    """A migrated database per backend, for this module alone."""
    urls = {"sqlite": f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'hostile.db'}"}
    if postgres.admin is not None:
        urls["postgresql"] = postgres.create_database()
    for url in urls.values():
        migrate_and_distribute(url)
    return urls


@pytest.fixture
def url(backend: str, hostile_urls: dict[str, str], postgres: PostgresServer) -> str:
    if backend == "postgresql":
        _require(postgres)
    return hostile_urls[backend]


@pytest.fixture
def engine(backend: str, url: str, worlds: Worlds) -> sa.Engine:
    """A plain engine on the test database: what the snapshots and invariants read."""
    return worlds.engine(backend)


@pytest.fixture
def loop() -> Iterator[twins.EventLoopThread]:
    """An event loop of the test's own: a hung async call stalls only this test."""
    made = twins.EventLoopThread()
    yield made
    made.close()


@dataclass
class Opener:
    """Opens stores of the test's shell and closes them at the end."""

    shell: str
    loop: twins.EventLoopThread
    engine: sa.Engine
    opened: list[Any] = field(default_factory=list)

    def __call__(self, url: str, **options: Any) -> Any:
        if self.shell == "sync":
            store: Any = convotree.Store(url, **options)
        else:
            target = self.loop.run(convotree.AsyncStore.open(url, **options))
            store = twins.Blocking(target, self.loop, engine=self.engine)
        self.opened.append(store)
        return store

    def close(self) -> None:
        """Close every store; one stuck behind a hung call is abandoned, not waited for."""
        while self.opened:
            with contextlib.suppress(Hang):
                bounded(self.opened.pop().close, timeout=10)


@pytest.fixture
def opener(shell: str, loop: twins.EventLoopThread, engine: sa.Engine) -> Iterator[Opener]:
    made = Opener(shell, loop, engine)
    yield made
    made.close()


CALL = [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}},
        {"id": "c2", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]


@dataclass
class World:
    """A small tree per test, and the odd objects hostile calls are made with.

    ``conv``: system -> ask -> answer -> ask2 -> call (calls c1, c2) -> result1 (c1);
    ``summary`` hangs under ``answer``; ``done`` is a complete call/result pair under
    ``ask2``; ``other``/``other_node`` another conversation; ``gone`` a node deleted
    again; ``foreign_conv``/``foreign_node`` another tenant's; ``tenant`` this one's.
    """

    store: Any
    engine: sa.Engine
    url: str
    tenant: str
    conv: convotree.Conversation
    system: convotree.Node
    ask: convotree.Node
    answer: convotree.Node
    ask2: convotree.Node
    call: convotree.Node
    result1: convotree.Node
    done: convotree.Node
    done_result: convotree.Node
    summary: convotree.Node
    other: convotree.Conversation
    other_node: convotree.Node
    gone: convotree.Node
    foreign_conv: convotree.Conversation
    foreign_node: convotree.Node
    foreign_summary: convotree.Node


def build_world(store: Any, engine: sa.Engine, url: str, tenant: str) -> World:
    conv = store.create_conversation(title="hostile", metadata={"k": "v"})
    system = store.append(conv, role="system", content="You are terse.")
    ask = store.append(conv, parent=system, role="user", content="Plan a trip")
    answer = store.append(conv, parent=ask, role="assistant", content="Lisbon, three days.")
    ask2 = store.append(conv, parent=answer, role="user", content="Weather?")
    call = store.append(conv, parent=ask2, role="assistant", tool_calls=CALL)
    result1 = store.append(conv, parent=call, role="tool", tool_call_id="c1", content="sun")
    done = store.append(conv, parent=ask2, role="assistant", tool_calls=CALL[:1],
                        set_current=False)
    done_result = store.append(conv, parent=done, role="tool", tool_call_id="c1",
                               content="rain", set_current=False)
    summary = store.add_summary(answer, "Summary of the earlier conversation: a trip.")
    other = store.create_conversation(title="other")
    other_node = store.append(other, role="user", content="elsewhere")
    gone = store.append(other, parent=other_node, role="assistant", content="soon gone")
    store.delete_subtree(gone)
    with convotree.Store(url, tenant=f"intruder-{uuid.uuid4().hex[:8]}") as intruder:
        foreign_conv = intruder.create_conversation(title="not yours")
        foreign_node = intruder.append(foreign_conv, role="user", content="secret")
        foreign_answer = intruder.append(foreign_conv, parent=foreign_node,
                                         role="assistant", content="secret answer")
        foreign_summary = intruder.add_summary(foreign_answer, "Summary: secret.")
    return World(store, engine, url, tenant, conv, system, ask, answer, ask2, call, result1,
                 done, done_result, summary, other, other_node, gone, foreign_conv,
                 foreign_node, foreign_summary)


class Worlds:
    """The worlds of this module, built once per (backend, shell) and reused while the
    database stays exactly as the world left it: a test whose call wrote anything (or
    hung) makes ``settle`` wipe that database, and the next test builds afresh. Building
    a world is some twenty writes; a hostile call is typically one refused statement."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self._engines: dict[str, sa.Engine] = {}
        self._loop: twins.EventLoopThread | None = None
        self._built: dict[tuple[str, str], tuple[World, Opener]] = {}
        self._pristine: dict[str, dict[str, list[str]]] = {}
        self._used: set[str] = set()

    def engine(self, backend: str) -> sa.Engine:
        if backend not in self._engines:
            self._engines[backend] = convotree.create_engine(self.urls[backend])
        return self._engines[backend]

    def get(self, backend: str, shell: str) -> World:
        self._used.add(backend)
        key = (backend, shell)
        if key not in self._built:
            if self._loop is None:
                self._loop = twins.EventLoopThread()
            engine, url = self.engine(backend), self.urls[backend]
            opener = Opener(shell, self._loop, engine)
            tenant = f"hostile-{uuid.uuid4().hex[:8]}"
            store = opener(url, tenant=tenant, max_message_bytes=LIMIT)
            self._built[key] = (build_world(store, engine, url, tenant), opener)
            self._pristine[backend] = snapshot(engine)
        return self._built[key][0]

    def settle(self) -> None:
        """After a test: forget the worlds of every database it changed."""
        hung = bool(HUNG)
        try:
            for backend in sorted(self._used):
                engine = self.engine(backend)
                if hung or backend not in self._pristine or snapshot(
                        engine) != self._pristine[backend]:
                    self._discard(backend)
        finally:
            self._used.clear()
            if hung:
                HUNG.clear()
                self._loop = None   # possibly stuck in the hung call: abandoned (a daemon)

    def _discard(self, backend: str) -> None:
        for key in [key for key in self._built if key[0] == backend]:
            self._built.pop(key)[1].close()
        self._pristine.pop(backend, None)
        wipe(self.engine(backend))

    def close(self) -> None:
        for backend in list(self._engines):
            self._discard(backend)
            self._engines[backend].dispose()
        if self._loop is not None:
            self._loop.close()


@pytest.fixture(scope="module")
def worlds(hostile_urls: dict[str, str]) -> Iterator[Worlds]:
    made = Worlds(hostile_urls)
    yield made
    made.close()


@pytest.fixture
def world(backend: str, shell: str, url: str, worlds: Worlds) -> Iterator[World]:
    """The (backend, shell) world: ``Store`` or a blocking ``AsyncStore`` on its tree."""
    yield worlds.get(backend, shell)
    worlds.settle()


# --- the cases --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile call: what it does to the world, the error it must raise, and a
    pattern its message must contain (what to fix)."""

    id: str
    call: Callable[[World], Any]
    error: Err
    hint: str | None = None


def cycle() -> dict[str, Any]:
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    return loop


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"k": value}
    return value


def big(extra: int = 1) -> str:
    return "x" * (LIMIT + extra)


II = errors.InvalidInput
IC = errors.InvalidContent
NF = errors.NotFound
BIG_CALL = [{"id": "c9", "type": "function",
             "function": {"name": "lookup", "arguments": json.dumps({"q": big()})}}]


def call_with(**function: Any) -> list[dict[str, Any]]:
    return [{"id": "c9", "type": "function", "function": {"name": "lookup",
                                                            "arguments": "{}", **function}}]


def append_case(case_id: str, error: Err, hint: str | None = None, **fields: Any) -> Case:
    def call(w: World) -> Any:
        values = {"role": "assistant", "content": "ok", **fields}
        return w.store.append(w.conv, parent=w.ask, **values)

    return Case(f"append {case_id}", call, error, hint)


APPEND_CASES = [
    append_case("role robot", errors.InvalidRole, "role", role="robot"),
    append_case("role None", errors.InvalidRole, "role", role=None),
    append_case("role 5", errors.InvalidRole, "role", role=5),
    append_case("role USER", errors.InvalidRole, "role", role="USER"),
    append_case("kind note", errors.InvalidKind, "kind", kind="note"),
    append_case("kind None", errors.InvalidKind, "kind", kind=None),
    append_case("content int", II, "content", content=42),
    append_case("content bytes", II, "content", content=b"bytes"),
    append_case("content dict", II, "content", content={"type": "text", "text": "x"}),
    append_case("content list of str", II, "part", content=["x"]),
    append_case("content NUL", IC, "NUL", content="a\x00b"),
    append_case("content lone surrogate", IC, "surrogate", content="a\ud800b"),
    append_case("content just over the limit", errors.ContentTooLarge, "bytes",
                content=big()),
    append_case("text part NUL", IC, "NUL", content=[{"type": "text", "text": "\x00"}]),
    append_case("text part surrogate", IC, "surrogate",
                content=[{"type": "text", "text": "\udfff"}]),
    append_case("text part int text", II, "text", content=[{"type": "text", "text": 5}]),
    append_case("image_url part with a string body", II, "image_url",
                role="user", content=[{"type": "image_url", "image_url": "zz"}]),
    append_case("image_url part with an int url", II, "url",
                role="user", content=[{"type": "image_url", "image_url": {"url": 5}}]),
    append_case("image_url part without url", II, "url",
                role="user", content=[{"type": "image_url", "image_url": {}}]),
    append_case("image_url data URL not base64", II, "image|base64|data",
                role="user", content=[{"type": "image_url",
                                       "image_url": {"url": "data:image/png;base64,!!!!"}}]),
    append_case("input_audio part with a string body", II, "input_audio",
                role="user", content=[{"type": "input_audio", "input_audio": "zz"}]),
    append_case("file part with an int body", II, "file",
                role="user", content=[{"type": "file", "file": 5}]),
    append_case("part with NUL in a non-text field", IC, "NUL",
                role="user", content=[{"type": "image_url",
                                       "image_url": {"url": "https://x/\x00.png"}}]),
    append_case("part that contains itself", IC, "cycle|itself",
                role="user", content=[cycle() | {"type": "text", "text": "x"}]),
    append_case("parts just over the limit", errors.ContentTooLarge, "bytes",
                role="user", content=[{"type": "image_url",
                                       "image_url": {"url": "https://x/" + big()}}]),
    append_case("name int", II, "name", name=5),
    append_case("name NUL", IC, "NUL", name="bo\x00b"),
    append_case("name surrogate", IC, "surrogate", name="\ud83d"),
    append_case("name over max_message_bytes", errors.ContentTooLarge, "bytes", name=big()),
    append_case("model int", II, "model", model=5),
    append_case("model NUL", IC, "NUL", model="gpt-4o\x00"),
    append_case("model over max_message_bytes", errors.ContentTooLarge, "bytes", model=big()),
    append_case("tool_calls a string", II, "tool_calls", content=None, tool_calls="lookup"),
    append_case("tool_calls empty", II, "tool_calls", content=None, tool_calls=[]),
    append_case("tool_calls of ints", II, "tool call", content=None, tool_calls=[1]),
    append_case("tool call id int", II, "id", content=None, tool_calls=[{
        "id": 5, "type": "function", "function": {"name": "f", "arguments": "{}"}}]),
    append_case("tool call id NUL", IC, "NUL", content=None, tool_calls=[{
        "id": "c\x00", "type": "function", "function": {"name": "f", "arguments": "{}"}}]),
    append_case("tool call arguments NUL", IC, "NUL", content=None,
                tool_calls=call_with(arguments='{"q": "\x00"}')),
    append_case("tool call arguments surrogate", IC, "surrogate", content=None,
                tool_calls=call_with(arguments='{"q": "\ud800"}')),
    append_case("tool call arguments not a string", II, "arguments", content=None,
                tool_calls=call_with(arguments={"q": 1})),
    append_case("tool call name NUL", IC, "NUL", content=None, tool_calls=call_with(name="f\x00")),
    append_case("tool call that contains itself", IC, "cycle|itself", content=None,
                tool_calls=[cycle() | {"id": "c9", "type": "function",
                                       "function": {"name": "f", "arguments": "{}"}}]),
    append_case("tool call arguments over the limit", errors.ContentTooLarge, "bytes",
                content=None, tool_calls=BIG_CALL),
    append_case("tool_call_id int", (II, errors.ToolCallMismatch), "tool_call_id",
                role="tool", tool_call_id=5),
    append_case("pinned a string", II, "pinned", pinned="yes"),
    append_case("pinned None", II, "pinned", pinned=None),
    append_case("set_current a string", II, "set_current", set_current="no"),
    append_case("metadata contains itself", IC, "cycle|itself", metadata=cycle()),
    append_case("metadata nested 5000 levels", IC, "nested|deep", metadata=deep(5000)),
    append_case("metadata key NUL", IC, "NUL", metadata={"k\x00": 1}),
    append_case("metadata key surrogate", IC, "surrogate", metadata={"\ud800": 1}),
    append_case("metadata value NUL", IC, "NUL", metadata={"k": ["a", {"b": "\x00"}]}),
    append_case("metadata value surrogate", IC, "surrogate", metadata={"k": "\udc80"}),
    append_case("metadata int key", II, "key", metadata={1: "x"}),
    append_case("metadata NaN", II, "JSON|NaN", metadata={"x": float("nan")}),
    append_case("metadata infinity", II, "JSON|Infinity", metadata={"x": float("inf")}),
    append_case("metadata set", II, "JSON|set", metadata={"x": {1, 2}}),
    append_case("metadata bytes", II, "JSON|bytes", metadata={"x": b"1"}),
    append_case("metadata datetime", II, "JSON|datetime", metadata={"at": datetime.now(UTC)}),
    append_case("metadata a list", II, "metadata", metadata=[1]),
    append_case("metadata a string", II, "metadata", metadata="{}"),
    append_case("metadata over the limit", errors.ContentTooLarge, "bytes",
                metadata={"x": big()}),
    append_case("input_tokens -1", II, "input_tokens", input_tokens=-1),
    append_case("input_tokens a string", II, "input_tokens", input_tokens="5"),
    append_case("input_tokens True", II, "input_tokens", input_tokens=True),
    append_case("input_tokens 1.5", II, "input_tokens", input_tokens=1.5),
    append_case("input_tokens 2**63", II, "input_tokens", input_tokens=2**63),
    append_case("input_tokens 2**64", II, "input_tokens", input_tokens=2**64),
    append_case("output_tokens 2**63", II, "output_tokens", output_tokens=2**63),
    append_case("cached_tokens -5", II, "cached_tokens", cached_tokens=-5),
    append_case("reasoning_tokens 2**63", II, "reasoning_tokens", reasoning_tokens=2**63),
    append_case("counted_input_tokens a float", II, "counted_input_tokens",
                counted_input_tokens=3.0),
    append_case("created_at naive", II, "timezone|aware",
                created_at=datetime(2024, 1, 1, 12, 0)),
    append_case("created_at a string", II, "created_at", created_at="2024-01-01T00:00:00Z"),
    append_case("created_at an int", II, "created_at", created_at=1_700_000_000),
    append_case("created_at a date", II, "created_at", created_at=date(2024, 1, 1)),
    append_case("response_id int", II, "response_id", response_id=5),
    append_case("response_id NUL", IC, "NUL", response_id="resp\x00"),
    append_case("response_id over the limit", errors.ContentTooLarge, "bytes",
                response_id=big()),
    append_case("finish_reason surrogate", IC, "surrogate", finish_reason="\ud800"),
    append_case("finish_reason over the limit", errors.ContentTooLarge, "bytes",
                finish_reason=big()),
    append_case("api_items a string", II, "api_items", api_items="x"),
    append_case("api_items of ints", II, "api_items", api_items=[1]),
    append_case("api_items NUL", IC, "NUL", api_items=[{"type": "reasoning", "x": "\x00"}]),
    append_case("api_items cycle", IC, "cycle|itself", api_items=[cycle()]),
    append_case("api_items over the limit", errors.ContentTooLarge, "bytes",
                api_items=[{"type": "reasoning", "encrypted_content": big()}]),
    Case("append tool_call_id over the limit",
         lambda w: w.store.append(w.conv, parent=w.call, role="tool", content="r",
                                  tool_call_id="c2" + big()),
         (errors.ContentTooLarge, errors.ToolCallMismatch), "bytes|tool_call_id"),
    Case("append tool_call_id NUL",
         lambda w: w.store.append(w.conv, parent=w.call, role="tool", content="r",
                                  tool_call_id="c2\x00"), IC, "NUL"),
    Case("append conversation not a uuid",
         lambda w: w.store.append("not-a-uuid", role="user", content="x"), II, "conversation"),
    Case("append conversation None",
         lambda w: w.store.append(None, role="user", content="x"), II, "conversation"),
    Case("append conversation int",
         lambda w: w.store.append(5, role="user", content="x"), II, "conversation"),
    Case("append conversation a Node",
         lambda w: w.store.append(w.ask, role="user", content="x"), II, "conversation"),
    Case("append conversation unknown uuid",
         lambda w: w.store.append(uuid.uuid4(), role="user", content="x"),
         errors.ConversationNotFound, "conversation"),
    Case("append conversation of another tenant",
         lambda w: w.store.append(w.foreign_conv.id, role="user", content="x"),
         errors.ConversationNotFound, "conversation"),
    Case("append parent not a uuid",
         lambda w: w.store.append(w.conv, parent="zz", role="user", content="x"), II, "node"),
    Case("append parent int",
         lambda w: w.store.append(w.conv, parent=5, role="user", content="x"), II, "node"),
    Case("append parent a Conversation",
         lambda w: w.store.append(w.conv, parent=w.other, role="user", content="x"), II,
         "node|parent"),
    Case("append parent unknown uuid",
         lambda w: w.store.append(w.conv, parent=uuid.uuid4(), role="user", content="x"),
         errors.NodeNotFound, "node"),
    Case("append parent deleted",
         lambda w: w.store.append(w.other, parent=w.gone, role="user", content="x"),
         errors.NodeNotFound, "node"),
    Case("append parent a summary",
         lambda w: w.store.append(w.conv, parent=w.summary, role="user", content="x"),
         errors.InvalidParent, "summary"),
    Case("append parent of another tenant (its id)",
         lambda w: w.store.append(w.conv, parent=w.foreign_node.id, role="user", content="x"),
         errors.NodeNotFound, "node"),
    Case("append parent of another tenant (its Node, its conversation)",
         lambda w: w.store.append(w.foreign_conv, parent=w.foreign_node, role="user",
                                  content="x"), NF, "conversation"),
    Case("append after unanswered calls",
         lambda w: w.store.append(w.conv, parent=w.result1, role="user", content="x"),
         errors.ToolCallMismatch, "c2"),
    Case("append tool result answering no call",
         lambda w: w.store.append(w.conv, parent=w.result1, role="tool", content="r",
                                  tool_call_id="zz"), errors.ToolCallMismatch, "zz"),
    Case("append tool result twice",
         lambda w: w.store.append(w.conv, parent=w.result1, role="tool", content="r",
                                  tool_call_id="c1"), errors.ToolCallMismatch, "c1"),
]

CONVERSATION_CASES = [
    Case("create id not a uuid", lambda w: w.store.create_conversation(id="not-a-uuid"),
         II, "id"),
    Case("create id int", lambda w: w.store.create_conversation(id=5), II, "id"),
    Case("create id own duplicate", lambda w: w.store.create_conversation(id=w.conv.id),
         II, "already"),
    Case("create created_at naive",
         lambda w: w.store.create_conversation(created_at=datetime(2024, 1, 1)), II,
         "timezone|aware"),
    Case("create created_at a string",
         lambda w: w.store.create_conversation(created_at="2024-01-01"), II, "created_at"),
    Case("create created_at an int",
         lambda w: w.store.create_conversation(created_at=0), II, "created_at"),
    Case("create title int", lambda w: w.store.create_conversation(title=5), II, "title"),
    Case("create title NUL", lambda w: w.store.create_conversation(title="a\x00"), IC, "NUL"),
    Case("create title surrogate", lambda w: w.store.create_conversation(title="\ud800"),
         IC, "surrogate"),
    Case("create title over max_message_bytes",
         lambda w: w.store.create_conversation(title=big()), errors.ContentTooLarge, "bytes"),
    Case("create metadata contains itself",
         lambda w: w.store.create_conversation(metadata=cycle()), IC, "cycle|itself"),
    Case("create metadata nested 5000 levels",
         lambda w: w.store.create_conversation(metadata=deep(5000)), IC, "nested|deep"),
    Case("create metadata key surrogate",
         lambda w: w.store.create_conversation(metadata={"\udfff": 1}), IC, "surrogate"),
    Case("create metadata value NUL",
         lambda w: w.store.create_conversation(metadata={"k": "\x00"}), IC, "NUL"),
    Case("create metadata a list",
         lambda w: w.store.create_conversation(metadata=[1]), II, "metadata"),
    Case("create metadata over max_message_bytes",
         lambda w: w.store.create_conversation(metadata={"k": big()}), errors.ContentTooLarge,
         "bytes"),
    Case("get not a uuid", lambda w: w.store.get_conversation("zz"), II, "conversation"),
    Case("get None", lambda w: w.store.get_conversation(None), II, "conversation"),
    Case("get a float", lambda w: w.store.get_conversation(1.5), II, "conversation"),
    Case("get unknown", lambda w: w.store.get_conversation(uuid.uuid4()),
         errors.ConversationNotFound, "conversation"),
    Case("get another tenant's", lambda w: w.store.get_conversation(w.foreign_conv.id),
         errors.ConversationNotFound, "conversation"),
    Case("list limit -1", lambda w: w.store.list_conversations(limit=-1), II, "limit"),
    Case("list limit 0", lambda w: w.store.list_conversations(limit=0), II, "limit"),
    Case("list limit a string", lambda w: w.store.list_conversations(limit="10"), II, "limit"),
    Case("list limit True", lambda w: w.store.list_conversations(limit=True), II, "limit"),
    Case("list limit 2.5", lambda w: w.store.list_conversations(limit=2.5), II, "limit"),
    Case("list limit 2**64", lambda w: w.store.list_conversations(limit=2**64), II, "limit"),
    Case("list before a string", lambda w: w.store.list_conversations(before="x"), II,
         "before"),
    Case("list before a uuid", lambda w: w.store.list_conversations(before=uuid.uuid4()),
         II, "before"),
    Case("list before a Node", lambda w: w.store.list_conversations(before=w.ask), II,
         "before"),
    Case("update title int", lambda w: w.store.update_conversation(w.conv, title=5), II,
         "title"),
    Case("update title over max_message_bytes",
         lambda w: w.store.update_conversation(w.conv, title=big()), errors.ContentTooLarge,
         "bytes"),
    Case("update metadata cycle",
         lambda w: w.store.update_conversation(w.conv, metadata=cycle()), IC, "cycle|itself"),
    Case("update metadata deep",
         lambda w: w.store.update_conversation(w.conv, metadata=deep(5000)), II,
         "nested|deep"),
    Case("update metadata a string",
         lambda w: w.store.update_conversation(w.conv, metadata="x"), II, "metadata"),
    Case("update unknown", lambda w: w.store.update_conversation(uuid.uuid4(), title="t"),
         errors.ConversationNotFound, "conversation"),
    Case("update another tenant's",
         lambda w: w.store.update_conversation(w.foreign_conv, title="mine now"),
         errors.ConversationNotFound, "conversation"),
    Case("update not a uuid", lambda w: w.store.update_conversation("zz", title="t"), II,
         "conversation"),
    Case("rename NUL", lambda w: w.store.rename_conversation(w.conv, "a\x00"), IC, "NUL"),
    Case("rename surrogate", lambda w: w.store.rename_conversation(w.conv, "\ud800"), II,
         "surrogate"),
    Case("rename int", lambda w: w.store.rename_conversation(w.conv, 5), II, "title"),
    Case("rename another tenant's",
         lambda w: w.store.rename_conversation(w.foreign_conv.id, "t"),
         errors.ConversationNotFound, "conversation"),
    Case("delete not a uuid", lambda w: w.store.delete_conversation("zz"), II, "conversation"),
    Case("delete None", lambda w: w.store.delete_conversation(None), II, "conversation"),
    Case("delete unknown", lambda w: w.store.delete_conversation(uuid.uuid4()),
         errors.ConversationNotFound, "conversation"),
    Case("delete another tenant's", lambda w: w.store.delete_conversation(w.foreign_conv),
         errors.ConversationNotFound, "conversation"),
    Case("append to a deleted conversation",
         lambda w: _deleted_conversation(w, lambda c: w.store.append(c, role="user",
                                                                     content="x")),
         errors.ConversationNotFound, "conversation"),
    Case("set_current on a deleted conversation",
         lambda w: _deleted_conversation(w, lambda c: w.store.set_current(c, None)),
         errors.ConversationNotFound, "conversation"),
    Case("rename a deleted conversation",
         lambda w: _deleted_conversation(w, lambda c: w.store.rename_conversation(c, "t")),
         errors.ConversationNotFound, "conversation"),
]


def _deleted_conversation(w: World, then: Callable[[Any], Any]) -> Any:
    """``then`` on a conversation (a Conversation object) made and deleted first, inside
    the judged call: the two cancel out, so the judge still sees any write of ``then``."""
    conv = w.store.create_conversation(title="to delete")
    w.store.append(conv, role="user", content="x")
    w.store.delete_conversation(conv)
    return then(conv)


#: Values that are not a Node, for the methods that take one.
NOT_NODES: list[tuple[str, Callable[[World], Any]]] = [
    ("a str", lambda w: str(w.ask.id)),
    ("a UUID", lambda w: w.ask.id),
    ("None", lambda w: None),
    ("an int", lambda w: 5),
    ("a Conversation", lambda w: w.conv),
]

NODE_METHODS: list[tuple[str, Callable[[World, Any], Any]]] = [
    ("path", lambda w, n: w.store.path(n)),
    ("children", lambda w, n: w.store.children(n)),
    ("edit", lambda w, n: w.store.edit(n, "changed")),
    ("delete_subtree", lambda w, n: w.store.delete_subtree(n)),
    ("redact", lambda w, n: w.store.redact(n)),
    ("add_summary", lambda w, n: w.store.add_summary(n, "Summary: x")),
    ("context", lambda w, n: w.store.context(n, model="gpt-4o-mini")),
    ("append_chain", lambda w, n: w.store.append_chain(n, [{"role": "user", "content": "x"}])),
]


def _node_case(method: str, run: Callable[[World, Any], Any], label: str,
               make: Callable[[World], Any]) -> Case:
    return Case(f"{method} given {label}", lambda w: run(w, make(w)), II, "node")


NODE_TYPE_CASES = [_node_case(method, run, label, make)
                   for method, run in NODE_METHODS for label, make in NOT_NODES]

#: A Node that is not there for this store: deleted, or another tenant's.
MISSING_NODE_CASES = [
    case
    for method, run in NODE_METHODS if method != "edit"   # edit: see the decided cases
    for case in (
        Case(f"{method} of a deleted node", lambda w, run=run: run(w, w.gone), NF, "node"),
        Case(f"{method} of another tenant's node",
             lambda w, run=run: run(w, w.foreign_node), NF, "node|conversation"),
    )
] + [Case("edit of another tenant's node", lambda w: w.store.edit(w.foreign_node, "x"),
          NF, "node|conversation")]

NODE_CASES = [
    Case("node conversation not a uuid", lambda w: w.store.node("zz", w.ask.id), II,
         "conversation"),
    Case("node id not a uuid", lambda w: w.store.node(w.conv, "zz"), II, "node"),
    Case("node id None", lambda w: w.store.node(w.conv, None), II, "node"),
    Case("node id int", lambda w: w.store.node(w.conv, 5), II, "node"),
    Case("node unknown", lambda w: w.store.node(w.conv, uuid.uuid4()), errors.NodeNotFound,
         "node"),
    Case("node of another conversation", lambda w: w.store.node(w.conv, w.other_node.id),
         errors.NodeNotFound, "node"),
    Case("node of another tenant",
         lambda w: w.store.node(w.foreign_conv.id, w.foreign_node.id), NF, "conversation"),
    Case("current not a uuid", lambda w: w.store.current("zz"), II, "conversation"),
    Case("current unknown", lambda w: w.store.current(uuid.uuid4()),
         errors.ConversationNotFound, "conversation"),
    Case("current of another tenant", lambda w: w.store.current(w.foreign_conv),
         errors.ConversationNotFound, "conversation"),
    *[Case(f"{which} {label}", lambda w, which=which, make=make: getattr(w.store, which)(make(w)),
           error, hint)
      for which in ("tree", "roots", "leaves")
      for label, make, error, hint in (
          ("not a uuid", lambda w: "zz", II, "conversation"),
          ("None", lambda w: None, II, "conversation"),
          ("int", lambda w: 7, II, "conversation"),
          ("unknown", lambda w: uuid.uuid4(), errors.ConversationNotFound, "conversation"),
          ("of another tenant", lambda w: w.foreign_conv.id, errors.ConversationNotFound,
           "conversation"))],
    Case("set_current node not a uuid", lambda w: w.store.set_current(w.conv, "zz"), II,
         "node"),
    Case("set_current node int", lambda w: w.store.set_current(w.conv, 5), II, "node"),
    Case("set_current unknown node", lambda w: w.store.set_current(w.conv, uuid.uuid4()),
         errors.NodeNotFound, "node"),
    Case("set_current deleted node", lambda w: w.store.set_current(w.other, w.gone),
         errors.NodeNotFound, "node"),
    Case("set_current node of another conversation",
         lambda w: w.store.set_current(w.conv, w.other_node), (II, NF), "node|conversation"),
    Case("set_current a summary", lambda w: w.store.set_current(w.conv, w.summary), (II, NF),
         "summary|message"),
    Case("set_current another tenant's node",
         lambda w: w.store.set_current(w.conv, w.foreign_node), (II, NF),
         "node|conversation"),
    Case("set_current another tenant's conversation",
         lambda w: w.store.set_current(w.foreign_conv, None), errors.ConversationNotFound,
         "conversation"),
    Case("set_current conversation not a uuid", lambda w: w.store.set_current("zz", None),
         II, "conversation"),
]

def _disguised(node: convotree.Node, **fields: Any) -> convotree.Node:
    """A Node whose fields lie about the stored row (``dataclasses.replace``): what the
    store does must follow the row, never the caller's copy."""
    return dataclasses.replace(node, **fields)


WRITE_CASES = [
    Case("redact a summary disguised as a message",
         lambda w: w.store.redact(_disguised(w.summary, kind="message")),
         (errors.InvalidKind, errors.InvalidParent), "delete_subtree|summary"),
    Case("edit a summary disguised as a message",
         lambda w: w.store.edit(_disguised(w.summary, kind="message", role="user"), "x"),
         errors.InvalidParent, "summary"),
    Case("add_summary under a summary disguised as a message",
         lambda w: w.store.add_summary(_disguised(w.summary, kind="message"), "Summary: y"),
         errors.InvalidParent, "summary"),
    Case("edit a deleted node disguised with a live parent",
         lambda w: w.store.edit(_disguised(w.gone, parent_id=w.other_node.id), "again"),
         errors.NodeNotFound, "node"),
    Case("delete_subtree of our node id under another tenant's conversation",
         lambda w: w.store.delete_subtree(_disguised(w.ask, conversation_id=w.foreign_conv.id)),
         NF, "conversation|node"),
    Case("delete_subtree of another tenant's node id under our conversation",
         lambda w: w.store.delete_subtree(_disguised(w.foreign_node, conversation_id=w.conv.id)),
         errors.NodeNotFound, "node"),
    Case("list before a Conversation with updated_at None",
         lambda w: w.store.list_conversations(before=dataclasses.replace(w.conv,
                                                                         updated_at=None)),
         II, "before|updated_at"),
    Case("list before a Conversation with a naive updated_at",
         lambda w: w.store.list_conversations(before=dataclasses.replace(
             w.conv, updated_at=datetime(2030, 1, 1))), II, "before|updated_at|timezone"),
    Case("list before a Conversation whose id is a string",
         lambda w: w.store.list_conversations(before=dataclasses.replace(w.conv, id="zz")), II,
         "before|id"),
    Case("append_chain messages None", lambda w: w.store.append_chain(w.ask2, None), II,
         "messages"),
    Case("append_chain messages a string", lambda w: w.store.append_chain(w.ask2, "user"), II,
         "message"),
    Case("append_chain an int item", lambda w: w.store.append_chain(w.ask2, [5]), II,
         "message"),
    Case("append_chain a bad second message",
         lambda w: w.store.append_chain(w.answer, [{"role": "user", "content": "ok"},
                                                  {"role": "robot", "content": "x"}]),
         errors.InvalidRole, "role"),
    Case("append_chain a message without role",
         lambda w: w.store.append_chain(w.answer, [{"content": "x"}]), II, "role"),
    Case("append_chain an unknown field",
         lambda w: w.store.append_chain(w.answer, [{"role": "user", "content": "x",
                                                   "parent": w.system}]), II, "parent"),
    Case("append_chain result for a call not made",
         lambda w: w.store.append_chain(w.call, [
             {"role": "tool", "tool_call_id": "c2", "content": "ok"},
             {"role": "tool", "tool_call_id": "c7", "content": "?"}]),
         errors.ToolCallMismatch, "c7"),
    Case("append_chain set_current a string",
         lambda w: w.store.append_chain(w.answer, [{"role": "user", "content": "x"}],
                                        set_current="no"), II, "set_current"),
    Case("edit content int", lambda w: w.store.edit(w.ask, 5), II, "content"),
    Case("edit content NUL", lambda w: w.store.edit(w.ask, "\x00"), IC, "NUL"),
    Case("edit content over the limit", lambda w: w.store.edit(w.ask, big()),
         errors.ContentTooLarge, "bytes"),
    Case("edit role robot", lambda w: w.store.edit(w.ask, "x", role="robot"),
         errors.InvalidRole, "role"),
    Case("edit with parent=", lambda w: w.store.edit(w.ask, "x", parent=w.answer), II,
         "parent"),
    Case("edit with an unknown keyword", lambda w: w.store.edit(w.ask, "x", colour="red"), II,
         "colour"),
    Case("edit a tool call leaving calls unanswered",
         lambda w: w.store.edit(w.result1, "other result"), errors.ToolCallMismatch,
         "tool_call_id|call"),
    Case("redact replacement int", lambda w: w.store.redact(w.ask, 5), II,
         "replacement|content"),
    Case("redact replacement NUL", lambda w: w.store.redact(w.ask, "\x00"), IC, "NUL"),
    Case("redact replacement surrogate", lambda w: w.store.redact(w.ask, "\ud800"), II,
         "surrogate"),
    Case("redact replacement over the limit", lambda w: w.store.redact(w.ask, big()),
         errors.ContentTooLarge, "bytes"),
    Case("redact replacement None", lambda w: w.store.redact(w.ask, None), II,
         "replacement|content"),
    Case("add_summary base a random uuid",
         lambda w: w.store.add_summary(w.ask2, "Summary: x", base=uuid.uuid4()),
         (errors.NodeNotFound, errors.InvalidParent), "base|summary"),
    Case("add_summary base a message",
         lambda w: w.store.add_summary(w.ask2, "Summary: x", base=w.ask), errors.InvalidParent,
         "base|summary"),
    Case("add_summary base below the covered node",
         lambda w: w.store.add_summary(w.ask, "Summary: x", base=w.summary),
         errors.InvalidParent, "base|summary"),
    Case("add_summary base of another tenant",
         lambda w: w.store.add_summary(w.ask2, "Summary: x", base=w.foreign_summary),
         (errors.NodeNotFound, errors.InvalidParent), "base|summary"),
    Case("add_summary base not a uuid",
         lambda w: w.store.add_summary(w.ask2, "Summary: x", base="zz"), II, "base|node"),
    Case("add_summary of a summary", lambda w: w.store.add_summary(w.summary, "Summary: x"),
         errors.InvalidParent, "summary"),
    Case("add_summary content None", lambda w: w.store.add_summary(w.ask2, None), II,
         "content"),
    Case("add_summary content int", lambda w: w.store.add_summary(w.ask2, 5), II, "content"),
    Case("add_summary content NUL", lambda w: w.store.add_summary(w.ask2, "S\x00"), IC, "NUL"),
    Case("add_summary content over the limit", lambda w: w.store.add_summary(w.ask2, big()),
         errors.ContentTooLarge, "bytes"),
    Case("add_summary metadata cycle",
         lambda w: w.store.add_summary(w.ask2, "S", metadata=cycle()), IC, "cycle|itself"),
    Case("add_summary input_tokens 2**63",
         lambda w: w.store.add_summary(w.ask2, "S", input_tokens=2**63), II, "input_tokens"),
    Case("add_summary api_items a string",
         lambda w: w.store.add_summary(w.ask2, "S", api_items="x"), II, "api_items"),
    Case("add_summary model NUL", lambda w: w.store.add_summary(w.ask2, "S", model="m\x00"),
         IC, "NUL"),
]


def _context(**options: Any) -> Callable[[World], Any]:
    def run(w: World) -> Any:
        values: dict[str, Any] = {"model": "gpt-4o-mini", **options}
        return w.store.context(w.answer, **values)

    return run


#: A bad context argument: InvalidArgument (checked first) or a ContextError.
CTX = (errors.InvalidInput, errors.ContextError)

CONTEXT_CASES = [
    Case("context budget True", _context(budget=True), CTX, "budget"),
    Case("context budget 0", _context(budget=0), CTX, "budget"),
    Case("context budget -100", _context(budget=-100), CTX, "budget"),
    Case("context budget a string", _context(budget="100"), CTX, "budget"),
    Case("context budget 1.5", _context(budget=1.5), CTX, "budget"),
    Case("context reserve_output a string", _context(reserve_output="100"),
         CTX, "reserve_output"),
    Case("context reserve_output -1", _context(reserve_output=-1), CTX,
         "reserve_output"),
    Case("context reserve_output True", _context(reserve_output=True), CTX,
         "reserve_output"),
    Case("context reserve_output None", _context(reserve_output=None), CTX,
         "reserve_output"),
    Case("context reserve_output too large", _context(reserve_output=10**9),
         CTX, "reserve_output"),
    Case("context tools a string", _context(tools="weather"), II, "tools"),
    Case("context tools of ints", _context(tools=[5]), II, "tool"),
    Case("context tools a dict", _context(tools={"type": "function"}), II, "tools"),
    Case("context tool without function", _context(tools=[{"type": "function"}]), II,
         "function|name"),
    Case("context tool with NUL", _context(tools=[{"type": "function", "function": {
        "name": "f\x00", "parameters": {}}}]), II, "NUL"),
    Case("context tool that contains itself", _context(tools=[cycle()]), II,
         "cycle|itself|tool"),
    Case("context format xml", _context(format="xml"), CTX, "format"),
    Case("context format None", _context(format=None), CTX, "format"),
    Case("context policy an int", _context(policy=5), II, "policy"),
    Case("context policy a string", _context(policy="newest"), II, "policy"),
    Case("context model None", _context(model=None), (II, CTX), "model"),
    Case("context model int", _context(model=5), (II, CTX), "model"),
    Case("context model NUL", _context(model="gpt\x00"), (II, CTX),
         "model|NUL"),
    Case("context unknown model without budget", _context(model="no-such-model"),
         errors.UnknownModel, "budget"),
    Case("context summarizer an int", _context(summarizer=5), II, "summarizer"),
    Case("context summary_options an int",
         _context(summarizer=convotree.ExtractiveSummarizer(), summary_options=5), II,
         "summary_options"),
    Case("context of a summary", lambda w: w.store.context(w.summary, model="gpt-4o-mini"),
         CTX, "summary"),
    Case("context of an unanswered tool call",
         lambda w: w.store.context(w.call, model="gpt-4o-mini"), errors.IncompleteToolCalls,
         "c2|result"),
    Case("context of a Node whose conversation is another tenant's (forged)",
         lambda w: w.store.context(dataclasses.replace(w.answer,
                                                       conversation_id=w.foreign_conv.id),
                                   model="gpt-4o-mini"), NF, "conversation|node"),
    Case("context budget below the kept messages",
         lambda w: w.store.context(w.answer, model="gpt-4o-mini", budget=2),
         errors.BudgetExceeded, "budget"),
]

#: Summary options a context with a summarizer must refuse before it summarizes.
BAD_SUMMARY_OPTIONS = [
    ("keep_recent a string", {"keep_recent": "half"}, "keep_recent"),
    ("keep_recent -1", {"keep_recent": -1.0}, "keep_recent"),
    ("keep_recent 7", {"keep_recent": 7.0}, "keep_recent"),
    ("max_summary_tokens -1", {"max_summary_tokens": -1}, "max_summary_tokens"),
    ("max_summary_tokens a string", {"max_summary_tokens": "many"}, "max_summary_tokens"),
]


@pytest.mark.parametrize(("label", "options", "hint"), BAD_SUMMARY_OPTIONS,
                         ids=[case[0] for case in BAD_SUMMARY_OPTIONS])
def test_context_refuses_bad_summary_options(world: World, label: str,
                                             options: dict[str, Any], hint: str) -> None:
    """A context that would summarize, given SummaryOptions out of range: a typed error
    and no summary written (a keep_recent of -1 must not store one)."""
    leaf = world.other_node
    for turn in range(12):
        leaf = world.store.append(world.other, parent=leaf,
                                  role="assistant" if turn % 2 == 0 else "user",
                                  content=f"turn {turn}: a museum, a tram ride and lunch")
    # Built inside the judged call: refusing at construction is as good.
    judge([world.engine], lambda: world.store.context(
        leaf, model="gpt-4o-mini", budget=120, summarizer=convotree.ExtractiveSummarizer(),
        summary_options=convotree.SummaryOptions(**options)), CTX, hint)


STORE_CASES = (APPEND_CASES + CONVERSATION_CASES + NODE_TYPE_CASES + MISSING_NODE_CASES
               + NODE_CASES + WRITE_CASES + CONTEXT_CASES)


@pytest.mark.parametrize("case", STORE_CASES, ids=[case.id for case in STORE_CASES])
def test_store_call_refuses(world: World, case: Case) -> None:
    """Every hostile Store/AsyncStore call: typed error, helpful message, no write."""
    judge([world.engine], lambda: case.call(world), case.error, case.hint)


def test_case_count() -> None:
    """Hundreds of concrete cases, each run on 2 backends x 2 shells: the count keeps a
    refactor of the tables from silently dropping most of them."""
    assert len(STORE_CASES) + len(CONSTRUCTOR_CASES) + len(MIGRATE_CASES) >= 300


@pytest.mark.parametrize(("label", "fields"), [
    ("role tool", {"role": "tool", "tool_call_id": "c1"}),
    ("a long name", {"name": "n" * 200}),
    ("another encoding", {"encoding": "cl100k_base"}),
    ("tool calls", {"role": "assistant", "tool_calls": CALL}),
], ids=["role tool", "a long name", "another encoding", "tool calls"])
def test_redact_follows_the_stored_row_not_the_callers_node(
        world: World, label: str, fields: dict[str, Any]) -> None:
    """``redact`` of a Node whose fields lie (``dataclasses.replace``) either refuses it
    (a typed error, nothing written) or redacts the stored message as it is: its role,
    name, calls and encoding stay, and its token counts are those of the row
    (``check_invariants`` recounts them), not of the caller's copy."""
    before = snapshot(world.engine)
    ok, value = bounded(lambda: world.store.redact(_disguised(world.ask, **fields)))
    if not ok:
        assert isinstance(value, errors.InvalidInput), f"ESCAPE: {type(value).__name__}: {value}"
        assert snapshot(world.engine) == before, "WROTE despite the error"
    stored = world.store.node(world.conv, world.ask.id)
    assert (stored.role, stored.name, stored.tool_calls, stored.encoding) == (
        world.ask.role, world.ask.name, world.ask.tool_calls, world.ask.encoding)
    check_invariants(world.engine)


# --- semantics the lead decided (expected to fail until implemented) -------------------


def test_decided_edit_of_a_deleted_node_is_not_found(world: World) -> None:
    """DECIDED: ``edit`` of a node that is gone raises NodeNotFound and writes nothing
    (today it appends a sibling of the deleted node under its surviving parent)."""
    judge([world.engine], lambda: world.store.edit(world.gone, "again"), errors.NodeNotFound,
          "node")


def test_decided_edit_of_a_deleted_root_is_not_found(world: World) -> None:
    """DECIDED: the same for a deleted root (today it silently makes a new root)."""
    root = world.store.append(world.other, role="user", content="a root to delete")
    world.store.delete_subtree(root)
    judge([world.engine], lambda: world.store.edit(root, "again"), errors.NodeNotFound, "node")


def test_decided_edit_of_a_summary_is_invalid_parent(world: World) -> None:
    """DECIDED: a summary is not edited (redact it or add a new summary): InvalidParent,
    nothing written (today a system message appears beside the summary)."""
    judge([world.engine], lambda: world.store.edit(world.summary, "Summary: other"),
          errors.InvalidParent, "summary")


def test_decided_redact_of_a_summary_points_to_delete_subtree(world: World) -> None:
    """DECIDED: ``redact(summary)`` raises InvalidKind or InvalidParent whose message says
    summaries are removed with ``delete_subtree(summary)``; nothing written."""
    judge([world.engine], lambda: world.store.redact(world.summary),
          (errors.InvalidKind, errors.InvalidParent), "delete_subtree")


def test_decided_another_tenants_conversation_id_reads_as_in_use(world: World) -> None:
    """DECIDED: creating a conversation with an id another tenant already uses fails
    exactly like reusing one of this tenant's own ids (InvalidInput "already in use"),
    same type and same message with the id masked, and the message never names the
    other tenant: the two cases are indistinguishable."""
    own = judge([world.engine], lambda: world.store.create_conversation(id=world.conv.id),
                II, "already")
    theirs = judge([world.engine],
                   lambda: world.store.create_conversation(id=world.foreign_conv.id),
                   II, "already")
    assert type(own) is type(theirs)
    masked_own = str(own).replace(str(world.conv.id), "<id>").replace(world.conv.id.hex, "<id>")
    masked_theirs = (str(theirs).replace(str(world.foreign_conv.id), "<id>")
                     .replace(world.foreign_conv.id.hex, "<id>"))
    assert masked_own == masked_theirs
    assert "intruder" not in str(theirs) and "tenant" not in str(theirs).lower()


# --- constructors ------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenCase:
    """A store opened with a bad URL or option: ``url(good_url, tmp_path)``."""

    id: str
    url: Callable[[str, Path], Any]
    options: dict[str, Any]
    error: Err
    hint: str | None = None



def SAME(good: str, tmp: Path) -> str:
    return good


CONFIG = errors.ConfigurationError
CONSTRUCTOR_CASES = [
    OpenCase("unparseable URL", lambda good, tmp: "not a url at all", {}, CONFIG, "URL"),
    OpenCase("empty URL", lambda good, tmp: "", {}, CONFIG, "URL"),
    OpenCase("URL None", lambda good, tmp: None, {}, CONFIG, "URL|engine"),
    OpenCase("URL an int", lambda good, tmp: 5, {}, CONFIG, "URL|engine"),
    OpenCase("unsupported dialect", lambda good, tmp: "mysql://x/y", {}, CONFIG,
             "SQLite and PostgreSQL"),
    OpenCase("unknown driver", lambda good, tmp: "postgresql+nosuchdriver://x/y", {}, CONFIG,
             "driver"),
    OpenCase("SQLite in a missing folder",
             lambda good, tmp: f"sqlite:///{tmp / 'no-such-folder' / 'chat.db'}", {},
             CONFIG, "no-such-folder|no SQLite"),
    OpenCase("SQLite in a missing folder, create=True",
             lambda good, tmp: f"sqlite:///{tmp / 'no-such-folder' / 'chat.db'}",
             {"create": True}, CONFIG, "folder"),
    OpenCase("missing PostgreSQL database",
             lambda good, tmp: "postgresql+psycopg://postgres@127.0.0.1:5432/"
                               "convotree_no_such_database", {}, CONFIG,
             "convotree_no_such_database|does not exist"),
    OpenCase("missing PostgreSQL database, create=True",
             lambda good, tmp: "postgresql+psycopg://postgres@127.0.0.1:5432/"
                               "convotree_no_such_database", {"create": True}, CONFIG,
             "convotree_no_such_database|does not exist"),
    OpenCase("PostgreSQL nobody listens to",
             lambda good, tmp: "postgresql+psycopg://postgres@127.0.0.1:1/x", {},
             (CONFIG, errors.StoreError), "connect|reach|127.0.0.1"),
    OpenCase("encoding nope", SAME, {"encoding": "nope"}, CONFIG, "encoding"),
    OpenCase("encoding an int", SAME, {"encoding": 5}, CONFIG, "encoding"),
    OpenCase("encoding None", SAME, {"encoding": None}, CONFIG, "encoding"),
    OpenCase("max_message_bytes -1", SAME, {"max_message_bytes": -1}, CONFIG,
             "max_message_bytes"),
    OpenCase("max_message_bytes 0", SAME, {"max_message_bytes": 0}, CONFIG,
             "max_message_bytes"),
    OpenCase("max_message_bytes a string", SAME, {"max_message_bytes": "10"}, CONFIG,
             "max_message_bytes"),
    OpenCase("max_message_bytes True", SAME, {"max_message_bytes": True}, CONFIG,
             "max_message_bytes"),
    OpenCase("max_message_bytes 2.5", SAME, {"max_message_bytes": 2.5}, CONFIG,
             "max_message_bytes"),
    OpenCase("max_message_bytes None", SAME, {"max_message_bytes": None}, CONFIG,
             "max_message_bytes"),
    OpenCase("tenant an int", SAME, {"tenant": 5}, (CONFIG, II), "tenant"),
    OpenCase("tenant None", SAME, {"tenant": None}, (CONFIG, II), "tenant"),
    OpenCase("tenant NUL", SAME, {"tenant": "acme\x00"}, (CONFIG, II), "tenant"),
    OpenCase("tenant lone surrogate", SAME, {"tenant": "\ud800"}, (CONFIG, II), "tenant"),
    OpenCase("create a string", SAME, {"create": "no"}, CONFIG, "create"),
    OpenCase("create None", SAME, {"create": None}, CONFIG, "create"),
    OpenCase("unknown option", SAME, {"colour": "red"}, CONFIG, "colour"),
]


@pytest.mark.parametrize("case", CONSTRUCTOR_CASES, ids=[case.id for case in CONSTRUCTOR_CASES])
def test_constructor_refuses(opener: Opener, url: str, engine: sa.Engine, tmp_path: Path,
                             postgres: PostgresServer, case: OpenCase) -> None:
    """Store(...) / AsyncStore.open(...) with a bad URL or option: ConfigurationError at
    once (not at the first call), nothing written, no file or folder created."""
    if "PostgreSQL" in case.id:
        _require(postgres)
    target = case.url(url, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    judge([engine], lambda: opener(target, **case.options), case.error, case.hint)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a file or folder was created"


def test_with_tenant_refuses(opener: Opener, url: str, engine: sa.Engine) -> None:
    """``with_tenant`` takes the same tenants as the constructor."""
    store = opener(url)
    for tenant in (5, None, "a\x00", "\ud800"):
        judge([engine], lambda tenant=tenant: store.with_tenant(tenant), (CONFIG, II), "tenant")


# --- calls that need no tree: tokens, summarizers, engines -------------------------------


@dataclass(frozen=True)
class PureCase:
    id: str
    call: Callable[[], Any]
    error: Err
    hint: str | None = None


def _register(name: Any, **spec: Any) -> Any:
    """``register_model`` with a bad name or spec, undone if it was accepted (the model
    table is process-wide)."""
    from convotree import _openai_models, tokens

    try:
        return tokens.register_model(name, tokens.ModelSpec(**spec))
    finally:
        if isinstance(name, str):
            _openai_models.MODELS.pop(name.lower(), None)
            tokens.model_spec.cache_clear()


def _tokens() -> Any:
    from convotree import tokens

    return tokens


PURE_CASES = [
    PureCase("count_text of an int", lambda: _tokens().count_text(5, "o200k_base"), II, "text"),
    PureCase("count_text unknown encoding", lambda: _tokens().count_text("x", "nope"),
             (II, CONFIG), "encoding"),
    PureCase("count_text lone surrogate", lambda: _tokens().count_text("\ud800", "o200k_base"),
             II, "surrogate"),
    PureCase("count_messages of a string",
             lambda: _tokens().count_messages("hello", model="gpt-4o"), II, "message"),
    PureCase("count_messages without role",
             lambda: _tokens().count_messages([{"content": "x"}], model="gpt-4o"), II, "role"),
    PureCase("count_messages model int",
             lambda: _tokens().count_messages([{"role": "user", "content": "x"}], model=5), II,
             "model"),
    PureCase("count_messages content int",
             lambda: _tokens().count_messages([{"role": "user", "content": 5}],
                                              model="gpt-4o"), II, "content"),
    PureCase("count_messages tools a string",
             lambda: _tokens().count_messages([{"role": "user", "content": "x"}],
                                              model="gpt-4o", tools="weather"), II, "tools"),
    PureCase("register_model name an int", lambda: _register(5, context_window=1000), II,
             "name"),
    PureCase("register_model context_window a string",
             lambda: _register("hostile-model-a", context_window="big"), II, "context_window"),
    PureCase("register_model context_window -1",
             lambda: _register("hostile-model-b", context_window=-1), II, "context_window"),
    PureCase("register_model unknown encoding",
             lambda: _register("hostile-model-c", context_window=1000, encoding="nope"),
             (II, CONFIG), "encoding"),
    PureCase("encoding_for_model of an int", lambda: _tokens().encoding_for_model(5), II,
             "model"),
    PureCase("model_spec of None", lambda: _tokens().model_spec(None), II, "model"),
    PureCase("model_spec of an int", lambda: _tokens().model_spec(5), II, "model"),
    PureCase("OpenAISummarizer api bogus",
             lambda: convotree.OpenAISummarizer(object(), api="xml"), II, "api"),
    PureCase("OpenAISummarizer model an int",
             lambda: convotree.OpenAISummarizer(object(), model=5), II, "model"),
    PureCase("SummaryOptions keep_recent 2", lambda: convotree.SummaryOptions(keep_recent=2.0),
             II, "keep_recent"),
    PureCase("SummaryOptions keep_recent a string",
             lambda: convotree.SummaryOptions(keep_recent="half"), II, "keep_recent"),
    PureCase("SummaryOptions max_summary_tokens -1",
             lambda: convotree.SummaryOptions(max_summary_tokens=-1), II, "max_summary_tokens"),
    PureCase("create_engine unsupported dialect",
             lambda: convotree.create_engine("mysql://x/y"), CONFIG, "SQLite and PostgreSQL"),
    PureCase("create_engine an int", lambda: convotree.create_engine(5), CONFIG, "URL"),
    PureCase("create_async_engine unparseable",
             lambda: convotree.create_async_engine("not a url"), CONFIG, "URL"),
    PureCase("Store of an AsyncEngine",
             lambda: convotree.Store(convotree.create_async_engine("sqlite:///x.db")), CONFIG,
             "AsyncStore|AsyncEngine"),
    PureCase("AsyncStore of a sync Engine",
             lambda: convotree.AsyncStore(convotree.create_engine("sqlite:///x.db")), CONFIG,
             "Engine"),
]


@pytest.mark.parametrize("case", PURE_CASES, ids=[case.id for case in PURE_CASES])
def test_pure_call_refuses(case: PureCase) -> None:
    """Public calls that touch no database: the same contract (a typed error, a message
    naming what to fix, no hang)."""
    judge([], case.call, case.error, case.hint)


def test_bound_to_a_database_without_the_schema(backend: str, url: str, engine: sa.Engine,
                                               postgres: PostgresServer,
                                               tmp_path: Path) -> None:
    """``store.bind(connection)`` to a database convotree was never migrated into: the
    first call says so (SchemaOutOfDate, with the command that fixes it), not a raw
    "no such table" or "relation does not exist"."""
    empty = (f"sqlite:///{tmp_path / 'empty.db'}" if backend == "sqlite"
             else postgres.create_database())
    bare = convotree.create_engine(empty)
    try:
        with convotree.Store(url) as store, bare.connect() as conn:
            judge([engine], lambda: store.bind(conn).list_conversations(), CONFIG,
                  "schema|migrate")
    finally:
        bare.dispose()


# --- migrations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MigrateCase:
    id: str
    call: Callable[[str, Path], Any]
    error: Err
    hint: str | None = None


MIGRATE_CASES = [
    MigrateCase("migrate to 9999", lambda good, tmp: convotree.migrate(good, "9999"),
                errors.UnknownRevision, "9999"),
    MigrateCase("migrate to ''", lambda good, tmp: convotree.migrate(good, ""),
                errors.UnknownRevision, "revision"),
    MigrateCase("migrate to None", lambda good, tmp: convotree.migrate(good, None),
                errors.UnknownRevision, "revision"),
    MigrateCase("migrate to 5", lambda good, tmp: convotree.migrate(good, 5),
                errors.UnknownRevision, "revision"),
    MigrateCase("migrate to head; DROP", lambda good, tmp: convotree.migrate(
        good, "head; DROP TABLE convotree_nodes"), errors.UnknownRevision, "revision"),
    MigrateCase("migrate to -1", lambda good, tmp: convotree.migrate(good, "-1"),
                errors.UnknownRevision, "revision"),
    MigrateCase("downgrade to 9999", lambda good, tmp: convotree.downgrade(good, "9999"),
                errors.UnknownRevision, "9999"),
    MigrateCase("downgrade to +1", lambda good, tmp: convotree.downgrade(good, "+1"),
                errors.UnknownRevision, "revision"),
    MigrateCase("downgrade to None", lambda good, tmp: convotree.downgrade(good, None),
                errors.UnknownRevision, "revision"),
    MigrateCase("migrate unsupported dialect",
                lambda good, tmp: convotree.migrate("mysql://x/y"), CONFIG,
                "SQLite and PostgreSQL"),
    MigrateCase("migrate unparseable URL", lambda good, tmp: convotree.migrate("::::"), CONFIG,
                "URL"),
    MigrateCase("migrate URL an int", lambda good, tmp: convotree.migrate(5), CONFIG,
                "URL|engine"),
    MigrateCase("migrate SQLite in a missing folder",
                lambda good, tmp: convotree.migrate(f"sqlite:///{tmp / 'nowhere' / 'x.db'}"),
                CONFIG, "folder"),
    MigrateCase("migrate missing PostgreSQL database",
                lambda good, tmp: convotree.migrate(
                    "postgresql+psycopg://postgres@127.0.0.1:5432/convotree_no_such_database"),
                CONFIG, "convotree_no_such_database|does not exist"),
    MigrateCase("current_revision unsupported dialect",
                lambda good, tmp: convotree.current_revision("mysql://x/y"), CONFIG,
                "SQLite and PostgreSQL"),
    MigrateCase("current_revision missing PostgreSQL database",
                lambda good, tmp: convotree.current_revision(
                    "postgresql+psycopg://postgres@127.0.0.1:5432/convotree_no_such_database"),
                CONFIG, "convotree_no_such_database|does not exist"),
    MigrateCase("check_schema unparseable URL",
                lambda good, tmp: convotree.check_schema("not a url"), CONFIG, "URL"),
    MigrateCase("check_schema SQLite in a missing folder",
                lambda good, tmp: convotree.check_schema(
                    f"sqlite:///{tmp / 'nowhere' / 'x.db'}"), CONFIG, "nowhere|no SQLite"),
]


@pytest.mark.parametrize("case", MIGRATE_CASES, ids=[case.id for case in MIGRATE_CASES])
def test_migration_call_refuses(url: str, engine: sa.Engine, tmp_path: Path,
                                postgres: PostgresServer, case: MigrateCase) -> None:
    """migrate/downgrade/current_revision/check_schema: typed error, the schema (and
    every row, the version table included) as it was, nothing created on disk."""
    if "PostgreSQL" in case.id:
        _require(postgres)
    before = sorted(p.name for p in tmp_path.iterdir())
    judge([engine], lambda: case.call(url, tmp_path), case.error, case.hint)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a file or folder was created"


# --- reporting (sync Store only: the reports take a Store or a Connection) ----------------


@pytest.fixture
def report_world(backend: str, url: str, worlds: Worlds, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[World]:
    exempt_reporting(monkeypatch)
    yield worlds.get(backend, "sync")
    worlds.settle()


REPORT_CASES = [
    Case("by_day days 0", lambda w: reporting.by_day(w.store, days=0), II, "days"),
    Case("by_day days -3", lambda w: reporting.by_day(w.store, days=-3), II, "days"),
    Case("by_day days a string", lambda w: reporting.by_day(w.store, days="7"), II, "days"),
    Case("by_day days True", lambda w: reporting.by_day(w.store, days=True), II, "days"),
    Case("by_day days 1.5", lambda w: reporting.by_day(w.store, days=1.5), II, "days"),
    Case("by_day days 10**7", lambda w: reporting.by_day(w.store, days=10**7), II, "days"),
    Case("by_day today a string", lambda w: reporting.by_day(w.store, today="2024-01-01"), II,
         "today"),
    Case("by_day today a datetime in year 1",
         lambda w: reporting.by_day(w.store, days=2, today=date(1, 1, 1)), II, "today|days"),
    Case("conversation_stats limit -1",
         lambda w: reporting.conversation_stats(w.store, limit=-1), II, "limit"),
    Case("conversation_stats limit 0",
         lambda w: reporting.conversation_stats(w.store, limit=0), II, "limit"),
    Case("conversation_stats limit a string",
         lambda w: reporting.conversation_stats(w.store, limit="5"), II, "limit"),
    Case("conversation_stats limit 2**64",
         lambda w: reporting.conversation_stats(w.store, limit=2**64), II, "limit"),
    Case("totals tenant an int", lambda w: reporting.totals(w.store, tenant=5), (II, CONFIG),
         "tenant"),
    Case("totals tenant NUL", lambda w: reporting.totals(w.store, tenant="a\x00"),
         (II, CONFIG), "tenant"),
    Case("by_model tenant surrogate", lambda w: reporting.by_model(w.store, tenant="\ud800"),
         (II, CONFIG), "tenant"),
    Case("totals of something that is not a store",
         lambda w: reporting.totals("sqlite:///x.db"), (II, CONFIG), "Store|Connection"),
    Case("totals of an AsyncStore",
         lambda w: reporting.totals(convotree.AsyncStore(w.url)), (II, CONFIG),
         "Store|Connection|AsyncStore"),
]


@pytest.mark.parametrize("case", REPORT_CASES, ids=[case.id for case in REPORT_CASES])
def test_reporting_refuses(report_world: World, case: Case) -> None:
    judge([report_world.engine], lambda: case.call(report_world), case.error, case.hint)


# --- interchange (sync Store: import_file and export take a Store) --------------------------

DEEP_JSON = "[" * 100_000 + "]" * 100_000

#: (label, file bytes); every one is garbage for every format.
GARBAGE_FILES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("binary", bytes(range(256)) * 4),
    ("not UTF-8", b'[{"title": "\xff\xfe"}]'),
    ("truncated", b'[{"title": "a", "mapping": {'),
    ("nested 100000 levels", DEEP_JSON.encode()),
    ("a number", b"5"),
    ("a string", b'"conversations"'),
    ("null", b"null"),
    ("list of numbers", b"[1, 2, 3]"),
    ("list of nulls", b"[null, null]"),
    ("list of lists", b"[[1], [2]]"),
    ("object of garbage", b'{"a": {"b": [1, {"c": null}]}}'),
    ("NUL escapes", b'[{"title": "\\u0000", "messages": [{"role": "user", "content": "\\u0000"}],'
                    b' "mapping": {"\\u0000": {"id": "\\u0000"}}}]'),
    ("lone surrogate escapes", b'[{"title": "\\ud800", "messages": [{"role": "user", '
                               b'"content": "\\udfff"}], "mapping": {"a": {"id": "\\ud800"}}}]'),
    ("huge numbers", b'[{"create_time": 1e999, "update_time": -1e999, "id": 1e400, '
                     b'"messages": [{"role": "user", "content": "x", "createdAt": 1e309}]}]'),
    ("wrong field types", b'[{"title": 5, "mapping": [], "messages": {}, "id": [], '
                          b'"current_node": 7, "create_time": "yesterday"}]'),
    ("JSON lines of garbage", b"{}\n5\n[\n\"x\"\n{\"message_tree_id\": 5, \"prompt\": 7}\n"),
]


def _formats() -> tuple[str, ...]:
    from convotree.interchange import FORMATS

    return FORMATS


@pytest.fixture
def sync_world(backend: str, url: str, worlds: Worlds) -> Iterator[World]:
    yield worlds.get(backend, "sync")
    worlds.settle()


@pytest.mark.parametrize("fmt", _formats())
@pytest.mark.parametrize(("label", "data"), GARBAGE_FILES, ids=[g[0] for g in GARBAGE_FILES])
def test_import_of_garbage_refuses_or_reports(sync_world: World, tmp_path: Path, fmt: str,
                                               label: str, data: bytes) -> None:
    """A garbage file raises InvalidImport, or is read into an ImportResult whose
    failures name the broken records; either way nothing is written and nothing else
    escapes (a RecursionError, a KeyError, a driver error)."""
    from convotree.interchange import import_file

    path = tmp_path / f"garbage.{fmt}.json"
    path.write_bytes(data)
    before = snapshot(sync_world.engine)
    ok, value = bounded(lambda: import_file(sync_world.store, path, fmt))
    if not ok:
        if not isinstance(value, errors.ConvotreeError):
            pytest.fail(f"ESCAPE: {type(value).__module__}.{type(value).__name__}: "
                        f"{str(value)[:300]}", pytrace=False)
        assert isinstance(value, errors.InvalidImport), f"WRONG TYPE: {type(value).__name__}"
    else:
        assert not value.imported, f"ACCEPTED garbage: imported {value.imported}"
    after = snapshot(sync_world.engine)
    assert after == before, f"WROTE from garbage: {_diff(before, after)}"
    check_invariants(sync_world.engine)


INTERCHANGE_CASES = [
    Case("import unknown format", lambda w: _import(w, "[]", "nope"), errors.UnknownFormat,
         "nope"),
    Case("import format None", lambda w: _import(w, "[]", None), errors.UnknownFormat,
         "format"),
    Case("import a missing file",
         lambda w: _import_path(w, Path("/nonexistent/convotree/x.json"), "chatgpt"),
         errors.InvalidImport, "x.json"),
    Case("import a folder", lambda w: _import_path(w, Path("/"), "native"),
         errors.InvalidImport, "folder|directory|/"),
    Case("import path None", lambda w: _import_path(w, None, "native"), II, "path|file"),
    Case("export unknown format", lambda w: _export(w, w.conv, "nope"), errors.UnknownFormat,
         "nope"),
    Case("export conversation not a uuid", lambda w: _export(w, "zz", "native"), II,
         "conversation"),
    Case("export unknown conversation", lambda w: _export(w, uuid.uuid4(), "native"),
         errors.ConversationNotFound, "conversation"),
    Case("export another tenant's conversation",
         lambda w: _export(w, w.foreign_conv.id, "native"), errors.ConversationNotFound,
         "conversation"),
    Case("export_conversations of an int", lambda w: _export_many(w, 5, "native"), II,
         "conversation"),
    Case("export_conversations of garbage ids",
         lambda w: _export_many(w, ["zz", None], "native"), II, "conversation"),
    Case("export from an AsyncStore",
         lambda w: _export_with(convotree.AsyncStore(w.url), w.conv, "native"), (II, CONFIG),
         "Store|AsyncStore"),
]


def _import(w: World, text: str, fmt: Any) -> Any:
    from convotree.interchange import import_file

    handle, name = tempfile.mkstemp(suffix=".json")
    os.close(handle)
    target = Path(name)
    target.write_text(text)
    try:
        return import_file(w.store, target, fmt)
    finally:
        target.unlink()


def _import_path(w: World, path: Any, fmt: str) -> Any:
    from convotree.interchange import import_file

    return import_file(w.store, path, fmt)


def _export(w: World, conversation: Any, fmt: Any) -> Any:
    from convotree.interchange import export_conversation

    return export_conversation(w.store, conversation, fmt)


def _export_with(store: Any, conversation: Any, fmt: str) -> Any:
    from convotree.interchange import export_conversation

    return export_conversation(store, conversation, fmt)


def _export_many(w: World, conversations: Any, fmt: str) -> Any:
    from convotree.interchange import export_conversations

    return export_conversations(w.store, conversations, fmt)


@pytest.mark.parametrize("case", INTERCHANGE_CASES, ids=[case.id for case in INTERCHANGE_CASES])
def test_interchange_call_refuses(sync_world: World, case: Case) -> None:
    judge([sync_world.engine], lambda: case.call(sync_world), case.error, case.hint)


# --- Chat: what it refuses before any request ----------------------------------------------


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@dataclass(frozen=True)
class ChatCase:
    """A Chat call (or constructor) that must fail before it sends anything."""

    id: str
    call: Callable[[World, Callable[..., Any]], Any]
    error: Err
    hint: str | None = None


def _chat(w: World, make: Callable[..., Any], **options: Any) -> Any:
    return make(**{"model": "gpt-4o-mini", **options})


CHAT_CASES = [
    ChatCase("Chat without model", lambda w, make: make(), II, "model"),
    ChatCase("Chat model int", lambda w, make: make(model=5), II, "model"),
    ChatCase("Chat model None", lambda w, make: make(model=None), II, "model"),
    ChatCase("Chat api xml", lambda w, make: _chat(w, make, api="xml"), II, "api"),
    ChatCase("Chat unknown option", lambda w, make: _chat(w, make, colour="red"), II,
             "colour"),
    ChatCase("Chat budget a string", lambda w, make: _chat(w, make, budget="100"),
             (II, errors.ContextError), "budget"),
    ChatCase("Chat budget -1", lambda w, make: _chat(w, make, budget=-1),
             (II, errors.ContextError), "budget"),
    ChatCase("Chat budget True", lambda w, make: _chat(w, make, budget=True),
             (II, errors.ContextError), "budget"),
    ChatCase("Chat reserve_output a string",
             lambda w, make: _chat(w, make, reserve_output="5"), (II, errors.ContextError),
             "reserve_output"),
    ChatCase("Chat reserve_output -5", lambda w, make: _chat(w, make, reserve_output=-5),
             (II, errors.ContextError), "reserve_output"),
    ChatCase("Chat server_compaction 0",
             lambda w, make: _chat(w, make, api="responses", server_compaction=0),
             errors.ChatError, "server_compaction"),
    ChatCase("Chat policy an int", lambda w, make: _chat(w, make, policy=5), II, "policy"),
    ChatCase("Chat summarizer a string", lambda w, make: _chat(w, make, summarizer="x"), II,
             "summarizer"),
    ChatCase("Chat store not a store", lambda w, make: convotree.Chat(
        "sqlite:///x.db", object(), model="gpt-4o-mini"), (II, CONFIG), "store"),
    ChatCase("send content int", lambda w, make: _chat(w, make).send(w.conv, 5), II,
             "content"),
    ChatCase("send content NUL", lambda w, make: _chat(w, make).send(w.conv, "a\x00"), II,
             "NUL"),
    ChatCase("send content over the limit",
             lambda w, make: _chat(w, make).send(w.conv, big()), errors.ContentTooLarge,
             "bytes"),
    ChatCase("send name NUL", lambda w, make: _chat(w, make).send(w.conv, "hi", name="\x00"),
             IC, "NUL"),
    ChatCase("send to a conversation that is not a uuid",
             lambda w, make: _chat(w, make).send("zz", "hi"), II, "conversation"),
    ChatCase("send to an unknown conversation",
             lambda w, make: _chat(w, make).send(uuid.uuid4(), "hi"),
             errors.ConversationNotFound, "conversation"),
    ChatCase("send to another tenant's conversation",
             lambda w, make: _chat(w, make).send(w.foreign_conv.id, "hi"),
             errors.ConversationNotFound, "conversation"),
    ChatCase("send under another tenant's node",
             lambda w, make: _chat(w, make).send(w.foreign_node, "hi"), NF,
             "conversation|node"),
    ChatCase("send under a deleted node", lambda w, make: _chat(w, make).send(w.gone, "hi"),
             errors.NodeNotFound, "node"),
    ChatCase("send under a summary", lambda w, make: _chat(w, make).send(w.summary, "hi"),
             errors.InvalidParent, "summary"),
    ChatCase("send with stream=", lambda w, make: _chat(w, make).send(w.conv, "hi",
                                                                      stream=True), II,
             "stream"),
    ChatCase("send with an unknown model and no budget",
             lambda w, make: _chat(w, make).send(w.conv, "hi", model="no-such-model"),
             errors.UnknownModel, "budget"),
    ChatCase("send with tools a string",
             lambda w, make: _chat(w, make).send(w.other, "hi", tools="weather"), II, "tools"),
    ChatCase("send after unanswered calls",
             lambda w, make: _chat(w, make).send(w.result1, "hi"), errors.ToolCallMismatch,
             "c2"),
    ChatCase("reply to a str", lambda w, make: _chat(w, make).reply(str(w.ask.id)), II,
             "node"),
    ChatCase("reply to another tenant's node",
             lambda w, make: _chat(w, make).reply(w.foreign_node), NF, "node|conversation"),
    ChatCase("regenerate a user message",
             lambda w, make: _chat(w, make).regenerate(w.ask), II, "assistant"),
    ChatCase("regenerate a UUID", lambda w, make: _chat(w, make).regenerate(w.answer.id), II,
             "node|answer"),
    ChatCase("regenerate a deleted answer",
             lambda w, make: _chat(w, make).regenerate(w.gone), errors.NodeNotFound, "node"),
    ChatCase("edit an assistant message",
             lambda w, make: _chat(w, make).edit(w.answer, "x"), II, "user"),
    ChatCase("edit None", lambda w, make: _chat(w, make).edit(None, "x"), II, "node|message"),
    ChatCase("edit content NUL", lambda w, make: _chat(w, make).edit(w.ask, "\x00"), II,
             "NUL"),
    ChatCase("compact method bogus",
             lambda w, make: _chat(w, make, api="responses").compact(w.answer, method="x"),
             II, "method"),
    ChatCase("compact a str", lambda w, make: _chat(w, make, api="responses").compact("zz"),
             II, "node"),
    ChatCase("run_tools tool_errors bogus",
             lambda w, make: _chat(w, make).run_tools(w.conv, "hi", {},
                                                      tool_errors="ignore"), II, "tool_errors"),
    ChatCase("stream content NUL", lambda w, make: _chat(w, make).stream(w.conv, "\x00"), II,
             "NUL"),
]


@pytest.mark.parametrize("case", CHAT_CASES, ids=[case.id for case in CHAT_CASES])
def test_chat_refuses_before_any_request(world: World, fake_server: FakeOpenAI,
                                         case: ChatCase) -> None:
    """Chat/AsyncChat check their own arguments first: a typed error, nothing stored,
    and no request reached the (fake) API."""
    def make(**options: Any) -> Any:
        return twins.make_chat(world.store, lambda use_async: (
            fake_server.async_client(max_retries=0) if use_async
            else fake_server.client(max_retries=0)), **options)

    calls = len(fake_server.calls)
    judge([world.engine], lambda: case.call(world, make), case.error, case.hint)
    assert len(fake_server.calls) == calls, "a request was sent before the input was checked"


# --- same input, same outcome on both backends ----------------------------------------------


@dataclass(frozen=True)
class Twin:
    """A call whose outcome (a value read back, or an error type) must be the same on
    SQLite and PostgreSQL. ``call`` returns what to compare."""

    id: str
    call: Callable[[World], Any]


def _same(given: Any, read: Any) -> bool:
    """Whether a value read back is the value given: the same JSON value for metadata
    (object keys in any order, numbers by their exact decimal value, so 1e308 and -0.0
    may come back as jsonb spells them), the same type and value for anything else."""
    if isinstance(given, dict):
        return (isinstance(read, dict) and set(given) == set(read)
                and all(_same(given[k], read[k]) for k in given))
    if isinstance(given, list):
        return (isinstance(read, list) and len(given) == len(read)
                and all(_same(a, b) for a, b in zip(given, read, strict=True)))
    numbers = (int, float)
    if (isinstance(given, numbers) and isinstance(read, numbers)
            and not isinstance(given, bool) and not isinstance(read, bool)):
        return bool(decimal.Decimal(repr(given) if isinstance(given, float) else given)
                    == decimal.Decimal(repr(read) if isinstance(read, float) else read))
    return type(given) is type(read) and given == read


def _stored(w: World, **fields: Any) -> Any:
    """Append with ``fields``; each field read back: (its repr, whether it round-trips)."""
    values = {"role": "assistant", "content": "ok", **fields}
    node = w.store.append(w.conv, parent=w.ask, **values)
    again = w.store.node(w.conv, node.id)
    return {name: (repr(getattr(again, name)), _same(value, getattr(again, name)))
            for name, value in fields.items() if name not in ("role", "content")
            or (name == "content" and isinstance(value, str))}


def _conv_stored(w: World, **fields: Any) -> Any:
    conv = w.store.create_conversation(**fields)
    again = w.store.get_conversation(conv.id)
    return {name: (repr(getattr(again, name)), _same(value, getattr(again, name)))
            for name, value in fields.items()}


def _big_tenant(w: World, size: int) -> Any:
    """A conversation of a tenant whose name is ``size`` characters (sync store)."""
    with convotree.Store(w.url, tenant="t" * size) as store:
        conv = store.create_conversation(title="big tenant")
        found = store.get_conversation(conv.id).tenant_id == "t" * size
        store.delete_conversation(conv)
        return found


BOTH_WAYS = [
    *[Twin(f"{column} {label}", lambda w, column=column, value=value: _stored(
        w, **{column: value}))
      for column in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
                     "counted_input_tokens")
      for label, value in (("2**31 - 1", 2**31 - 1), ("2**31", 2**31), ("2**63 - 1", 2**63 - 1),
                           ("2**63", 2**63))],
    Twin("metadata 1e308", lambda w: _stored(w, metadata={"x": 1e308})),
    Twin("metadata 5e-324", lambda w: _stored(w, metadata={"x": 5e-324})),
    Twin("metadata 2**64", lambda w: _stored(w, metadata={"x": 2**64})),
    Twin("metadata 10**400", lambda w: _stored(w, metadata={"x": 10**400})),
    Twin("metadata -0.0", lambda w: _stored(w, metadata={"x": -0.0})),
    Twin("metadata 0.1 and 1.0", lambda w: _stored(w, metadata={"x": 0.1, "y": 1.0})),
    Twin("metadata key order", lambda w: _stored(w, metadata={"b": 1, "a": 2, "": 3})),
    Twin("metadata U+2028 and emoji", lambda w: _stored(w, metadata={"\u2028": "\U0001f600"})),
    Twin("metadata empty", lambda w: _stored(w, metadata={})),
    Twin("conversation metadata 1e308", lambda w: _conv_stored(w, metadata={"x": 1e308})),
    Twin("conversation metadata 2**64", lambda w: _conv_stored(w, metadata={"x": 2**64})),
    Twin("tenant of 4 KB", lambda w: _big_tenant(w, 4096)),
    Twin("tenant of 100 KB", lambda w: _big_tenant(w, 100_000)),
    Twin("content CRLF and trailing spaces", lambda w: _stored(w, content="a\r\nb  \r")),
    Twin("content empty", lambda w: _stored(w, content="")),
    Twin("content parts empty list", lambda w: _stored(w, role="user", content=[])),
    Twin("title empty", lambda w: _conv_stored(w, title="")),
    Twin("created_at year 1", lambda w: _stored(w, created_at=datetime(1, 1, 1, tzinfo=UTC))),
    Twin("created_at year 9999",
         lambda w: _stored(w, created_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))),
    Twin("created_at +14:00 offset", lambda w: _stored(w, created_at=datetime(
        2024, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=14))))),
    Twin("created_at microseconds",
         lambda w: _stored(w, created_at=datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC))),
    Twin("conversation created_at year 1",
         lambda w: _conv_stored(w, created_at=datetime(1, 1, 1, tzinfo=UTC))),
    Twin("list limit 2**63", lambda w: len(w.store.list_conversations(limit=2**63)) > 0),
    Twin("list limit 2**63 - 1", lambda w: len(w.store.list_conversations(limit=2**63 - 1)) > 0),
    Twin("context budget 2**63",
         lambda w: w.store.context(w.answer, model="gpt-4o-mini", budget=2**63).tokens),
    Twin("context budget 2**31",
         lambda w: w.store.context(w.answer, model="gpt-4o-mini", budget=2**31).tokens),
    Twin("model unknown name", lambda w: _stored(w, model="no-such-model-xyz")),
    Twin("tool call id 10 KB under the limit", lambda w: _stored(
        w, content=None, tool_calls=[{"id": "i" * 1000, "type": "function",
                                      "function": {"name": "f", "arguments": "{}"}}])),
]


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    ok, value = bounded(call)
    if ok:
        return "ok", value
    return "error", f"{type(value).__module__}.{type(value).__name__}"


@pytest.mark.parametrize("case", BOTH_WAYS, ids=[case.id for case in BOTH_WAYS])
def test_same_outcome_on_both_backends(postgres: PostgresServer, shell: str, worlds: Worlds,
                                       case: Twin) -> None:
    """The same call on SQLite and PostgreSQL: both accept and read back the same value
    (the value given), or both refuse with the same ConvotreeError type; and a refusal
    writes nothing."""
    _require(postgres)
    outcomes: dict[str, tuple[str, Any]] = {}
    try:
        for backend in ("sqlite", "postgresql"):
            w = worlds.get(backend, shell)
            before = snapshot(w.engine)
            outcomes[backend] = _outcome(lambda w=w: case.call(w))
            if outcomes[backend][0] == "error":
                assert snapshot(w.engine) == before, f"{backend}: WROTE despite the error"
            check_invariants(w.engine)
    finally:
        worlds.settle()
    sqlite, postgresql = outcomes["sqlite"], outcomes["postgresql"]
    assert sqlite == postgresql, (
        f"DIFFERENT: sqlite {sqlite!r:.300} / postgresql {postgresql!r:.300}")
    kind, value = sqlite
    if kind == "error":
        assert value.startswith("convotree.errors."), f"ESCAPE on both backends: {value}"
    elif isinstance(value, dict):
        lost = {name: shown for name, (shown, same) in value.items() if not same}
        assert not lost, f"NOT ROUND-TRIPPED on both backends: {lost}"
