"""The OpenAI Agents SDK with convotree as its session memory, offline.

    python examples/adapter_agents.py [DB_PATH]

Runs a real ``agents.Runner`` against convotree's local fake OpenAI server (no key, no
network): two turns with a tool call, a rewind, a fork, a compaction that keeps the
transcript, and usage read back with plain SQL. The database defaults to a temporary
file; pass a path to keep it (``convotree show ID --tree --db DB_PATH`` then draws it).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa
from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI

import convotree
from convotree.adapters.agents import ConvotreeSession
from convotree.testing import FakeOpenAI, Reply


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


async def main(db_path: Path) -> None:
    set_tracing_disabled(True)
    url = f"sqlite:///{db_path}"
    with FakeOpenAI() as server:                      # with a key: AsyncOpenAI()
        client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        agent = Agent(name="planner", instructions="Be brief.", tools=[weather],
                      model=OpenAIResponsesModel("gpt-4o-mini", client))
        async with convotree.AsyncStore(url, create=True) as store:
            # The one-line swap: SQLiteSession("user-42") -> ConvotreeSession(store, key=...)
            session = ConvotreeSession(store, key="user-42", compaction_client=client,
                                       compaction_model="gpt-4o-mini")
            await session.clear_session()             # a fresh start for the demo
            hooks = session.usage_hooks()             # usage onto the answer nodes
            await Runner.run(agent, "Plan a day in Lisbon", session=session, hooks=hooks)
            server.script(Reply(tool_calls=(("c1", "weather", '{"city": "Lisbon"}'),)),
                          Reply(text="Sunny: walk to Belem."))
            result = await Runner.run(agent, "Weather?", session=session, hooks=hooks)
            print("answer:", result.final_output)
            print("items:", len(await session.get_items()), "| newest two:",
                  [item.get("type", "message") for item in await session.get_items(2)])

            popped = await session.pop_item()         # rewind the last answer
            print("rewound:", popped["content"][0]["text"])

            first_answer = (await session.nodes())[1]
            fork = await session.fork(first_answer)   # shares the first turn, copies nothing
            await Runner.run(agent, "Porto instead?", session=fork, hooks=fork.usage_hooks())
            print("branches:", len(await session.branches()))

            before = await session.get_items()
            await session.run_compaction()            # a summary node; nothing deleted
            print("transcript kept:", await session.get_items() == before)
            config = RunConfig(call_model_input_filter=session.model_input_filter(
                model="gpt-4o-mini", budget=2_000))
            await Runner.run(agent, "Thanks!", session=session, run_config=config)
            sent = [item.get("type", item.get("role")) for item in server.bodies[-1]["input"]]
            print("the model received:", sent)
            conversation_id = session.conversation_id

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT model, sum(input_tokens), sum(output_tokens), count(*) "
            "FROM convotree_nodes WHERE conversation_id = :c AND input_tokens IS NOT NULL "
            "GROUP BY model"), {"c": conversation_id.hex}).all()
    engine.dispose()
    for model, used_in, used_out, answers in rows:
        print(f"usage in SQL: {model}: {answers} answers, {used_in} input and "
              f"{used_out} output tokens")
    print("conversation:", conversation_id)


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit("usage: python examples/adapter_agents.py [DB_PATH]")
    if len(sys.argv) == 2:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory() as folder:
            asyncio.run(main(Path(folder) / "agents.db"))
