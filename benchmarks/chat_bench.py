"""What ``Chat`` adds to a turn: convotree's time on top of the HTTP call itself.

A conversation of real OASST2 texts ``history`` turns long; every measured turn answers
the same leaf (so each one sends the same-sized context, an 8k-token window). Both
contenders talk HTTP to the same local fake OpenAI server:

- ``Chat.send``: store the user message, assemble the context (one SQL statement),
  call ``client.chat.completions.create``, parse, store the answer with its usage;
- raw: ``client.chat.completions.create`` with the same messages, nothing stored.

The difference is convotree's cost per turn (two committed writes and one read). The
server does not recount prompts here (``count_usage=False``): it runs in the same
process, and tokenizing 8k tokens per request would cost more than what is measured.
"""

from __future__ import annotations

from typing import Any

import convotree

from ._data import texts
from ._timing import paired_median_ms


def measure(url: str, *, history: int = 400, budget: int = 8_000, repeat: int = 50
            ) -> dict[str, Any]:
    from convotree.testing import FakeOpenAI

    pool = [t for t in texts() if 20 < len(t) < 1_500]
    with FakeOpenAI(count_usage=False) as server, convotree.Store(url, create=True) as store:
        client = server.client()
        chat = convotree.Chat(store, client, model="gpt-4o-mini", budget=budget)
        conv = store.create_conversation(title="chat benchmark")
        leaf = store.append(conv, role="system", content="You are a helpful assistant.")
        for index in range(history):
            leaf = store.append(conv, parent=leaf, role="user", content=pool[2 * index])
            leaf = store.append(conv, parent=leaf, role="assistant",
                                content=pool[2 * index + 1])
        question = "And what would you suggest next?"
        messages = [*store.context(leaf, model="gpt-4o-mini", budget=budget).messages,
                    {"role": "user", "content": question}]

        def ours() -> None:
            chat.send(leaf, question)

        def raw() -> None:
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)

        ours_ms, raw_ms = paired_median_ms(ours, raw, repeat=repeat, max_seconds=20)
        assert chat.last is not None
        return {"turn_ms": ours_ms, "raw_ms": raw_ms, "overhead_ms": ours_ms - raw_ms,
                "context_tokens": chat.last.context.tokens,
                "sent_messages": len(chat.last.context.messages)}
