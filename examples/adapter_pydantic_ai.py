"""pydantic-ai's conversation store in convotree's tables: runs, a branch and a fork.

Runs offline against convotree's local fake OpenAI server. Usage:

    python examples/adapter_pydantic_ai.py [DB_PATH]

The database (default: pydantic-ai-chat.db in the current folder) is created or
upgraded. Every message pydantic-ai stores is also a convotree node: the last lines
show the one tree holding both conversations, and a budgeted context of it.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from pydantic_ai import Agent
from pydantic_ai.conversation import Conversation
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import convotree
from convotree.adapters.pydantic_ai import ConvotreeConversationStore
from convotree.testing import FakeOpenAI


async def main(path: str) -> None:
    chat = f"trip-{uuid.uuid4().hex[:8]}"
    with FakeOpenAI() as server:
        model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(
            base_url=server.base_url, api_key="not-needed-offline"))
        agent = Agent(model, system_prompt="You are a terse travel planner.")
        async with convotree.AsyncStore(f"sqlite:///{path}", create=True) as convo:
            store = ConvotreeConversationStore(convo)      # the one-line swap

            for prompt in ("Plan a trip to Lisbon", "Make it three days"):
                conversation = await store.load(chat) or Conversation(conversation_id=chat)
                result = await agent.run(prompt, conversation=conversation)
                await store.save(result)
                print(f"{prompt!r} -> {result.output!r}")

            loaded = await store.load(chat)
            assert loaded is not None
            # Regenerate the second turn: the old one stays, as a branch of the record.
            branch = await store.branch(chat, at=2, expected_revision=loaded.revision)
            result = await agent.run("Make it five days", conversation=branch)
            await store.save(result)
            print(f"branched: {result.output!r}")

            # A fork shares the history it starts from (no copy).
            fork = await store.fork(chat, at=2, new_conversation_id=chat + "-porto")
            result = await agent.run("Go to Porto instead", conversation=fork)
            await store.save(result)
            record = await store.read_record(chat + "-porto")
            assert record is not None
            print(f"{record.conversation_id} forked from {record.forked_from}")

            tree = await store.tree_of(chat)
            assert tree is not None
            assert tree == await store.tree_of(chat + "-porto")
            nodes = await convo.tree(tree)
            print(f"{len(nodes)} nodes in one tree for "
                  f"{len(await store.list_conversations())} conversations")
            context = await store.context(chat, model="gpt-4o-mini", budget=80)
            print(f"budgeted context: {context.tokens} tokens, "
                  f"{len(context.messages)} messages")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "pydantic-ai-chat.db"))
