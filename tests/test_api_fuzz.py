"""Random calls of the whole public API, hostile values mixed with valid ones, on SQLite
and PostgreSQL in lock step.

Each example is a list of operations (append, edit, set_current, delete_subtree, redact,
add_summary, context, the readers, the conversation calls, append_chain, reporting)
whose arguments are drawn from valid values, stale or foreign references (deleted
nodes, another tenant's nodes, random UUIDs, strings, ints, None) and hostile values
(NUL, lone surrogates, text just over ``max_message_bytes``, cycles, deep nesting,
huge integers, naive datetimes, wrong types, Nodes whose fields lie about their row).
Every operation runs on both backends, through ``Store`` or (the ``async`` twin)
``AsyncStore``, and the judge asks:

* only a ``ConvotreeError`` escapes, within a hard per-call timeout;
* when one was raised, every row of every ``convotree_*`` table is as it was;
* the tree invariants hold after every step (``check_invariants``);
* both backends had the same outcome: the same error type, or an equivalent result.

Bounded: ``examples(100)`` examples of 4 to 14 operations per shell, so the test takes
well under a minute per backend (``CONVOTREE_THOROUGH=1`` runs ten times as many).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import convotree
from convotree import errors, reporting
from tests import twins
from tests.conftest import PostgresServer, _require, examples
from tests.test_cli_support import exempt_reporting
from tests.test_hostile_input import (
    LIMIT,
    bounded,
    check_invariants,
    cycle,
    deep,
    snapshot,
    wipe,
)

#: Both shells: Store and AsyncStore (tests/twins.py).
TWINS = True

BACKENDS = ("sqlite", "postgresql")


# --- values -------------------------------------------------------------------------------

GOOD_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",),
                                           exclude_characters="\x00"), max_size=24)
BAD_TEXT = st.one_of(
    GOOD_TEXT.map(lambda t: t + "\x00"),
    GOOD_TEXT.map(lambda t: t + "\ud800"),
    st.just("\udfff"),
    st.just("x" * (LIMIT + 1)),
    st.just("é" * (LIMIT // 2 + 1)),            # over the limit in UTF-8 bytes only
)


def mostly(valid: st.SearchStrategy[Any], *hostile: st.SearchStrategy[Any]
           ) -> st.SearchStrategy[Any]:
    """``valid`` four times in five, else one of ``hostile``: enough valid calls to grow
    trees for the hostile ones to hit."""
    return st.one_of(valid, valid, valid, valid, st.one_of(*hostile))


TEXT = mostly(GOOD_TEXT, BAD_TEXT)
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.just(b"bytes"), st.just(object()),
    st.just([1, "a"]), st.just({"k": "v"}), st.just({1, 2}), st.just(uuid.UUID(int=7)),
    st.just(datetime(2024, 1, 1)),
)
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64),
                      st.floats(allow_nan=False, allow_infinity=False), GOOD_TEXT)
GOOD_META = st.dictionaries(GOOD_TEXT, st.recursive(
    JSON_LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        GOOD_TEXT, inner, max_size=3), max_leaves=6), max_size=3)
BAD_META = st.one_of(
    st.builds(cycle), st.builds(lambda: deep(5000)),
    st.just({"k\x00": 1}), st.just({"\ud800": "v"}), st.just({"k": "\x00"}),
    st.just({1: "int key"}), st.just({"nan": float("nan")}), st.just({"x": "y" * (LIMIT + 1)}),
    st.just({"when": datetime.now(UTC)}), st.just([1, 2]), st.just("{}"),
)
META = mostly(st.one_of(st.none(), GOOD_META), BAD_META)
COUNT = mostly(st.one_of(st.none(), st.integers(0, 10_000), st.just(2**31 - 1)),
               st.sampled_from([-1, 2**31, 2**63, True, 1.5, "5"]))
WHEN = mostly(
    st.one_of(st.none(), st.datetimes(min_value=datetime(1, 1, 2),
                                      max_value=datetime(9999, 12, 30),
                                      timezones=st.just(UTC))),
    st.sampled_from([datetime(2024, 1, 1), "2024-01-01", 0]),
)
ROLE = mostly(st.sampled_from(["system", "developer", "user", "assistant", "user",
                               "assistant", "user", "assistant", "tool"]),
              st.sampled_from(["robot", "USER", "", None, 5]))
KIND = mostly(st.just("message"), st.sampled_from(["summary", "note", None]))


@st.composite
def tool_calls(draw: st.DrawFn) -> Any:
    """Valid lists of calls (ids c0..c2), and broken ones."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.one_of(st.just("lookup"), st.just([]), st.just([1]), st.just([{}]),
                              st.just([{"id": "c0", "type": "function",
                                        "function": {"name": "f", "arguments": "\x00"}}])))
    count = draw(st.integers(1, 3))
    return [{"id": f"c{i}", "type": "function",
             "function": {"name": "lookup", "arguments": draw(st.sampled_from(
                 ['{}', '{"q": 1}', "not json", "x" * (LIMIT + 1)]))}}
            for i in range(count)]


@st.composite
def content(draw: st.DrawFn) -> Any:
    pick = draw(st.integers(0, 14))
    if pick <= 10:
        return draw(TEXT)
    if pick == 6:
        return None
    if pick == 7:
        return [{"type": "text", "text": draw(TEXT)}]
    if pick <= 12:
        return draw(st.sampled_from([
            [{"type": "image_url", "image_url": "zz"}],
            [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
            [{"type": "input_audio", "input_audio": 5}],
            [{"text": "no type"}],
            ["plain string"],
        ]))
    return draw(JUNK)


#: A reference resolved per backend when the operation runs: a pool index, or a value.
#: A Node whose fields lie about its row (``dataclasses.replace``); ``kind`` lies are
#: told about summaries.
DISGUISED = st.tuples(st.just("disguised"), st.integers(0, 1000), st.sampled_from([
    {"kind": "message"}, {"kind": "message", "role": "user"}, {"role": "user"},
    {"name": "n" * 50}, {"encoding": "cl100k_base"}, {"conversation_id": uuid.UUID(int=1)}]))

NODE_REF = mostly(
    st.tuples(st.just("node"), st.integers(0, 1000)),
    st.tuples(st.just("summary"), st.integers(0, 1000)),
    st.tuples(st.just("node_id"), st.integers(0, 1000)),
    st.just(("foreign_node",)),
    st.just(("gone",)),
    DISGUISED, DISGUISED, DISGUISED,
    st.tuples(st.just("value"), st.one_of(st.uuids(), st.just("zz"), st.just(5),
                                          st.none())),
)
CONV_REF = mostly(
    st.tuples(st.just("conv"), st.integers(0, 1000)),
    st.tuples(st.just("conv_id"), st.integers(0, 1000)),
    st.just(("foreign_conv",)),
    st.tuples(st.just("value"), st.one_of(st.uuids(), st.just("zz"), st.just(5),
                                          st.none())),
)
PARENT_REF = mostly(st.none(), NODE_REF)


@st.composite
def append_extras(draw: st.DrawFn) -> dict[str, Any]:
    """Some of append's optional keywords, each valid or hostile."""
    options: dict[str, Any] = {}
    if draw(st.booleans()):
        return options
    fields = draw(st.sets(st.sampled_from([
        "name", "model", "metadata", "input_tokens", "output_tokens", "pinned", "tool_calls",
        "tool_call_id", "created_at", "set_current", "kind", "cached_tokens", "response_id",
        "finish_reason", "api_items"]), max_size=3))
    for name in sorted(fields):
        options[name] = draw({
            "name": TEXT, "model": st.one_of(st.sampled_from(["gpt-4o", "gpt-4o-mini"]), TEXT),
            "metadata": META, "input_tokens": COUNT, "output_tokens": COUNT,
            "cached_tokens": COUNT, "pinned": mostly(st.booleans(), JUNK),
            "tool_calls": tool_calls(), "tool_call_id": st.one_of(
                st.sampled_from(["c0", "c1", "c2", "zz"]), TEXT),
            "created_at": WHEN, "set_current": mostly(st.booleans(), st.just("no")),
            "kind": KIND, "response_id": TEXT, "finish_reason": TEXT,
            "api_items": st.one_of(st.just([{"type": "reasoning", "summary": []}]),
                                   st.just("x"), st.just([cycle()])),
        }[name])
    return options


#: Valid growth (a plain message under a pool node): the trees the hostile calls hit.
GROW = st.tuples(st.just("append_under"), st.tuples(st.just("node"), st.integers(0, 1000)),
                 st.sampled_from(["user", "assistant"]), GOOD_TEXT, st.just({}))
TOOL_TURN = st.tuples(st.just("append_under"), st.tuples(st.just("node"), st.integers(0, 1000)),
                      st.just("assistant"), st.none(), st.fixed_dictionaries(
                          {"tool_calls": tool_calls()}))
TOOL_RESULT = st.tuples(st.just("append_under"), st.tuples(st.just("node"),
                                                           st.integers(0, 1000)),
                        st.just("tool"), GOOD_TEXT, st.fixed_dictionaries(
                            {"tool_call_id": st.sampled_from(["c0", "c1", "c2"])}))

OPERATION = st.one_of(
    GROW, GROW, GROW, GROW, TOOL_TURN, TOOL_RESULT, TOOL_RESULT,
    # The writes that take a Node, given one whose fields lie about its row.
    st.tuples(st.just("redact"), DISGUISED, GOOD_TEXT),
    st.tuples(st.just("edit"), DISGUISED, GOOD_TEXT, st.just({})),
    st.tuples(st.just("add_summary"), DISGUISED, GOOD_TEXT, st.none()),
    st.tuples(st.just("append"), CONV_REF, PARENT_REF, ROLE, content(), append_extras()),
    st.tuples(st.just("append_under"), NODE_REF, ROLE, content(), append_extras()),
    st.tuples(st.just("append_under"), NODE_REF, ROLE, content(), append_extras()),
    st.tuples(st.just("append_under"), NODE_REF, ROLE, content(), append_extras()),
    st.tuples(st.just("append_under"), NODE_REF, ROLE, content(), append_extras()),
    st.tuples(st.just("edit"), NODE_REF, content(), append_extras()),
    st.tuples(st.just("set_current"), CONV_REF, st.one_of(st.none(), NODE_REF)),
    st.tuples(st.just("delete_subtree"), NODE_REF),
    st.tuples(st.just("redact"), NODE_REF, st.one_of(TEXT, JUNK)),
    st.tuples(st.just("add_summary"), NODE_REF, TEXT, st.one_of(st.none(), NODE_REF)),
    st.tuples(st.just("context"), NODE_REF,
              mostly(st.sampled_from(["gpt-4o-mini", "gpt-4o"]),
                     st.sampled_from(["no-such-model", None, 5])),
              mostly(st.one_of(st.none(), st.integers(1, 5000)),
                     st.sampled_from([0, -5, True, "100", 2**63])),
              mostly(st.integers(0, 1000), st.sampled_from([-1, "100", None, 10**9])),
              mostly(st.one_of(st.none(), st.just([{"type": "function", "function": {
                  "name": "f", "parameters": {}}}])),
                     st.sampled_from(["weather", [5], [{"type": "function"}]])),
              mostly(st.sampled_from(["chat", "responses"]), st.sampled_from(["xml", None]))),
    st.tuples(st.just("read"), st.sampled_from(["path", "children"]), NODE_REF),
    st.tuples(st.just("read_conv"), st.sampled_from(
        ["tree", "roots", "leaves", "current", "get_conversation"]), CONV_REF),
    st.tuples(st.just("node"), CONV_REF, NODE_REF),
    st.tuples(st.just("create_conversation"), st.one_of(st.none(), CONV_REF), st.one_of(
        st.none(), TEXT, JUNK), META, WHEN),
    st.tuples(st.just("update_conversation"), CONV_REF, st.one_of(st.none(), TEXT, JUNK),
              META),
    st.tuples(st.just("list_conversations"), st.one_of(
        st.integers(-2, 60), st.just("10"), st.just(True), st.just(2**64))),
    st.tuples(st.just("delete_conversation"), CONV_REF),
    st.tuples(st.just("append_chain"), NODE_REF, st.lists(st.fixed_dictionaries(
        {"role": ROLE, "content": content()}, optional={"tool_call_id": st.sampled_from(
            ["c0", "c1", "zz"]), "parent": st.none()}), max_size=3)),
    st.tuples(st.just("export"), CONV_REF, mostly(st.sampled_from(
        ["native", "openai", "chatgpt", "oasst", "librechat", "openwebui"]),
        st.sampled_from(["nope", None, 5]))),
    st.tuples(st.just("report"), st.sampled_from(["totals", "by_model", "by_day",
                                                  "conversation_stats"]),
              st.one_of(st.integers(-2, 400), st.just("7"), st.just(True), st.just(10**7))),
)


# --- one backend's side of the lock step --------------------------------------------------


@dataclass
class Side:
    """One backend: the store under test, a sync store for the reports, the pools."""

    backend: str
    store: Any
    reports: convotree.Store
    engine: sa.Engine
    convs: list[convotree.Conversation] = field(default_factory=list)
    nodes: list[convotree.Node] = field(default_factory=list)
    summaries: list[convotree.Node] = field(default_factory=list)
    foreign_conv: Any = None
    foreign_node: Any = None
    gone: Any = None

    def node(self, ref: tuple[Any, ...]) -> Any:
        kind = ref[0]
        if kind == "node":
            return self.nodes[ref[1] % len(self.nodes)]
        if kind == "summary":
            pool = self.summaries or self.nodes
            return pool[ref[1] % len(pool)]
        if kind == "node_id":
            return self.nodes[ref[1] % len(self.nodes)].id
        if kind == "foreign_node":
            return self.foreign_node
        if kind == "gone":
            return self.gone
        if kind == "disguised":       # a Node whose fields lie about its row
            pool = (self.summaries or self.nodes) if "kind" in ref[2] else self.nodes
            return dataclasses.replace(pool[ref[1] % len(pool)], **ref[2])
        return ref[1]

    def conv(self, ref: tuple[Any, ...]) -> Any:
        kind = ref[0]
        if kind == "conv":
            return self.convs[ref[1] % len(self.convs)]
        if kind == "conv_id":
            return self.convs[ref[1] % len(self.convs)].id
        if kind == "foreign_conv":
            return self.foreign_conv
        return ref[1]

    def keep(self, value: Any) -> None:
        """Add what a call returned to the pools (stale entries stay: good input)."""
        if isinstance(value, convotree.Node):
            (self.summaries if value.kind == "summary" else self.nodes).append(value)
        elif isinstance(value, convotree.Conversation):
            self.convs.append(value)
        elif isinstance(value, list):
            for item in value:
                self.keep(item)


def perform(side: Side, op: tuple[Any, ...]) -> Any:
    """Run one drawn operation against one backend."""
    s, name = side.store, op[0]
    if name == "append":
        _, conv, parent, role, body, extras = op
        return s.append(side.conv(conv), parent=None if parent is None else side.node(parent),
                        role=role, content=body, **extras)
    if name == "append_under":
        _, parent, role, body, extras = op
        under = side.node(parent)
        conversation = getattr(under, "conversation_id", side.convs[0].id)
        return s.append(conversation, parent=under, role=role, content=body, **extras)
    if name == "edit":
        _, node, body, extras = op
        extras = {k: v for k, v in extras.items() if k != "set_current"}
        if extras.get("kind") == "note":     # and a keyword append does not have
            extras["colour"] = extras.pop("kind")
        return s.edit(side.node(node), body, **extras)
    if name == "set_current":
        _, conv, node = op
        return s.set_current(side.conv(conv), None if node is None else side.node(node))
    if name == "delete_subtree":
        return s.delete_subtree(side.node(op[1]))
    if name == "redact":
        return s.redact(side.node(op[1]), op[2])
    if name == "add_summary":
        _, node, text, base = op
        return s.add_summary(side.node(node), text,
                             base=None if base is None else side.node(base))
    if name == "context":
        _, node, model, budget, reserve, tools, fmt = op
        return s.context(side.node(node), model=model, budget=budget, reserve_output=reserve,
                         tools=tools, format=fmt)
    if name == "read":
        return getattr(s, op[1])(side.node(op[2]))
    if name == "read_conv":
        return getattr(s, op[1])(side.conv(op[2]))
    if name == "node":
        return s.node(side.conv(op[1]), side.node(op[2]))
    if name == "create_conversation":
        _, ident, title, metadata, when = op
        ident = None if ident is None else side.conv(ident)
        ident = ident.id if isinstance(ident, convotree.Conversation) else ident
        return s.create_conversation(id=ident, title=title, metadata=metadata,
                                     created_at=when)
    if name == "update_conversation":
        _, conv, title, metadata = op
        return s.update_conversation(side.conv(conv), title=title, metadata=metadata)
    if name == "list_conversations":
        return s.list_conversations(limit=op[1])
    if name == "delete_conversation":
        return s.delete_conversation(side.conv(op[1]))
    if name == "append_chain":
        return s.append_chain(side.node(op[1]), op[2])
    if name == "export":
        from convotree.interchange import export_conversation

        return export_conversation(side.reports, side.conv(op[1]), op[2])
    if name == "report":
        _, report, number = op
        if report == "by_day":
            return reporting.by_day(side.reports, days=number)
        if report == "conversation_stats":
            return reporting.conversation_stats(side.reports, limit=number)
        return getattr(reporting, report)(side.reports)
    raise AssertionError(f"unknown operation {name}")


def shape(value: Any) -> Any:
    """What two backends must agree on in a result (no ids, no clocks)."""
    if isinstance(value, convotree.Node):
        return ("node", value.kind, value.role, value.depth, value.content, value.token_count,
                value.overhead_tokens, value.metadata, value.tool_calls)
    if isinstance(value, convotree.Conversation):
        return ("conversation", value.title, value.metadata)
    if isinstance(value, convotree.Context):
        return ("context", value.tokens, value.budget, len(value.messages))
    if isinstance(value, list):
        if value and isinstance(value[0], convotree.Conversation):
            return ("conversations", sorted(repr(shape(v)) for v in value))
        return [shape(v) for v in value]
    if isinstance(value, int | str | None):
        return value
    if isinstance(value, dict):                  # an export: its keys, not its ids
        return ("document", sorted(value))
    if hasattr(value, "__dataclass_fields__"):   # reporting rows: counts, no ids or days
        return (type(value).__name__, tuple(
            getattr(value, name) for name in value.__dataclass_fields__
            if isinstance(getattr(value, name), int) and name not in ("id",)))
    return type(value).__name__


def step(side: Side, op: tuple[Any, ...]) -> tuple[str, Any]:
    """One operation on one backend, judged: only ConvotreeError, nothing written when
    it was raised, invariants after. Returns the outcome to compare across backends."""
    before = snapshot(side.engine)
    ok, value = bounded(lambda: perform(side, op))
    if not ok:
        assert isinstance(value, errors.ConvotreeError), (
            f"ESCAPE on {side.backend}: {type(value).__module__}.{type(value).__name__}: "
            f"{str(value)[:300]}\n  operation: {op!r:.400}")
        after = snapshot(side.engine)
        assert after == before, (
            f"WROTE on {side.backend} despite {type(value).__name__}: {value}\n"
            f"  operation: {op!r:.400}")
        outcome: tuple[str, Any] = ("error", type(value).__name__)
    else:
        side.keep(value)
        outcome = ("ok", shape(value))
    try:
        check_invariants(side.engine)
    except AssertionError as exc:
        raise AssertionError(f"INVARIANT broken on {side.backend} after {op!r:.400}: "
                             f"{exc}") from None
    return outcome


def seed(side: Side, tenant: str, url: str) -> None:
    """A small starting tree, a deleted node and another tenant's conversation."""
    s = side.store
    conv = s.create_conversation(title="fuzz")
    root = s.append(conv, role="system", content="Be brief.")
    ask = s.append(conv, parent=root, role="user", content="Plan a trip")
    answer = s.append(conv, parent=ask, role="assistant", content="Lisbon.")
    calls = s.append(conv, parent=answer, role="user", content="Weather?")
    call = s.append(conv, parent=calls, role="assistant", tool_calls=[
        {"id": "c0", "type": "function", "function": {"name": "lookup", "arguments": "{}"}},
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}])
    result = s.append(conv, parent=call, role="tool", tool_call_id="c0", content="sun")
    summary = s.add_summary(answer, "Summary of the earlier conversation: a trip.")
    gone = s.append(conv, parent=answer, role="user", content="soon gone", set_current=False)
    s.delete_subtree(gone)
    side.convs = [conv, s.create_conversation(title="empty")]
    side.nodes = [root, ask, answer, calls, call, result]
    side.summaries = [summary]
    side.gone = gone
    with convotree.Store(url, tenant=tenant + "-intruder") as intruder:
        side.foreign_conv = intruder.create_conversation(title="not yours")
        side.foreign_node = intruder.append(side.foreign_conv, role="user", content="secret")


# --- the test -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_urls(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, str]:
    """A migrated database per backend for this module alone (wiped after each example)."""
    _require(postgres)
    urls = {"sqlite": f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}",
            "postgresql": postgres.create_database()}
    for url in urls.values():
        convotree.migrate(url)
    return urls


@pytest.fixture
def sides(fuzz_urls: dict[str, str], shell: str, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[list[Side]]:
    """Both backends' stores of the test's shell (the async one on its own loop)."""
    exempt_reporting(monkeypatch)
    loop = twins.EventLoopThread()
    made: list[Side] = []
    try:
        for backend in BACKENDS:
            url = fuzz_urls[backend]
            engine = convotree.create_engine(url)
            tenant = f"fuzz-{uuid.uuid4().hex[:8]}"
            if shell == "sync":
                store: Any = convotree.Store(url, tenant=tenant, max_message_bytes=LIMIT)
            else:
                store = twins.Blocking(loop.run(convotree.AsyncStore.open(
                    url, tenant=tenant, max_message_bytes=LIMIT)), loop, engine=engine)
            reports = convotree.Store(url, tenant=tenant)
            made.append(Side(backend, store, reports, engine))
        yield made
    finally:
        for side in made:
            bounded(side.store.close, timeout=10)
            side.reports.close()
            wipe(side.engine)
            side.engine.dispose()
        loop.close()


# No shrinking phase: the assertion names the failing operation and its outcome on each
# backend, and shrinking a 14-step sequence over two databases takes minutes.
@settings(max_examples=examples(100), deadline=timedelta(seconds=60),
          report_multiple_bugs=False,
          phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(operations=st.lists(OPERATION, min_size=4, max_size=14))
def test_random_hostile_calls(sides: list[Side], fuzz_urls: dict[str, str],
                              operations: list[tuple[Any, ...]]) -> None:
    """Only typed errors, no write on error, invariants always, same outcome on both."""
    for side in sides:
        wipe(side.engine)
        seed(side, side.store.tenant if hasattr(side.store, "tenant") else "fuzz",
             fuzz_urls[side.backend])
    for op in operations:
        outcomes = [step(side, op) for side in sides]
        sqlite, postgresql = outcomes
        assert sqlite == postgresql, (
            f"DIFFERENT outcome for {op!r:.400}: sqlite {sqlite!r:.300} / "
            f"postgresql {postgresql!r:.300}")
