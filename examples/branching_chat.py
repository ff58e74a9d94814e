"""A branching chat with OpenAI, kept in SQLite: send, fork, regenerate, edit, stream.

    python examples/branching_chat.py [DATABASE_PATH]

With ``OPENAI_API_KEY`` set it talks to the real OpenAI API (model from
``CONVOTREE_MODEL``, default gpt-4o-mini); without it, to convotree's local fake server
(``convotree.testing.FakeOpenAI``), so it runs anywhere, offline.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import openai

import convotree
from convotree.testing import FakeOpenAI


def main(path: str) -> None:
    with contextlib.ExitStack() as stack:
        if os.environ.get("OPENAI_API_KEY"):
            client = openai.OpenAI()
            print("talking to the OpenAI API")
        else:
            server = stack.enter_context(FakeOpenAI())
            client = server.client()
            print(f"OPENAI_API_KEY is not set: talking to a local fake server at {server.base_url}")
        store = stack.enter_context(convotree.Store(f"sqlite:///{path}", create=True))
        chat = convotree.Chat(store, client, model=os.environ.get("CONVOTREE_MODEL", "gpt-4o-mini"))

        conv = store.create_conversation(title="Lisbon")
        store.append(conv, role="system", content="You are a concise travel planner.")
        a1 = chat.send(conv, "Plan a trip to Lisbon")
        a2 = chat.send(a1, "Make it three days")
        b1 = chat.regenerate(a2)                        # a sibling answer to the same prompt
        u2 = store.path(a2)[-2]                         # the prompt a2 answers
        c1 = chat.edit(u2, "Make it five days")         # a sibling prompt and its answer
        print("\nstreaming an answer on the five-day branch:")
        with chat.stream(c1, "Which day for Sintra?") as stream:
            for delta in stream:
                print(delta, end="", flush=True)
        print()

        print(f"\nconversation {conv.id}: {len(store.tree(conv))} nodes, "
              f"{len(store.leaves(conv))} branches")
        for leaf in (b1, stream.node or c1):
            print(" >", " | ".join(f"{n.role}: {(n.content or '')[:30]}"
                                   for n in store.path(leaf)))
        assert chat.last is not None
        print("\nthe last request body (what was sent for this branch):")
        print(json.dumps(chat.last.request, indent=1, ensure_ascii=False))
        node = chat.last.node
        assert node is not None
        print(f"counted by convotree: {node.counted_input_tokens} input tokens; "
              f"billed by the API: {node.input_tokens}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path("convotree-chat-example.db")))
