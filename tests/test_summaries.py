"""Summary nodes on both backends: made once, reused by every branch, invalidated, safe."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

import convotree
from convotree import ExtractiveSummarizer, errors
from convotree.summaries import SUMMARY_HEADER, SummaryRequest, SummaryResult
from convotree.testing import FakeOpenAI
from convotree.tokens import count_messages
from tests import sql_audit
from tests.helpers import call, gap_branch
from tests.twins import openai_summarizer

#: Every test below on Store and on AsyncStore (tests/twins.py).
TWINS = True


class Counting:
    """Wraps a summarizer and records every request it gets."""

    def __init__(self, inner: Any = None, delay: float = 0.0) -> None:
        self.inner = inner or ExtractiveSummarizer()
        self.name = "counting"
        self.requests: list[SummaryRequest] = []
        self.delay = delay
        self._lock = threading.Lock()

    def summarize(self, request: SummaryRequest) -> SummaryResult:
        with self._lock:
            self.requests.append(request)
        time.sleep(self.delay)
        return self.inner.summarize(request)  # type: ignore[no-any-return]


def grow(store: convotree.Store, parent: convotree.Node | None, turns: int, *,
         conv: Any = None, label: str = "t") -> convotree.Node:
    conv = conv if conv is not None else parent.conversation_id  # type: ignore[union-attr]
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        parent = store.append(conv, parent=parent, role=role,
                              content=f"{label}{i}: the plan has {i} steps and costs {i * 7} euros")
    assert parent is not None
    return parent


def summaries(store: convotree.Store, conv_id: Any) -> list[convotree.Node]:
    return [n for n in store.tree(conv_id) if n.kind == "summary"]


@pytest.fixture
def long_chat(store: convotree.Store) -> convotree.Node:
    conv = store.create_conversation()
    system = store.append(conv, role="system", content="You are a trip planner.")
    return grow(store, system, 60)


BUDGET = 600


def test_summary_made_once_when_the_suffix_overflows(store: convotree.Store,
                                                      long_chat: convotree.Node) -> None:
    summarizer = Counting()
    plain = store.context(long_chat, model="gpt-4o", budget=BUDGET)
    assert plain.report.summary_id is None and plain.report.stopped == "budget"

    ctx = store.context(long_chat, model="gpt-4o", budget=BUDGET, summarizer=summarizer)
    assert len(summarizer.requests) == 1 and ctx.report.summarizer_calls == 1
    assert ctx.report.summary_created and ctx.report.summary_id is not None
    stored = summaries(store, long_chat.conversation_id)
    assert [s.id for s in stored] == [ctx.report.summary_id]
    summary = stored[0]
    assert summary.role == "system" and summary.content.startswith(SUMMARY_HEADER)
    assert summary.summary_base_id is None and summary.model == "extractive"
    # sent after the system prompt, then recent messages; exact and within budget
    assert ctx.messages[0]["content"] == "You are a trip planner."
    assert ctx.messages[1] == {"role": "system", "content": summary.content}
    assert ctx.messages[-1]["content"] == long_chat.content
    assert ctx.tokens == count_messages(ctx.messages, model="gpt-4o") <= BUDGET
    # the summarizer got every non-system message down to the cut, and nothing else
    request = summarizer.requests[0]
    assert request.previous is None
    covered = store.path(store.node(long_chat.conversation_id, summary.parent_id))
    assert [m["content"] for m in request.messages] == [n.content for n in covered[1:]]
    assert ctx.report.stopped == "summary"      # everything after the summary fitted


def test_next_turns_and_other_branches_reuse_it(store: convotree.Store,
                                                 long_chat: convotree.Node) -> None:
    summarizer = Counting()
    first = store.context(long_chat, model="gpt-4o", budget=BUDGET, summarizer=summarizer)
    later = grow(store, long_chat, 2, label="next")
    again = store.context(later, model="gpt-4o", budget=BUDGET, summarizer=summarizer)
    assert again.report.summary_id == first.report.summary_id
    assert len(summarizer.requests) == 1 and again.report.summarizer_calls == 0
    # a branch forking below the summarized node costs zero summarizer calls
    fork_point = store.path(long_chat)[-3]
    branch = grow(store, fork_point, 3, label="fork")
    other = store.context(branch, model="gpt-4o", budget=BUDGET, summarizer=summarizer)
    assert other.report.summary_id == first.report.summary_id
    assert len(summarizer.requests) == 1
    # without a summarizer the stored summary is still used
    plain = store.context(branch, model="gpt-4o", budget=BUDGET)
    assert plain.report.summary_id == first.report.summary_id


def test_summaries_are_incremental(store: convotree.Store, long_chat: convotree.Node) -> None:
    summarizer = Counting()
    first = store.context(long_chat, model="gpt-4o", budget=BUDGET, summarizer=summarizer)
    leaf, calls = long_chat, 1
    for _ in range(10):
        leaf = grow(store, leaf, 4, label="more")
        store.context(leaf, model="gpt-4o", budget=BUDGET, summarizer=summarizer)
    stored = summaries(store, long_chat.conversation_id)
    calls = len(summarizer.requests)
    assert 2 <= calls <= 4 and len(stored) == calls         # hysteresis: not one per turn
    second = next(s for s in stored if s.summary_base_id is not None)
    assert second.summary_base_id == first.report.summary_id
    request = summarizer.requests[1]
    assert request.previous is not None and request.previous.startswith(SUMMARY_HEADER)
    assert len(request.messages) < 30                        # only what came after the first


def test_invalidation(store: convotree.Store, long_chat: convotree.Node) -> None:
    summarizer = Counting()
    ctx = store.context(long_chat, model="gpt-4o", budget=BUDGET, summarizer=summarizer)
    path = store.path(long_chat)
    covered = path[5]
    grow(store, covered, 2, label="side")                      # appending never invalidates
    assert len(summaries(store, long_chat.conversation_id)) == 1
    redacted = store.redact(covered)
    assert redacted.content == "[redacted]" and redacted.token_count > 0
    assert summaries(store, long_chat.conversation_id) == []     # same transaction
    again = store.context(long_chat, model="gpt-4o", budget=BUDGET, summarizer=summarizer)
    assert again.report.summary_created and again.report.summary_id != ctx.report.summary_id
    refolded = summarizer.requests[-1]
    assert refolded.previous is None     # the old summary is gone: folded again from the root
    texts = [m["content"] for m in refolded.messages]
    assert "[redacted]" in texts and covered.content not in texts
    # deleting a covered node deletes the summaries hanging below it
    store.delete_subtree(path[-10])
    assert [s for s in summaries(store, long_chat.conversation_id)
            if s.parent_id in {n.id for n in path[-10:]}] == []


@pytest.mark.parametrize("failure", ["500", "429", "timeout"])
def test_failing_summarizer_falls_back_and_writes_nothing(
        store: convotree.Store, long_chat: convotree.Node, failure: str) -> None:
    with FakeOpenAI(timeout_sleep=1.5) as server:
        summarizer = openai_summarizer(store, server, {"timeout": 0.5}, model="gpt-4o-mini")
        server.fail_next(failure)
        with sql_audit.unaudited():
            before = store.engine.connect().execute(sa.text(
                "SELECT count(*) FROM convotree_nodes")).scalar_one()
        ctx = store.context(long_chat, model="gpt-4o", budget=BUDGET, summarizer=summarizer)
        assert len(server.calls) == 1
    assert ctx.report.summary_error is not None and ctx.report.summary_id is None
    assert ctx.report.summarizer_calls == 1 and not ctx.report.summary_created
    expected = {"500": "InternalServerError", "429": "RateLimitError",
                "timeout": "APITimeoutError"}[failure]
    assert ctx.report.summary_error.startswith(expected)
    assert ctx.tokens == count_messages(ctx.messages, model="gpt-4o") <= BUDGET
    with sql_audit.unaudited():
        after = store.engine.connect().execute(sa.text(
            "SELECT count(*) FROM convotree_nodes")).scalar_one()
    assert after == before


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_openai_summarizer_records_usage(store: convotree.Store, long_chat: convotree.Node,
                                         api: str) -> None:
    with FakeOpenAI() as server:
        summarizer = openai_summarizer(store, server, model="gpt-4o-mini", api=api)
        ctx = store.context(long_chat, model="gpt-4o", budget=BUDGET, summarizer=summarizer)
        sent = server.calls[0]["body"]
    assert ctx.report.summary_created
    summary = summaries(store, long_chat.conversation_id)[0]
    assert summary.model == "gpt-4o-mini-2024-07-18"   # as the API reported it
    assert summary.input_tokens == server.input_tokens > 0
    assert summary.output_tokens == server.output_tokens > 0
    assert summary.content.startswith(SUMMARY_HEADER + "Notes:")
    if api == "responses":
        assert sent["store"] is False and "instructions" in sent
    else:
        assert sent["messages"][0]["role"] == "system"


def test_concurrent_assemblers_store_one_summary(db_url: str) -> None:
    with convotree.Store(db_url) as setup:
        conv = setup.create_conversation()
        leaf = grow(setup, setup.append(conv, role="system", content="Plan trips."), 60)
    summarizer = Counting(delay=0.3)
    results: list[convotree.Context] = []
    failures: list[BaseException] = []

    def assemble() -> None:
        try:
            with convotree.Store(db_url) as own:    # its own engine and connections
                results.append(own.context(leaf, model="gpt-4o", budget=BUDGET,
                                           summarizer=summarizer))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=assemble) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with convotree.Store(db_url) as check:
        stored = summaries(check, conv.id)
    assert len(stored) == 1
    assert {r.report.summary_id for r in results} == {stored[0].id}
    assert sum(r.report.summary_created for r in results) == 1


def test_summary_never_separates_a_tool_call_from_its_results(store: convotree.Store) -> None:
    conv = store.create_conversation()
    parent = store.append(conv, role="system", content="Use tools.")
    for i in range(25):
        parent = store.append(conv, parent=parent, role="user", content=f"question {i} " * 4)
        parent = store.append(conv, parent=parent, role="assistant",
                              tool_calls=[call(f"a{i}"), call(f"b{i}")])
        parent = store.append(conv, parent=parent, role="tool", tool_call_id=f"b{i}",
                              content=f"result b{i} " * 3)
        parent = store.append(conv, parent=parent, role="tool", tool_call_id=f"a{i}",
                              content=f"result a{i} " * 3)
        parent = store.append(conv, parent=parent, role="assistant", content=f"answer {i}")
    for budget in (300, 450, 700):
        ctx = store.context(parent, model="gpt-4o", budget=budget,
                            summarizer=ExtractiveSummarizer())
        assert ctx.report.summary_id is not None
        after = ctx.messages[2:]
        assert after[0]["role"] != "tool"
        assert ctx.tokens == count_messages(ctx.messages, model="gpt-4o") <= budget
    for summary in summaries(store, conv.id):
        covered = store.node(conv.id, summary.parent_id)
        assert not covered.tool_calls      # never cut right after a call


def test_summary_options_validate(store: convotree.Store, long_chat: convotree.Node) -> None:
    with pytest.raises(errors.ContextError):
        store.context(long_chat, model="gpt-4o", budget=0, summarizer=ExtractiveSummarizer())


def test_a_gap_between_summary_and_recent_messages_is_reported_then_summarized(
        store: convotree.Store) -> None:
    """A stored summary covers depths 1-5, the budget fits the summary and only the
    last message: 6-7 are neither sent nor summarized. The report says so (``gap``);
    with a summarizer the same call folds them into a new summary instead."""
    path, old, budget = gap_branch(store)
    conv = path[0].conversation_id
    leaf = path[8]
    whole = store.context(leaf, model="gpt-4o")
    assert whole.report.gap == () and whole.report.summary_id == old.id
    report = store.context(leaf, model="gpt-4o", budget=budget).report
    assert report.summary_id == old.id
    assert [(r.first, r.last) for r in report.kept] == [(0, 0), (8, 8)]
    assert [(r.first, r.last) for r in report.dropped] == [(1, 7)]
    assert [(r.first, r.last) for r in report.gap] == [(6, 7)] and report.gap_count == 2
    # With a summarizer the gap is folded into a new summary (extending the old one).
    made = store.context(leaf, model="gpt-4o", budget=budget,
                         summarizer=ExtractiveSummarizer())
    assert made.report.summary_created and made.report.summary_id != old.id
    assert made.report.gap == ()
    new = store.node(conv, made.report.summary_id)  # type: ignore[arg-type]
    assert new.summary_base_id == old.id and new.depth > old.depth
    # Without any summary on the path, the gap is the whole dropped prefix.
    store.redact(path[1], "x")  # drops every summary that covers depth 1
    bare = store.context(leaf, model="gpt-4o", budget=budget).report
    assert bare.summary_id is None and bare.gap == bare.dropped != ()
