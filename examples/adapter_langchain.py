"""A LangChain agent whose context window is convotree's, offline.

``create_agent`` with a real ``ChatOpenAI`` model (pointed at convotree's local fake
OpenAI server, so no key or network is needed), a tool, and LangGraph's in-memory
checkpointer. ``ConvotreeContextMiddleware`` mirrors the thread into convotree and
sends the model a budgeted context with a summary, while the graph state keeps every
message: the non-destructive alternative to ``SummarizationMiddleware``.

    python examples/adapter_langchain.py [DB_PATH]

Needs ``pip install "convotree[langchain]" langchain-openai``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from langchain.agents import create_agent
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver

import convotree
from convotree.adapters.langchain import (
    ConvotreeChatMessageHistory,
    ConvotreeContextMiddleware,
    conversation_id_for,
)
from convotree.testing import FakeOpenAI, Reply


@tool
def weather(city: str) -> str:
    """The weather of a city today."""
    return f"Sunny and 24 degrees in {city}"


QUESTIONS = [
    "What is the weather in Lisbon?",
    "Plan three days there: museums in the morning, trams and food in the afternoon.",
    "Add a day trip to Sintra with the palaces, the gardens and a long walk in the hills.",
    "Which of those days is best when it rains, and what should I pack for it?",
    "Thanks. Summarize the plan in one line.",
]


def main(db_path: str) -> None:
    store = convotree.Store(f"sqlite:///{db_path}", create=True)
    with FakeOpenAI() as server:
        model = ChatOpenAI(base_url=server.base_url, api_key="sk-test", model="gpt-4o-mini")
        middleware = ConvotreeContextMiddleware(
            store, budget=170, summarizer=convotree.ExtractiveSummarizer())
        agent = create_agent(model, tools=[weather], system_prompt="You are a terse guide.",
                             checkpointer=InMemorySaver(), middleware=[middleware])
        server.script(Reply(tool_calls=(("call_1", "weather", '{"city": "Lisbon"}'),)))
        config = {"configurable": {"thread_id": "trip-1"}}
        for question in QUESTIONS:
            state = agent.invoke({"messages": [{"role": "user", "content": question}]},
                                 config)
            sent = server.bodies[-1]["messages"]
            print(f"{question[:40]:40} -> the model got {len(sent)} messages")
        bodies = server.bodies

    conversation = conversation_id_for("trip-1")
    nodes = store.tree(conversation)
    summaries = [n for n in nodes if n.kind == "summary"]
    print(f"graph state: {len(state['messages'])} messages (nothing summarized away)")
    print(f"convotree: {len(nodes) - len(summaries)} message nodes, {len(summaries)} "
          "summary node(s)")
    print("last request:", [m["role"] for m in sent])
    with_summary = sum(body["messages"][1]["content"].startswith("Summary of the earlier")
                       for body in bodies)
    print(f"requests that carried a summary: {with_summary}; summaries made: "
          f"{len(summaries)} (each made once, then reused)")
    for node in nodes:
        if node.role == "assistant" and node.kind == "message":
            print(f"  answer {node.response_id}: {node.input_tokens} input tokens billed, "
                  f"{node.counted_input_tokens} counted by convotree")
    history = ConvotreeChatMessageHistory(store, "trip-1")
    print("the thread read back as a chat history:", len(history.messages), "messages")
    store.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as folder:
            main(str(Path(folder) / "agent.db"))
