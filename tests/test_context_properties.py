"""Property tests: the assembler against a naive reference on random trees and budgets.

The reference loads the whole path (``store.path``), recounts every message from
scratch with tiktoken (``count_messages``) and prunes with the five rules written out
plainly. The assembler must agree with it message for message, or raise the same error.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convotree
from convotree import errors
from convotree.tokens import count_messages
from tests.conftest import examples
from tests.helpers import call

#: Every test below on Store and on AsyncStore (tests/twins.py).
TWINS = True

WORDS = ["the", "plan", "Lisbon", "tram", "東京", "ümlaut", "42", "tool", "<|endoftext|>", "🙂"]
MODEL_FOR_STORAGE = st.sampled_from([None, None, None, "gpt-3.5-turbo"])

STEP = st.one_of(
    st.tuples(st.just("message"), st.sampled_from(["user", "assistant", "user", "assistant",
                                                    "system", "developer"]),
              st.integers(0, 30), st.booleans(), MODEL_FOR_STORAGE),
    st.tuples(st.just("tools"), st.integers(1, 3), st.integers(0, 12), st.randoms()),
    st.tuples(st.just("branch"), st.integers(0, 1000)),
)


def _text(seed: int, length: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(length))


def build(store: convotree.Store, steps: list[tuple[Any, ...]]) -> list[convotree.Node]:
    """Append the steps as one branch (plus side branches); return the main path."""
    conv = store.create_conversation()
    path: list[convotree.Node] = []
    for index, step in enumerate(steps):
        parent = path[-1] if path else None
        if step[0] == "message":
            _, role, length, pinned, model = step
            path.append(store.append(conv, parent=parent, role=role, model=model,
                                     content=_text(index, length), pinned=pinned))
        elif step[0] == "tools":
            _, count, length, rng = step
            ids = [f"call_{index}_{n}" for n in range(count)]
            node = store.append(conv, parent=parent, role="assistant",
                                content=_text(index, length) or None,
                                tool_calls=[call(i, "lookup", f'{{"q": "{i}"}}') for i in ids])
            path.append(node)
            rng.shuffle(ids)
            for answered in ids:
                path.append(store.append(conv, parent=path[-1], role="tool",
                                         tool_call_id=answered, content=_text(index, length)))
        elif path:   # a side branch that must never leak into the main path's context
            side_parent = path[step[1] % len(path)]
            if side_parent.role != "tool" and not side_parent.tool_calls:
                store.append(conv, parent=side_parent, role="user", content="side branch",
                             set_current=False)
    return path


def reference(path: list[convotree.Node], model: str, budget: int
              ) -> list[dict[str, Any]] | type[Exception]:
    messages = [node.to_message() for node in path]
    cost = [count_messages([m], model=model) - 3 for m in messages]
    available = budget - 3
    if available < 0:
        return errors.BudgetExceeded
    keep = {i for i, n in enumerate(path) if n.pinned or n.role in ("system", "developer")}
    leaf = path[-1]
    if leaf.role == "tool" or leaf.tool_calls:
        start = len(path) - 1
        while path[start].role == "tool":
            start -= 1
        calls = {c["id"] for c in path[start].tool_calls or []}
        if calls - {n.tool_call_id for n in path[start + 1:]}:
            return errors.IncompleteToolCalls
    if sum(cost[i] for i in keep) > available:
        return errors.BudgetExceeded
    remaining = available - sum(cost[i] for i in keep)
    index, first = len(path) - 1, True
    while index >= 0:
        if index in keep:
            index -= 1
            first = False
            continue
        start = index
        if path[index].role == "tool":
            while path[start].role == "tool":
                start -= 1
        unit = range(start, index + 1)
        unit_cost = sum(cost[i] for i in unit)
        if unit_cost > remaining:
            if first:
                return errors.BudgetExceeded
            break
        remaining -= unit_cost
        keep.update(unit)
        index, first = start - 1, False
    return [messages[i] for i in sorted(keep)]


@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=14), budget_fraction=st.floats(0.0, 1.2),
       cut=st.integers(0, 1000), model=st.sampled_from(["gpt-4o", "gpt-4o-mini", "gpt-4"]))
def test_assembler_matches_reference(store: convotree.Store, steps: list[tuple[Any, ...]],
                                     budget_fraction: float, cut: int, model: str) -> None:
    path = build(store, steps)
    if not path:
        return
    leaf = path[cut % len(path)]
    full_path = store.path(leaf)
    total = count_messages([n.to_message() for n in full_path], model=model)
    budget = max(1, int(total * budget_fraction))
    expected = reference(full_path, model, budget)
    if isinstance(expected, type):
        with pytest.raises(expected):
            store.context(leaf, model=model, budget=budget)
        return
    ctx = store.context(leaf, model=model, budget=budget)
    assert ctx.messages == expected
    # rule 5 and exactness
    assert ctx.tokens == count_messages(ctx.messages, model=model) <= budget
    # no orphan tool result, no call without all its results
    for position, message in enumerate(ctx.messages):
        if message["role"] == "tool":
            above = position - 1
            while ctx.messages[above]["role"] == "tool":
                above -= 1
            call_ids = {c["id"] for c in ctx.messages[above].get("tool_calls") or []}
            assert message["tool_call_id"] in call_ids
        if message.get("tool_calls"):
            results = {m["tool_call_id"] for m in ctx.messages[position + 1:
                                                              position + 1 +
                                                              len(message["tool_calls"])]
                       if m["role"] == "tool"}
            assert results == {c["id"] for c in message["tool_calls"]}
    # the report accounts for every node on the path
    assert ctx.report.kept_count == len(ctx.messages)
    assert ctx.report.kept_count + ctx.report.dropped_count == len(full_path)


@settings(max_examples=examples(30), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(turns=st.integers(1, 12), compacted=st.sets(st.integers(0, 30), max_size=3),
       systems=st.sets(st.integers(0, 30), max_size=2), cut=st.integers(0, 1000))
def test_a_responses_context_starts_at_the_deepest_compaction(
        store: convotree.Store, turns: int, compacted: set[int], systems: set[int],
        cut: int) -> None:
    """Answers the Responses API compacted, anywhere on a branch: a Responses context
    is the kept-always messages above the deepest one, that answer (from its compaction
    item), and everything after it; a Chat Completions context ignores the marks."""
    conv = store.create_conversation()
    path = [store.append(conv, role="system", content="root rules")]
    for turn in range(turns):
        if turn in systems:
            path.append(store.append(conv, parent=path[-1], role="developer",
                                     content=f"note {turn}"))
        path.append(store.append(conv, parent=path[-1], role="user", content=f"ask {turn}"))
        items = ([{"type": "compaction", "id": f"cmp_{turn}", "encrypted_content": "e"},
                  {"type": "message", "role": "assistant",
                   "content": [{"type": "output_text", "text": f"answer {turn}"}]}]
                 if turn in compacted else None)
        path.append(store.append(conv, parent=path[-1], role="assistant",
                                 content=f"answer {turn}", api_items=items))
    leaf_index = cut % len(path)
    branch = path[:leaf_index + 1]
    leaf = branch[-1]
    chat = store.context(leaf, model="gpt-4o")
    assert chat.node_ids == tuple(n.id for n in branch) and chat.report.compaction_id is None
    responses = store.context(leaf, model="gpt-4o", format="responses")
    marks = [i for i, node in enumerate(branch) if node.compacted]
    if not marks:
        assert responses.node_ids == chat.node_ids
        assert responses.report.compaction_id is None
        return
    start = marks[-1]
    above = [n.id for n in branch[:start] if n.role in ("system", "developer")]
    assert responses.node_ids == (*above, *(n.id for n in branch[start:]))
    assert responses.report.compaction_id == branch[start].id
    assert responses.report.gap == ()
    assert responses.messages[len(above)] == branch[start].api_items[0]  # type: ignore[index]
    assert sum(item.get("type") == "compaction" for item in responses.messages) == 1
