"""Summaries over a long branching chat: summarizer calls and input tokens billed.

A 1,000-turn conversation (real OASST2 texts) assembled every turn with an 8k budget and
an ``OpenAISummarizer`` talking HTTP to a local fake OpenAI server that counts calls
and tokens. Every 50 turns a branch forks a few turns back and runs 3 turns of its own.
Compared with what a stateless chat would bill without convotree: (a) resending the
whole history every turn, and (b) chaining with ``previous_response_id``, which bills
the whole history as input every turn too.
"""

from __future__ import annotations

import random
from typing import Any

import convotree
from convotree.tokens import count_messages

from ._data import texts


def simulate(url: str, *, turns: int = 1_000, budget: int = 8_000, branch_every: int = 50,
             branch_turns: int = 3) -> dict[str, Any]:
    from convotree.testing import FakeOpenAI

    rng = random.Random(5)
    pool = [t for t in texts() if 20 < len(t) < 2_000]
    with FakeOpenAI() as server, convotree.Store(url, create=True) as store:
        summarizer = convotree.OpenAISummarizer(server.client(), model="gpt-4o-mini")
        conv = store.create_conversation(title="summary benchmark")
        leaf = store.append(conv, role="system", content="You are a helpful assistant.")
        sent = full = turn_tokens = 0
        calls_main = calls_branches = branch_count = 0
        full_history: list[dict[str, Any]] = [leaf.to_message()]

        def turn(parent: convotree.Node) -> tuple[convotree.Node, convotree.Context]:
            user = store.append(conv, parent=parent, role="user", content=rng.choice(pool))
            ctx = store.context(user, model="gpt-4o", budget=budget, summarizer=summarizer)
            answer = store.append(conv, parent=user, role="assistant", content=rng.choice(pool))
            return answer, ctx

        for index in range(1, turns + 1):
            before = len(server.calls)
            leaf, ctx = turn(leaf)
            calls_main += len(server.calls) - before
            sent += ctx.tokens
            path = store.path(leaf)
            full_history = [n.to_message() for n in path[:-1]]
            full += count_messages(full_history, model="gpt-4o")
            turn_tokens += path[-1].token_count + path[-2].token_count
            if index % branch_every == 0:
                fork_from = path[-7]            # three turns back
                before = len(server.calls)
                branch = fork_from
                for _ in range(branch_turns):
                    branch, _ = turn(branch)
                calls_branches += len(server.calls) - before
                branch_count += 1
        summarizer_input = server.input_tokens
    return {
        "turns": turns, "budget": budget, "mean_turn_tokens": turn_tokens / turns,
        "summarizer_calls": calls_main, "branch_calls": calls_branches,
        "branches": branch_count, "summarizer_input": summarizer_input,
        "convotree_input": sent, "full_input": full,
    }
