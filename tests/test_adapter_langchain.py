"""The LangChain adapters, driven through the real framework on both backends.

``create_agent`` (langchain 1.x) with ``langchain_openai.ChatOpenAI`` talking HTTP to
convotree's local fake OpenAI server, a real ``@tool``, and LangGraph's
``InMemorySaver`` checkpointer: several turns on one thread, sync (``invoke``, over
``Store``) and async (``ainvoke``, over ``AsyncStore``). What the model received
(``server.bodies``) is convotree's budgeted context while the graph state still holds
every message; ``RunnableWithMessageHistory`` over ``ConvotreeChatMessageHistory``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver

import convotree
from convotree.adapters.langchain import (
    ConvotreeChatMessageHistory,
    ConvotreeContextMiddleware,
    conversation_id_for,
    mirror,
)
from convotree.errors import (
    ConfigurationError,
    InvalidArgument,
    InvalidContent,
    ToolCallMismatch,
)
from convotree.testing import FakeOpenAI, Reply
from convotree.tokens import count_messages
from tests import sql_audit
from tests.conftest import table_counts

ROOT = Path(__file__).resolve().parents[1]
#: Tests taking ``shell`` run on Store + invoke and on AsyncStore + ainvoke (conftest).
TWINS = True
MODEL = "gpt-4o-mini"
SYSTEM = "You are a terse travel assistant."
QUESTIONS = [
    "What is the weather in Lisbon?",
    "Plan three days there: museums in the morning, trams and food in the afternoon.",
    "Add a day trip to Sintra with the palaces, the gardens and a long walk in the hills.",
    "Which of those days is best when it rains, and what should I pack for it?",
    "Thanks. Summarize the plan in one line.",
]


@tool
def weather(city: str) -> str:
    """The weather of a city today."""
    return f"Sunny and 24 degrees in {city}"


def _agent(server: FakeOpenAI, middleware: ConvotreeContextMiddleware, **kwargs: Any) -> Any:
    model = ChatOpenAI(base_url=server.base_url, api_key="x", model=MODEL, max_retries=0)
    return create_agent(model, tools=[weather], system_prompt=SYSTEM,
                        checkpointer=kwargs.pop("checkpointer", InMemorySaver()),
                        middleware=[middleware], **kwargs)


def _config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def _run(shell: str, db_url: str, body: Callable[[Any, Any], Any], **options: Any) -> Any:
    """Run ``body(store, invoke)`` with a Store and ``agent.invoke`` (sync) or an
    AsyncStore and ``agent.ainvoke`` (async, on an event loop of its own)."""
    if shell == "sync":
        with convotree.Store(db_url) as store:
            return body(store, lambda agent, *args: agent.invoke(*args))

    async def main() -> Any:
        async with convotree.AsyncStore(db_url) as store:
            loop = asyncio.get_running_loop()

            def invoke(runnable: Any, *args: Any) -> Any:
                # The body reads as sync code (in a worker thread); each call is an
                # ainvoke awaited on this loop, where the AsyncStore lives.
                return asyncio.run_coroutine_threadsafe(
                    runnable.ainvoke(*args), loop).result(timeout=60)

            return await asyncio.to_thread(body, store, invoke)

    return asyncio.run(main())


def _tool_pairs_intact(messages: list[dict[str, Any]]) -> None:
    """Every tool result follows the assistant message that called it, and every call
    is answered before the next non-tool message (PITFALLS: orphaned tool messages)."""
    pending: set[str] = set()
    for message in messages:
        if message["role"] == "tool":
            assert message["tool_call_id"] in pending, messages
            pending.discard(message["tool_call_id"])
        else:
            assert not pending, messages
            pending = {call["id"] for call in message.get("tool_calls") or ()}
    assert not pending


# --- the middleware ---------------------------------------------------------------------


def test_agent_sends_the_budgeted_context_and_keeps_the_state_whole(
        shell: str, db_url: str) -> None:
    thread = f"thread-{uuid.uuid4()}"
    budget = 170

    def body(store: Any, invoke: Callable[..., Any]) -> Any:
        with FakeOpenAI() as server:
            middleware = ConvotreeContextMiddleware(
                store, budget=budget, summarizer=convotree.ExtractiveSummarizer())
            agent = _agent(server, middleware)
            server.script(Reply(tool_calls=(("call_w1", "weather", '{"city": "Lisbon"}'),)))
            states = [invoke(agent, {"messages": [{"role": "user", "content": q}]},
                             _config(thread)) for q in QUESTIONS]
            return states, server.bodies

    states, bodies = _run(shell, db_url, body)
    state = states[-1]["messages"]
    # The graph state holds every message: nothing was summarized away in it.
    assert [type(m).__name__ for m in state[:4]] == [
        "HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert len(state) == 2 * len(QUESTIONS) + 2
    assert [m.content for m in state if isinstance(m, HumanMessage)] == QUESTIONS
    assert len(bodies) == len(QUESTIONS) + 1

    for sent in bodies:
        assert sent["messages"][0] == {"role": "system", "content": SYSTEM}   # pinned
        _tool_pairs_intact(sent["messages"])
        assert count_messages(sent["messages"], model=MODEL, tools=sent["tools"]) <= budget
    # The tool turn went whole, as a pair.
    assert [m["role"] for m in bodies[1]["messages"]] == ["system", "user", "assistant", "tool"]
    last = bodies[-1]["messages"]
    # Later turns: old turns dropped, a summary instead of them, the new question last.
    assert last[-1] == {"role": "user", "content": QUESTIONS[-1]}
    assert last[1]["role"] == "system" and last[1]["content"].startswith(
        "Summary of the earlier conversation:")
    assert {"role": "user", "content": QUESTIONS[0]} not in last
    assert len(last) < len(state)

    plain = convotree.Store(db_url)
    conversation = conversation_id_for(thread)
    nodes = plain.tree(conversation)
    messages = [n for n in nodes if n.kind == "message"]
    summaries = [n for n in nodes if n.kind == "summary"]
    assert len(messages) == len(state)            # one node per message, none twice
    carried = [b for b in bodies if b["messages"][1]["content"].startswith("Summary of")]
    assert summaries and len(summaries) < len(carried)   # made once, reused after
    answers = [n for n in messages if n.role == "assistant"]
    assert len(answers) == len(bodies)
    for node in answers:
        # convotree's count of what was sent equals what the server billed (the fake
        # bills by OpenAI's counting rule), and the usage is in SQL.
        assert node.counted_input_tokens == node.input_tokens
        assert node.model == f"{MODEL}-2024-07-18" and node.response_id.startswith("chatcmpl-")
        assert node.output_tokens is not None and node.finish_reason in ("stop", "tool_calls")
    assert answers[0].tool_calls[0]["id"] == "call_w1"
    assert messages[2].role == "tool" and messages[2].tool_call_id == "call_w1"
    # The last request is exactly convotree's context of the last question, behind the
    # system prompt (whose tokens came off the budget).
    question = messages[-2]
    system = count_messages([{"role": "system", "content": SYSTEM}], model=MODEL) - 3
    context = plain.context(question, model=MODEL, budget=budget - system,
                            tools=bodies[-1]["tools"])
    assert [(m["role"], m["content"]) for m in last[1:]] == [
        (m["role"], m["content"]) for m in context.messages]
    assert context.tokens + system == answers[-1].counted_input_tokens
    assert context.report.dropped and context.report.summary_id == summaries[-1].id
    # The mirror is the thread: same ids, same messages, in order.
    history = ConvotreeChatMessageHistory(plain, thread).messages
    assert history == state
    plain.close()


def test_an_openai_summarizer_runs_in_both_shells(shell: str, db_url: str) -> None:
    """The summary is made by a model over HTTP: sync client with Store, async client
    (awaited on the loop, inside the shared code) with AsyncStore."""
    thread = f"thread-{uuid.uuid4()}"

    def body(store: Any, invoke: Callable[..., Any]) -> Any:
        with FakeOpenAI() as server:
            summarizer = (convotree.OpenAISummarizer(server.client()) if shell == "sync"
                          else convotree.AsyncOpenAISummarizer(server.async_client()))
            agent = _agent(server, ConvotreeContextMiddleware(
                store, budget=150, summarizer=summarizer))
            for question in QUESTIONS[1:]:
                invoke(agent, {"messages": [{"role": "user", "content": question}]},
                       _config(thread))
            return server.bodies

    bodies = _run(shell, db_url, body)
    agent_bodies = [b for b in bodies if b.get("tools")]
    summarizer_bodies = [b for b in bodies if not b.get("tools")]
    assert len(agent_bodies) == len(QUESTIONS) - 1 and summarizer_bodies
    with convotree.Store(db_url) as store:
        summaries = [n for n in store.tree(conversation_id_for(thread)) if n.kind == "summary"]
    assert len(summaries) == len(summarizer_bodies)        # one call per summary made
    assert summaries[0].input_tokens is not None            # what the summary cost
    assert agent_bodies[-1]["messages"][1]["content"] == summaries[-1].content


def test_responses_api_messages_round_trip_with_their_blocks(db_url: str) -> None:
    """ChatOpenAI on the Responses API answers with content blocks (reasoning, text
    with annotations) that OpenAI's chat format has no parts for: the model still gets
    the thread's own objects (the reasoning item replayed), and the mirror gives them
    back exactly."""
    thread = f"thread-{uuid.uuid4()}"
    with convotree.Store(db_url) as store, FakeOpenAI() as server:
        model = ChatOpenAI(base_url=server.base_url, api_key="x", model=MODEL,
                           use_responses_api=True, max_retries=0)
        agent = create_agent(model, tools=[weather], system_prompt=SYSTEM,
                             checkpointer=InMemorySaver(),
                             middleware=[ConvotreeContextMiddleware(store, budget=400)])
        server.script(Reply(tool_calls=(("call_r1", "weather", '{"city": "Faro"}'),),
                            reasoning="ENCRYPTED-1"))
        for question in ("Weather in Faro?", "And the beaches?"):
            state = agent.invoke({"messages": [{"role": "user", "content": question}]},
                                 _config(thread))["messages"]
        sent = server.bodies[-1]["input"]
        assert {"type": "reasoning", "encrypted_content": "ENCRYPTED-1"}.items() <= next(
            item for item in sent if item.get("type") == "reasoning").items()
        assert [i.get("type") for i in sent].count("function_call_output") == 1
        assert ConvotreeChatMessageHistory(store, thread).messages == state
        stored = store.path(store.current(conversation_id_for(thread)))
        assert [n.role for n in stored] == ["user", "assistant", "tool", "assistant", "user",
                                            "assistant"]
        assert stored[1].tool_calls[0]["id"] == "call_r1"


def test_mirroring_the_same_state_again_writes_nothing(db_url: str) -> None:
    thread = f"thread-{uuid.uuid4()}"
    with convotree.Store(db_url) as store, FakeOpenAI() as server:
        agent = _agent(server, ConvotreeContextMiddleware(store))
        server.script(Reply(tool_calls=(("call_1", "weather", '{"city": "Porto"}'),)))
        state = agent.invoke({"messages": [{"role": "user", "content": "Porto?"}]},
                             _config(thread))["messages"]
        conversation = conversation_id_for(thread)
        before = table_counts(store)
        with sql_audit.capture() as log:
            again = mirror(store, conversation, state)
        assert again.written == 0 and not again.forked
        assert again.leaf is not None and again.leaf.content == state[-1].content
        assert table_counts(store) == before
        # The usual turn reads the current node only: no path, no tree.
        reads = [s for s in log if "convotree_" in s]
        assert len(reads) <= 2, reads
        assert not any("RECURSIVE" in s.upper() for s in log)
        # A new message on top: exactly one node more.
        more = [*state, HumanMessage("And tomorrow?", id="h-2")]
        grown = mirror(store, conversation, more)
        assert grown.written == 1 and grown.leaf is not None
        assert grown.leaf.parent_id == again.leaf.id
        assert len(store.tree(conversation)) == len(state) + 1


def test_an_edit_or_a_removal_in_the_thread_is_a_new_branch(db_url: str) -> None:
    thread = f"thread-{uuid.uuid4()}"
    with convotree.Store(db_url) as store, FakeOpenAI() as server:
        agent = _agent(server, ConvotreeContextMiddleware(store))
        config = _config(thread)
        for question in ("Hello", "Plan a day in Porto"):
            state = agent.invoke({"messages": [{"role": "user", "content": question}]},
                                 config)["messages"]
        conversation = conversation_id_for(thread)
        assert len(store.leaves(conversation)) == 1
        # Edit: same id, new content (LangGraph's add_messages replaces by id).
        edited = HumanMessage("Plan a day in Braga", id=state[2].id)
        agent.update_state(config, {"messages": [edited]})
        state = agent.invoke({"messages": [{"role": "user", "content": "Thanks"}]},
                             config)["messages"]
        sent = [m["content"] for m in server.bodies[-1]["messages"]]
        assert "Plan a day in Braga" in sent and "Plan a day in Porto" not in sent
        leaves = store.leaves(conversation)
        assert len(leaves) == 2                    # the old branch is kept
        current = store.current(conversation)
        assert current is not None
        assert [n.content for n in store.path(current)] == [m.content for m in state]
        assert "Plan a day in Porto" in [n.content for n in store.tree(conversation)]
        # Removal: the thread drops its first turn; the rest becomes a branch of its own.
        agent.update_state(config, {"messages": [RemoveMessage(id=state[0].id),
                                                 RemoveMessage(id=state[1].id)]})
        state = agent.invoke({"messages": [{"role": "user", "content": "Bye"}]},
                             config)["messages"]
        assert state[0].content == "Plan a day in Braga"
        current = store.current(conversation)
        assert current is not None
        assert [n.content for n in store.path(current)] == [m.content for m in state]
        assert len(store.leaves(conversation)) == 3
        assert server.bodies[-1]["messages"][1] == {"role": "user",
                                                    "content": "Plan a day in Braga"}
        # Back to an earlier branch exactly (time travel): continued, not copied.
        nodes = len(store.tree(conversation))
        again = mirror(store, conversation, state)
        assert again.written == 0 and len(store.tree(conversation)) == nodes


def test_hostile_input_is_a_typed_error_and_writes_nothing(db_url: str) -> None:
    thread = f"thread-{uuid.uuid4()}"
    with convotree.Store(db_url) as store, FakeOpenAI() as server:
        agent = _agent(server, ConvotreeContextMiddleware(store))
        before = table_counts(store)
        for bad in ("nul \x00 byte", "lone \ud800 surrogate"):
            with pytest.raises(InvalidContent):
                agent.invoke({"messages": [{"role": "user", "content": bad}]},
                             _config(f"{thread}-{len(bad)}"))
        assert table_counts(store) == before       # not even the conversation
        assert server.bodies == []                 # and the model was never called
        state = agent.invoke({"messages": [{"role": "user", "content": "Fine"}]},
                             _config(thread))["messages"]
        before = table_counts(store)
        with pytest.raises(InvalidContent):
            agent.invoke({"messages": [{"role": "user", "content": "again \x00"}]},
                         _config(thread))
        assert table_counts(store) == before
        # A tool result that answers no call, handed to the mirror directly.
        conversation = conversation_id_for(thread)
        orphan = ToolMessage("42", tool_call_id="call_nobody", id="t-orphan")
        with pytest.raises(ToolCallMismatch):
            mirror(store, conversation, [*state, orphan])
        with pytest.raises(InvalidContent):
            mirror(store, conversation, [*state, RemoveMessage(id=state[0].id)])
        assert table_counts(store) == before
        for key in ("", "x" * 2000, "a\x00b", 3.5, None):
            with pytest.raises(InvalidArgument):
                conversation_id_for(key)  # type: ignore[arg-type]
        for options in ({"budget": -1}, {"budget": 0}, {"budget": "8k"}, {"model": ""},
                        {"reserve_output": -5}, {"summarizer": "extractive"},
                        {"summary_options": {"keep_recent": 0.5}}, {"policy": object()},
                        {"namespace": "a\x00b"}, {"tenant_of": "acme"}):
            with pytest.raises(InvalidArgument):
                ConvotreeContextMiddleware(store, **options)
        with pytest.raises(ConfigurationError):
            ConvotreeContextMiddleware("sqlite:///x.db")  # type: ignore[arg-type]


def test_a_run_without_a_thread_is_refused(db_url: str) -> None:
    with convotree.Store(db_url) as store, FakeOpenAI() as server:
        agent = _agent(server, ConvotreeContextMiddleware(store), checkpointer=None)
        before = table_counts(store)
        with pytest.raises(ConfigurationError, match="thread"):
            agent.invoke({"messages": [{"role": "user", "content": "hi"}]})
        assert table_counts(store) == before


def test_an_async_store_needs_ainvoke(db_url: str) -> None:
    async def main() -> None:
        async with convotree.AsyncStore(db_url) as store:
            with FakeOpenAI() as server:
                agent = _agent(server, ConvotreeContextMiddleware(store))
                with pytest.raises(ConfigurationError, match="ainvoke"):
                    await asyncio.to_thread(
                        agent.invoke, {"messages": [{"role": "user", "content": "hi"}]},
                        _config(f"t-{uuid.uuid4()}"))

    asyncio.run(main())


def test_threads_map_to_stable_conversations_per_tenant(db_url: str) -> None:
    assert conversation_id_for("t1") == conversation_id_for("t1")
    assert conversation_id_for("t1") != conversation_id_for("t1", tenant="acme")
    assert conversation_id_for("t1") != conversation_id_for("t1", namespace="planner")
    # The separator of the derived name is refused in a thread id and a namespace, so
    # conversation_id_for("b", namespace="a") and conversation_id_for("a\x1fb") differ.
    with pytest.raises(InvalidArgument):
        conversation_id_for("a\x1fb")
    with pytest.raises(InvalidArgument):
        conversation_id_for("b", namespace="a\x1f")
    thread = f"thread-{uuid.uuid4()}"
    with convotree.Store(db_url) as store, FakeOpenAI() as server:
        middleware = ConvotreeContextMiddleware(
            store, tenant_of=lambda runtime: runtime.context["tenant"])
        for tenant in ("acme", "globex"):   # the same thread id in two tenants' apps
            agent = _agent(server, middleware, context_schema=dict)
            agent.invoke({"messages": [{"role": "user", "content": f"hi from {tenant}"}]},
                         _config(thread), context={"tenant": tenant})
        for tenant in ("acme", "globex"):
            scoped = store.with_tenant(tenant)
            conversation = conversation_id_for(thread, tenant=tenant)
            assert scoped.get_conversation(conversation).tenant_id == tenant
            nodes = scoped.tree(conversation)
            assert len(nodes) == 2 and nodes[0].content == f"hi from {tenant}"


# --- the chat history ----------------------------------------------------------------------


def _chain(server: FakeOpenAI, history_of: Callable[[str], Any]) -> Any:
    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM), MessagesPlaceholder("history"), ("human", "{question}")])
    model = ChatOpenAI(base_url=server.base_url, api_key="x", model=MODEL, max_retries=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # RunnableWithMessageHistory is deprecated
        return RunnableWithMessageHistory(prompt | model, history_of,
                                          input_messages_key="question",
                                          history_messages_key="history")


def test_runnable_with_message_history(shell: str, db_url: str) -> None:
    session = f"session-{uuid.uuid4()}"

    def body(store: Any, invoke: Callable[..., Any]) -> Any:
        with FakeOpenAI() as server:
            chain = _chain(server, lambda sid: ConvotreeChatMessageHistory(store, sid))
            config = {"configurable": {"session_id": session}}
            for question in ("Plan a trip to Lisbon", "Make it three days"):
                invoke(chain, {"question": question}, config)
            return server.bodies

    bodies = _run(shell, db_url, body)
    assert [m["content"] for m in bodies[1]["messages"]] == [
        SYSTEM, "Plan a trip to Lisbon", "Notes: Plan a trip to Lisbon", "Make it three days"]
    with convotree.Store(db_url) as store:
        history = ConvotreeChatMessageHistory(store, session)
        messages = history.messages
        assert [type(m).__name__ for m in messages] == ["HumanMessage", "AIMessage"] * 2
        assert messages[-1].content == "Notes: Make it three days"
        assert messages[-1].usage_metadata is not None
        conversation = conversation_id_for(session)
        answer = store.path(store.current(conversation))[-1]
        assert answer.model == f"{MODEL}-2024-07-18" and answer.input_tokens is not None


def test_history_async_methods_clear_and_start_over(db_url: str) -> None:
    session = f"session-{uuid.uuid4()}"

    async def main() -> None:
        async with convotree.AsyncStore(db_url) as store:
            history = ConvotreeChatMessageHistory(store, session)
            assert await history.aget_messages() == []
            await history.aadd_messages([HumanMessage("hi", id="h1"),
                                         AIMessage("hello", id="a1")])
            await history.aadd_messages([HumanMessage("again", id="h2")])
            assert [m.id for m in await history.aget_messages()] == ["h1", "a1", "h2"]
            with pytest.raises(ConfigurationError):
                history.messages   # noqa: B018 - the sync side refuses an AsyncStore
            before = await history.aget_messages()
            with pytest.raises(InvalidContent):
                await history.aadd_messages([HumanMessage("ok"), HumanMessage("bad \x00")])
            assert await history.aget_messages() == before          # all or nothing
            await history.astart_over()
            assert await history.aget_messages() == []
            await history.aadd_messages([HumanMessage("fresh", id="h3")])
            conversation = conversation_id_for(session)
            assert len(await store.roots(conversation)) == 2           # old branch kept
            assert [m.content for m in await history.aget_messages()] == ["fresh"]
            await history.aclear()
            assert await history.aget_messages() == []
            with pytest.raises(convotree.errors.ConversationNotFound):
                await store.get_conversation(conversation)

    asyncio.run(main())


def test_history_concurrent_first_writes_all_land(db_url: str) -> None:
    """Several writers of a new session at once: one creates the conversation, the
    others append to it (no ConversationExists, no message lost)."""
    session = f"race-{uuid.uuid4()}"

    async def main() -> None:
        async with convotree.AsyncStore(db_url) as store:
            writes = [ConvotreeChatMessageHistory(store, session).aadd_messages(
                [HumanMessage(f"hi {index}", id=f"h{index}")]) for index in range(4)]
            results = await asyncio.gather(*writes, return_exceptions=True)
            assert results == [None] * 4
            nodes = await store.tree(conversation_id_for(session))
            assert sorted(n.content for n in nodes) == [f"hi {index}" for index in range(4)]

    asyncio.run(main())


def test_history_refuses_what_is_not_a_message_with_a_typed_error(db_url: str) -> None:
    with convotree.Store(db_url) as store:
        history = ConvotreeChatMessageHistory(store, f"s-{uuid.uuid4()}")
        before = table_counts(store)
        for bad in ("hi", {"role": "user", "content": "hi"}, None):
            with pytest.raises(InvalidContent):
                history.add_messages([HumanMessage("ok"), bad])  # type: ignore[list-item]
        assert table_counts(store) == before and history.messages == []


def test_history_sync_and_its_clear_option(db_url: str) -> None:
    with convotree.Store(db_url) as store:
        history = ConvotreeChatMessageHistory(store, f"s-{uuid.uuid4()}", on_clear="start_over")
        history.add_user_message("hi")
        history.add_ai_message("hello")
        assert [m.content for m in history.messages] == ["hi", "hello"]
        history.clear()    # start over: nothing deleted
        assert history.messages == []
        assert len(store.tree(history.conversation_id)) == 2
        fresh = ConvotreeChatMessageHistory(store, f"s-{uuid.uuid4()}")
        before = table_counts(store)
        with pytest.raises(InvalidContent):
            fresh.add_messages([HumanMessage("ok"), AIMessage("lone \udc00")])
        assert table_counts(store) == before and fresh.messages == []
        with pytest.raises(InvalidArgument):
            ConvotreeChatMessageHistory(store)
        with pytest.raises(InvalidArgument):
            ConvotreeChatMessageHistory(store, "s", on_clear="wipe")  # type: ignore[arg-type]
        # A conversation made by convotree itself reads as LangChain messages too.
        conv = store.create_conversation()
        root = store.append(conv, role="system", content="Be brief.")
        store.append(conv, parent=root, role="user", content="hi")
        read = ConvotreeChatMessageHistory(store, conversation=conv.id).messages
        assert [(type(m).__name__, m.content) for m in read] == [
            ("SystemMessage", "Be brief."), ("HumanMessage", "hi")]


# --- packaging ----------------------------------------------------------------------------


def test_import_convotree_imports_no_framework() -> None:
    code = ("import sys, convotree, convotree.adapters; "
            "print(any(m.split('.')[0] in ('langchain', 'langchain_core', 'langgraph') "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_without_langchain_the_import_names_the_extra() -> None:
    code = ("import sys; sys.modules['langchain'] = None\n"
            "try:\n    import convotree.adapters.langchain\n"
            "except ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert 'pip install "convotree[langchain]"' in out


@pytest.mark.slow
def test_the_example_runs_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "adapter_langchain.py"),
         str(tmp_path / "agent.db")],
        capture_output=True, text=True, env=env, timeout=120, check=True)
    assert "graph state: 12 messages" in result.stdout
    assert "requests that carried a summary: 3; summaries made: 2" in result.stdout
    assert "the thread read back as a chat history: 12 messages" in result.stdout
