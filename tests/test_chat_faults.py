"""OpenAI-side faults: what ``Chat`` and ``AsyncChat`` guarantee when the API misbehaves.

Every case drives the real ``openai`` client (sync or async) over HTTP to
``convotree.testing.FakeOpenAI`` on 127.0.0.1, which injects the fault on the wire: an
HTTP 429 with ``retry-after``, a 500, a request that outlasts the client's timeout, a
200 whose JSON is broken or that is a proxy's HTML page, a body cut or left hanging
half-way, and streams that are cut, go silent, carry a broken event, end early or
report an in-stream failure. For each, on both shells, both backends and both APIs:

- the caller gets a typed error: the ``openai`` client's own exception (unwrapped, as
  ``convotree.errors`` documents) or a ``ChatError`` where convotree itself finds the
  answer unreadable or incomplete;
- the user's message is stored once and is still there;
- no half answer is stored unmarked: either nothing of the answer is stored, or (a
  stream that broke after some text) exactly what arrived, marked
  ``metadata.incomplete`` with no finish reason;
- the conversation's current node and the tree are consistent, and the next call
  (the retry) works;
- the client's own retries (``max_retries``, ``retry-after``) are honoured: convotree
  neither adds requests nor cuts them short.

Summaries fall back to pruning when the summarizer's API call fails, and nothing logged
at INFO or above holds content, metadata values or the API key (the key appears in no
record at all).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

import convotree
from convotree.errors import ChatError, ConvotreeError
from convotree.testing import FakeOpenAI, Reply
from convotree.tokens import count_messages

from .conftest import table_counts
from .twins import make_chat, openai_summarizer

#: Every test below on Chat + Store and on AsyncChat + AsyncStore (tests/twins.py).
TWINS = True

#: The client's timeout: every silent server is given up on after this many seconds.
#: Small, so the test is quick, but not so small that a loaded machine (two CPUs shared
#: with other test runs) makes a healthy answer miss it.
TIMEOUT = 1.0
QUESTION = "Which day should we keep for Sintra?"
ANSWER_TEXT = "alpha beta gamma delta epsilon"


@dataclass(frozen=True)
class Fault:
    """One way the API fails, how to provoke it, and what the caller must see."""

    name: str
    streamed: bool
    error: type[BaseException]
    #: fail_next modes, or a scripted reply.
    modes: tuple[str, ...] = ()
    reply: Reply | None = None
    #: Whether some text arrives before the failure (then it is stored, marked).
    partial: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def inject(self, server: FakeOpenAI) -> None:
        if self.modes:
            server.fail_next(*self.modes)
        if self.reply is not None:
            server.script(self.reply)

    def __str__(self) -> str:
        return self.name


#: The failures of the request itself, before any text: raised by the call, or by the
#: stream before its first delta.
REQUEST_FAULTS = [
    ("400", openai.BadRequestError),
    ("429", openai.RateLimitError),
    ("500", openai.InternalServerError),
    ("timeout", openai.APITimeoutError),
    ("malformed", ChatError),
    ("html", ChatError),
    ("cut", openai.APIConnectionError),
    ("hang", openai.APITimeoutError),
]

#: Streams that break after two deltas.
STREAM_FAULTS = [
    Fault("stream-cut-midway", True, openai.APIConnectionError,
          reply=Reply(text=ANSWER_TEXT, cut_after=2), partial=True),
    Fault("stream-never-ends", True, openai.APITimeoutError,
          reply=Reply(text=ANSWER_TEXT, hang_after=2), partial=True),
    Fault("stream-malformed-event", True, ChatError,
          reply=Reply(text=ANSWER_TEXT, malformed_after=2), partial=True),
    Fault("stream-ends-early", True, ChatError,
          reply=Reply(text=ANSWER_TEXT, end_after=2), partial=True),
    Fault("stream-api-failure", True, openai.APIError,
          reply=Reply(text=ANSWER_TEXT, fail_after=2), partial=True),
]

FAULTS = [
    *(Fault(f"send-{mode}", False, error, modes=(mode,)) for mode, error in REQUEST_FAULTS),
    *(Fault(f"stream-{mode}", True, error, modes=(mode,)) for mode, error in REQUEST_FAULTS),
    *STREAM_FAULTS,
]


@pytest.fixture(params=["chat", "responses"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    # A stalled answer waits at most this long (and ends at once when the server stops):
    # far beyond the client's timeout, so the client always gives up first.
    with FakeOpenAI(timeout_sleep=10.0) as fake:
        fake.retry_after_ms = None
        fake.retry_after = 0.05
        yield fake


def chat_of(store: Any, server: FakeOpenAI, max_retries: int = 0, api_key: str = "sk-test",
            **options: Any) -> Any:
    """The chat of the test's shell with a real client of ``server`` (small timeout)."""
    def client(asynchronous: bool) -> Any:
        if asynchronous:
            return openai.AsyncOpenAI(base_url=server.base_url, api_key=api_key,
                                      max_retries=max_retries, timeout=TIMEOUT)
        return openai.OpenAI(base_url=server.base_url, api_key=api_key,
                             max_retries=max_retries, timeout=TIMEOUT)

    return make_chat(store, client, **options)


def start(store: Any, chat: Any, *, content: str = "You plan trips.", metadata: Any = None
          ) -> tuple[Any, convotree.Node]:
    """A conversation with a system message and one complete turn: the fault is not on
    an empty tree."""
    conv = store.create_conversation(title="trip", metadata=metadata)
    store.append(conv, role="system", content=content, metadata=metadata)
    first = chat.send(conv, f"Plan three days in Lisbon. {content}")
    assert first.metadata is not None and set(first.metadata) == {"api"}
    return conv, first


def provoke(chat: Any, conv: Any, fault: Fault, question: str = QUESTION
            ) -> tuple[BaseException, list[str], Any]:
    """Ask ``question`` while ``fault`` is armed; return the error, the deltas that
    arrived and the stream (None for a plain send)."""
    received: list[str] = []
    stream = None
    try:
        if fault.streamed:
            stream = chat.stream(conv, question)
            for delta in stream:
                received.append(delta)
        else:
            chat.send(conv, question)
    except Exception as exc:
        return exc, received, stream
    raise AssertionError(f"{fault}: no error reached the caller")


def check_after_fault(store: Any, chat: Any, server: FakeOpenAI, conv: Any, fault: Fault,
                      error: BaseException, received: list[str], question: str = QUESTION
                      ) -> convotree.Node:
    """The invariants every fault must leave; returns the stored user message."""
    # A typed, documented error: the client's own, or convotree's.
    assert isinstance(error, fault.error), f"{fault}: {type(error).__name__}: {error}"
    assert isinstance(error, openai.APIError | ConvotreeError)
    tree = store.tree(conv)
    by_id = {node.id: node for node in tree}
    # The user's message: stored once, intact.
    asked = [node for node in tree if node.role == "user" and node.content == question]
    assert len(asked) == 1, f"{fault}: the user's message was lost or duplicated"
    user: convotree.Node = asked[0]
    # No half answer unmarked: under the question, nothing, or what arrived, marked.
    answers = [node for node in tree if node.parent_id == user.id]
    if fault.partial:
        assert received, f"{fault}: the fault was meant to come after some text"
        assert len(answers) == 1
        partial = answers[0]
        assert partial.role == "assistant" and partial.content == "".join(received)
        assert partial.metadata is not None and partial.metadata["incomplete"] is True
        assert partial.metadata["error"]
        assert partial.finish_reason is None and partial.tool_calls is None
        expected_current = partial.id
    else:
        assert received == [] and answers == [], f"{fault}: something was stored"
        expected_current = user.id
    # Every complete answer in the tree is one the API finished.
    for node in tree:
        if node.role == "assistant" and not (node.metadata or {}).get("incomplete"):
            assert node.finish_reason in ("stop", "completed"), node
    # Consistent: one root, every parent in the tree, current node where it belongs.
    assert sum(node.parent_id is None for node in tree) == 1
    assert all(node.parent_id is None or node.parent_id in by_id for node in tree)
    assert store.get_conversation(conv).current_node_id == expected_current
    # The failure is recorded on the turn.
    last = chat.last
    assert last is not None and last.error
    assert (last.node.id if last.node is not None else None) == (
        expected_current if fault.partial else None)
    # convotree added no request of its own (max_retries=0: one request per turn).
    assert [call["failure"] for call in server.calls[1:]] == (
        [fault.modes[0]] if fault.modes else [None])
    return user


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_fault_keeps_the_message_and_the_tree_and_the_retry_works(
        store: Any, server: FakeOpenAI, api: str, fault: Fault) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api=api)
    conv, first = start(store, chat)
    fault.inject(server)
    error, received, stream = provoke(chat, conv, fault)
    user = check_after_fault(store, chat, server, conv, fault, error, received)
    if stream is not None and fault.partial:
        assert stream.node is not None and stream.turn is not None and stream.turn.incomplete
    # The retry: an answer to the stored message, no second copy of the message.
    retried = chat.reply(user)
    assert retried.parent_id == user.id and retried.metadata == {"api": api}
    assert retried.finish_reason in ("stop", "completed")
    assert store.get_conversation(conv).current_node_id == retried.id
    # And the conversation goes on from there: the request carries the branch
    # (question, retried answer), not the half answer.
    after = chat.send(conv, "And on the last day?")
    assert after.parent_id is not None
    assert store.node(conv, after.parent_id).parent_id == retried.id
    body = server.bodies[-1]
    sent = [str(item.get("content")) for item in body.get("messages") or body["input"]]
    assert QUESTION in sent and retried.content in sent and sent[-1] == "And on the last day?"
    if fault.partial:
        assert "".join(received) not in sent
    questions = [n for n in store.tree(conv) if n.role == "user" and n.content == QUESTION]
    assert len(questions) == 1 and first.id in {n.id for n in store.tree(conv)}


# --- the client's own retries --------------------------------------------------------------

#: Faults the ``openai`` client retries by itself (status, timeout, transport).
RETRIED = ["429", "500", "timeout", "cut", "hang"]


@pytest.mark.parametrize("streamed", [False, True], ids=["send", "stream"])
@pytest.mark.parametrize("mode", RETRIED)
def test_the_clients_retries_are_honoured(
        store: Any, server: FakeOpenAI, api: str, mode: str, streamed: bool) -> None:
    chat = chat_of(store, server, max_retries=1, model="gpt-4o-mini", api=api)
    conv, _ = start(store, chat)
    server.retry_after = 0.25
    server.fail_next(mode)
    if streamed and mode in ("cut", "hang"):
        # A streamed 200 that breaks after its headers is past the client's retry loop:
        # neither the client nor convotree sends it again (the caller decides).
        error, received, _ = provoke(chat, conv, Fault(mode, True, Exception, modes=(mode,)))
        assert isinstance(error, openai.APIConnectionError) and received == []
        assert [c["failure"] for c in server.calls[1:]] == [mode]
        return
    if streamed:
        stream = chat.stream(conv, QUESTION)
        text = "".join(stream)
        answer = stream.node
        assert answer is not None and answer.content == text
    else:
        answer = chat.send(conv, QUESTION)
    # One failed request, one retry by the client, nothing more: and one stored answer.
    assert [c["failure"] for c in server.calls[1:]] == [mode, None]
    assert answer.metadata == {"api": api} and answer.finish_reason in ("stop", "completed")
    user = store.node(conv, answer.parent_id)
    assert user.content == QUESTION and len(store.children(user)) == 1
    if mode == "429":
        # retry-after (seconds) was honoured: the retry came no sooner than asked.
        waited = server.calls[2]["at"] - server.calls[1]["at"]
        assert waited >= 0.25


def test_the_clients_retry_limit_is_kept(store: Any, server: FakeOpenAI, api: str) -> None:
    chat = chat_of(store, server, max_retries=2, model="gpt-4o-mini", api=api)
    conv, _ = start(store, chat)
    server.fail_next("500", "500", "500", "500")
    with pytest.raises(openai.InternalServerError):
        chat.send(conv, QUESTION)
    # max_retries=2: three requests, then the error (the fourth failure is never asked).
    assert [c["failure"] for c in server.calls[1:]] == ["500", "500", "500"]
    user = store.current(conv)
    assert user.content == QUESTION and store.children(user) == []
    # The fourth failure is still armed: the retry's first request meets it, the
    # client's own retry succeeds.
    answer = chat.reply(user)
    assert [c["failure"] for c in server.calls[4:]] == ["500", None]
    assert answer.parent_id == user.id


# --- summaries fall back to pruning -------------------------------------------------------

BUDGET = 600
SUMMARY_FAULTS = [
    ("429", "RateLimitError"),
    ("500", "InternalServerError"),
    ("timeout", "APITimeoutError"),
    ("malformed", "ChatError"),
    ("html", "ChatError"),
    ("cut", "APIConnectionError"),
    ("hang", "APITimeoutError"),
    ("empty", "ChatError"),   # a 200 completion with no text: no empty summary stored
]


def arm(server: FakeOpenAI, mode: str) -> None:
    """The next request meets ``mode``: a fault of ``fail_next``, or an empty answer."""
    if mode == "empty":
        server.script(Reply(text=""))
    else:
        server.fail_next(mode)


def long_branch(store: Any, conv: Any, turns: int = 60, content: str = "") -> convotree.Node:
    leaf: convotree.Node = store.append(conv, role="system", content="You are a trip planner.")
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        leaf = store.append(conv, parent=leaf, role=role,
                            content=f"t{i}: the plan has {i} steps and costs {i * 7} euros"
                                    f"{content}")
    return leaf


@pytest.mark.parametrize(("mode", "error"), SUMMARY_FAULTS)
def test_failing_summarizer_call_falls_back_to_pruning(
        store: Any, server: FakeOpenAI, mode: str, error: str) -> None:
    summarizer = openai_summarizer(store, server, {"timeout": TIMEOUT, "max_retries": 0},
                                   model="gpt-4o-mini")
    conv = store.create_conversation()
    leaf = long_branch(store, conv)
    before = table_counts(store)
    arm(server, mode)
    ctx = store.context(leaf, model="gpt-4o", budget=BUDGET, summarizer=summarizer)
    assert len(server.calls) == 1
    # The context is still there, pruned to the budget, ending at the leaf.
    assert ctx.messages and ctx.messages[-1]["content"] == leaf.content
    assert ctx.tokens == count_messages(ctx.messages, model="gpt-4o") <= BUDGET
    assert ctx.report.stopped == "budget" and ctx.report.gap_count > 0
    # The report says why; nothing was written.
    assert ctx.report.summary_error is not None
    assert ctx.report.summary_error.startswith(error), ctx.report.summary_error
    assert ctx.report.summary_id is None and not ctx.report.summary_created
    assert ctx.report.summarizer_calls == 1
    assert table_counts(store) == before
    # Once the API answers again, the summary is made.
    again = store.context(leaf, model="gpt-4o", budget=BUDGET, summarizer=summarizer)
    assert again.report.summary_created and again.report.summary_error is None


@pytest.mark.parametrize(("mode", "error"), SUMMARY_FAULTS)
def test_chat_answers_when_its_summarizer_fails(
        store: Any, server: FakeOpenAI, mode: str, error: str) -> None:
    summarizer = openai_summarizer(store, server, {"timeout": TIMEOUT, "max_retries": 0},
                                   model="gpt-4o-mini")
    chat = chat_of(store, server, model="gpt-4o", budget=BUDGET, summarizer=summarizer)
    conv = store.create_conversation()
    leaf = long_branch(store, conv)
    arm(server, mode)   # the first request of the turn is the summarizer's
    answer = chat.send(leaf, QUESTION)
    assert [c["failure"] for c in server.calls] == [
        None if mode == "empty" else mode, None]
    assert answer.metadata == {"api": "chat"} and answer.finish_reason == "stop"
    report = chat.last.context.report
    assert report.summary_error is not None and report.summary_error.startswith(error)
    assert not any(node.kind == "summary" for node in store.tree(conv))
    assert chat.last.context.tokens <= BUDGET


# --- logging: no content, metadata or key -------------------------------------------------

CANARY_CONTENT = "zq-fault-canary-content-41c9"
CANARY_METADATA = "zq-fault-canary-metadata-41c9"
CANARY_KEY = "sk-zq-fault-canary-key-41c9e2"
CANARIES = (CANARY_CONTENT, CANARY_METADATA, CANARY_KEY)


def texts_of(record: logging.LogRecord) -> str:
    """Everything of a record a handler might write."""
    parts = [record.getMessage(), repr(record.args)]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(logging.Formatter().formatException(record.exc_info))
    parts.append(repr({k: v for k, v in record.__dict__.items()
                       if k not in ("msg", "args", "exc_info")}))
    return "\n".join(parts)


def test_fault_logs_hold_no_content_metadata_or_key(
        store: Any, server: FakeOpenAI, api: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    chat = chat_of(store, server, api_key=CANARY_KEY, model="gpt-4o-mini", api=api)
    metadata = {"user": CANARY_METADATA}
    conv, _ = start(store, chat, content=CANARY_CONTENT, metadata=metadata)
    for index, fault in enumerate(FAULTS):
        question = f"{QUESTION} {CANARY_CONTENT} {index}"
        fault.inject(server)
        error, _, _ = provoke(chat, conv, fault, question)
        assert isinstance(error, fault.error)
        user = next(n for n in store.tree(conv) if n.content == question)
        chat.reply(user)
    # Summaries made and failed, over content that holds the canary.
    summarizer = openai_summarizer(store, server, {"timeout": TIMEOUT, "max_retries": 0},
                                   model="gpt-4o-mini")
    summarized = chat_of(store, server, api_key=CANARY_KEY, model="gpt-4o", api=api,
                         budget=BUDGET, summarizer=summarizer)
    long_conv = store.create_conversation(metadata=metadata)
    leaf = long_branch(store, long_conv, content=CANARY_CONTENT)
    for mode, _ in SUMMARY_FAULTS:
        arm(server, mode)
        leaf = summarized.send(leaf, f"{CANARY_CONTENT} again")
    made = summarized.send(leaf, f"{CANARY_CONTENT} once more")
    assert summarized.last.context.report.summary_created
    summary = next(n for n in store.tree(long_conv) if n.kind == "summary")
    assert CANARY_CONTENT in (summary.content or "")   # the canary was there to leak
    assert made.content and CANARY_CONTENT in made.content
    assert any(CANARY_CONTENT in str(body) for body in server.bodies)

    records = caplog.records
    assert records
    for record in records:
        text = texts_of(record)
        assert CANARY_KEY not in text, f"API key in a {record.levelname} record"
        if record.levelno >= logging.INFO:
            for canary in CANARIES:
                assert canary not in text, f"{canary} in {record.name}: {text[:300]}"
    # The records are there (the check above is not vacuous): failures with their type
    # and status, what was kept, and the summaries made and skipped.
    info = [r.getMessage() for r in records
            if r.levelno >= logging.INFO and r.name.startswith("convotree.")]
    assert any("RateLimitError (HTTP 429)" in m and "kept user message" in m for m in info)
    assert any("InternalServerError (HTTP 500)" in m for m in info)
    assert any("marked incomplete" in m for m in info)
    assert any(r.name == "convotree.summaries" and "summary" in r.getMessage()
               and " made " in r.getMessage() for r in records)
    assert any(r.name == "convotree.summaries" and "pruned instead" in r.getMessage()
               for r in records)
    assert {r.name for r in records if r.name.startswith("convotree.")} >= {
        "convotree.chat", "convotree.summaries"}


# --- unit checks of the helpers' edge cases -------------------------------------------------


def test_an_answer_that_is_no_completion_is_refused() -> None:
    from convotree.chat import _not_an_answer

    chat_garbage: list[Any] = ["<html></html>", b"", {}, {"choices": []},
                               {"choices": [{"finish_reason": "stop"}]}, {"choices": None}]
    for raw in chat_garbage:
        assert _not_an_answer(raw, "chat") is not None, raw
    responses_garbage: list[Any] = ["<html></html>", {}, {"output": None}, {"output": "x"}]
    for raw in responses_garbage:
        assert _not_an_answer(raw, "responses") is not None, raw
    # An empty answer is still an answer (stored as such, elsewhere tested).
    assert _not_an_answer({"choices": [{"message": {"content": ""}}]}, "chat") is None
    assert _not_an_answer({"output": []}, "responses") is None
