"""``convotree.adapters.agents.ConvotreeSession`` through the real Agents SDK ``Runner``.

Every scenario runs on SQLite and PostgreSQL, with the SDK's own models
(``OpenAIResponsesModel`` / ``OpenAIChatCompletionsModel``) talking HTTP to
``convotree.testing.FakeOpenAI``; what the model received is read from the server's
recorded request bodies. ``Store.tail`` (the bounded read ``get_items`` uses) is tested
on both shells here too.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

import convotree
from convotree.errors import (
    ConfigurationError,
    ContentTooLarge,
    ConversationExists,
    ConversationNotFound,
    ConvotreeError,
    InvalidArgument,
    InvalidContent,
    InvalidRole,
    NodeNotFound,
)
from convotree.testing import FakeOpenAI, Reply

from . import sql_audit
from .conftest import table_counts

agents = pytest.importorskip("agents")
from agents import Agent, RunConfig, Runner, function_tool  # noqa: E402
from agents.memory import SQLiteSession  # noqa: E402
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel  # noqa: E402
from agents.models.openai_responses import OpenAIResponsesModel  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

from convotree.adapters.agents import (  # noqa: E402
    ConvotreeSession,
    drop_orphans,
    session_id_for_key,
)

TWINS = True   # the Store.tail tests run on Store and AsyncStore
ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

agents.set_tracing_disabled(True)


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@function_tool(needs_approval=True)
def delete_file(path: str) -> str:
    """Delete a file (asks for approval first)."""
    return f"deleted {path}"


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _agent(server: FakeOpenAI, api: str = "responses", **options: Any) -> Agent[Any]:
    client = AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    model: Any = (OpenAIResponsesModel("gpt-4o-mini", client) if api == "responses"
                  else OpenAIChatCompletionsModel("gpt-4o-mini", client))
    options.setdefault("tools", [weather])
    return Agent(name="helper", instructions="Be brief.", model=model, **options)


async def _open(url: str, **options: Any) -> convotree.AsyncStore:
    return await convotree.AsyncStore.open(url, **options)


def _key() -> str:
    return f"test-{uuid.uuid4().hex}"


def _inputs(server: FakeOpenAI, start: int = 0) -> list[Any]:
    """What the model received on each request since ``start`` (Responses or Chat)."""
    return [body.get("input", body.get("messages")) for body in server.bodies[start:]]


# --- Store.tail ------------------------------------------------------------------------


def _chain(store: Any, size: int) -> tuple[Any, list[Any]]:
    conv = store.create_conversation()
    made, parent = [], None
    for i in range(size):
        parent = store.append(conv, parent=parent, role="user" if i % 2 == 0 else "assistant",
                              content=f"message {i}")
        made.append(parent)
    return conv, made


def test_tail_is_the_newest_nodes_oldest_first(store: Any) -> None:
    conv, made = _chain(store, 12)
    assert [n.id for n in store.tail(made[-1], 5)] == [n.id for n in made[-5:]]
    assert [n.id for n in store.tail(made[6], 3)] == [n.id for n in made[4:7]]
    assert [n.id for n in store.tail(conv, 4)] == [n.id for n in made[-4:]]   # current
    assert [n.id for n in store.tail(conv.id, 100)] == [n.id for n in made]
    assert store.tail(made[0], 1)[0].id == made[0].id
    store.append(conv, parent=made[3], role="assistant", content="a fork")
    assert [n.content for n in store.tail(conv, 3)] == ["message 2", "message 3", "a fork"]
    assert store.tail(store.create_conversation(), 3) == []


def test_tail_is_one_statement_bounded_by_its_limit(store: Any) -> None:
    conv, _made = _chain(store, 40)
    with sql_audit.capture() as log:
        found = store.tail(conv, 3)
    on_nodes = [s for s in log if "convotree_nodes" in s]
    assert len(on_nodes) == 1 and len(found) == 3


def test_tail_refuses_bad_arguments_and_other_tenants(store: Any, db_url: str,
                                                      open_store: Callable[..., Any]) -> None:
    conv, made = _chain(store, 3)
    for bad in (0, -1, "3", 2.0, True, 2**31):
        with pytest.raises(InvalidArgument):
            store.tail(made[-1], bad)
    with pytest.raises(NodeNotFound):
        store.tail(convotree.models.Node(**{**_fields(made[-1]), "id": uuid.uuid4()}), 2)
    with pytest.raises(ConversationNotFound):
        store.tail(uuid.uuid4(), 2)
    other = open_store(db_url, tenant="someone-else")
    with pytest.raises(ConversationNotFound):
        other.tail(conv, 2)
    with pytest.raises(ConversationNotFound):   # as path() says: the conversation is unknown
        other.tail(made[-1], 2)


def _fields(node: Any) -> dict[str, Any]:
    return {name: getattr(node, name) for name in node.__dataclass_fields__}


# --- the session through the Runner -------------------------------------------------------


def test_runner_turns_tools_rewind_fork_and_compaction(db_url: str) -> None:
    async def scenario() -> None:
        store = await _open(db_url)
        with FakeOpenAI() as server:
            agent = _agent(server)
            compactor = AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            session = ConvotreeSession(store, key=_key(), compaction_client=compactor,
                                       compaction_model="gpt-4o-mini")
            hooks = session.usage_hooks()
            first = await Runner.run(agent, "Plan a trip to Lisbon", session=session,
                                     hooks=hooks)
            assert first.final_output == "Notes: Plan a trip to Lisbon"
            server.script(Reply(tool_calls=(("c1", "weather", '{"city": "Lisbon"}'),)),
                          Reply(text="Sunny: pack light."))
            second = await Runner.run(agent, "Weather there?", session=session, hooks=hooks)
            assert second.final_output == "Sunny: pack light."
            # The model saw the whole history, then the tool result, in order.
            sent = server.bodies[-1]["input"]
            assert [i.get("type", "message") for i in sent] == [
                "message", "message", "message", "function_call", "function_call_output"]
            items = await session.get_items()
            assert len(items) == 6 and items[3]["type"] == "function_call"
            assert await session.get_items(2) == items[-2:]

            # Columns: the call and its result are a tool call and its result.
            path = await store.path(await store.current(session.conversation_id))
            assert [n.role for n in path] == ["user", "assistant", "user", "assistant",
                                              "tool", "assistant"]
            assert path[3].tool_calls[0]["function"]["name"] == "weather"
            assert path[4].tool_call_id == "c1" and path[4].content == "sunny in Lisbon"
            # Usage landed on the answer nodes.
            answers = [n for n in path if n.response_id]
            assert [n.response_id for n in answers] == ["resp_1", "resp_2", "resp_3"]
            assert all(n.model == "gpt-4o-mini" and n.input_tokens and n.output_tokens
                       for n in answers)

            # Rewind: pop the last answer and the tool exchange, then ask again.
            popped = [await session.pop_item() for _ in range(3)]
            assert popped == list(reversed(items[3:]))
            server.script(Reply(text="Bring a jacket."))
            third = await Runner.run(agent, "Actually, rain?", session=session)
            assert third.final_output == "Bring a jacket."
            assert [i.get("content") for i in server.bodies[-1]["input"]
                    if i.get("role") == "user"] == [
                        "Plan a trip to Lisbon", "Weather there?", "Actually, rain?"]

            # A fork from the first answer shares that history, copies nothing.
            before = len(await store.tree(session.conversation_id))
            answer_node = (await session.nodes(10))[1]
            fork = await session.fork(answer_node)
            assert fork.session_id == session.session_id
            server.script(Reply(text="Porto instead."))
            await Runner.run(agent, "What about Porto?", session=fork)
            assert [i.get("content") for i in server.bodies[-1]["input"]
                    if i.get("role") == "user"] == ["Plan a trip to Lisbon",
                                                    "What about Porto?"]
            assert len(await store.tree(session.conversation_id)) == before + 2
            assert len(await session.branches()) == 2
            main_items = await session.get_items()
            assert main_items[-2]["content"] == "Actually, rain?"   # the main branch stays
            await session.switch((await fork.nodes(1))[0])
            assert (await session.get_items())[-2]["content"] == "What about Porto?"

            # Compaction: a summary node under the leaf; the transcript stays whole.
            kept = await session.get_items()
            await session.run_compaction()
            assert server.calls[-1]["path"].endswith("/responses/compact")
            assert await session.get_items() == kept
            tree = await store.tree(session.conversation_id)
            summaries = [n for n in tree if n.kind == "summary"]
            assert len(summaries) == 1 and summaries[0].api_items[-1]["type"] == "compaction"
            # The budgeted input sends the compaction instead of what it covers.
            config = RunConfig(call_model_input_filter=session.model_input_filter(
                model="gpt-4o-mini"))
            server.script(Reply(text="Done."))
            await Runner.run(agent, "Thanks", session=session, run_config=config)
            sent = server.bodies[-1]["input"]
            assert any(i.get("type") == "compaction" for i in sent)
            assert sent[-1]["content"] == "Thanks"
            assert session.last_context.report.summary_id == summaries[0].id
        await store.close()

    run(scenario())


def test_same_model_inputs_as_the_sdks_sqlite_session(db_url: str) -> None:
    """The same turns through ``SQLiteSession`` and ``ConvotreeSession``: the model gets
    the same input on every request (both APIs), and the histories are equal."""
    async def turns(session: Any, api: str) -> list[Any]:
        with FakeOpenAI() as server:
            agent = _agent(server, api)
            await Runner.run(agent, "Hello", session=session)
            server.script(Reply(tool_calls=(("c1", "weather", '{"city": "Oslo"}'),
                                            ("c2", "weather", '{"city": "Rome"}'))),
                          Reply(text="Oslo and Rome are sunny."))
            await Runner.run(agent, "Weather in Oslo and Rome?", session=session)
            await Runner.run(agent, "And tomorrow?", session=session)
            await session.pop_item()       # rewind the last answer
            await Runner.run(agent, "Thanks", session=session)
            return [*_inputs(server), await session.get_items()]

    async def scenario() -> None:
        store = await _open(db_url)
        for api in ("responses", "chat"):
            reference = await turns(SQLiteSession(f"s-{api}"), api)
            ours = await turns(ConvotreeSession(store, key=_key()), api)
            assert len(ours) == len(reference) == 6
            for number, (got, want) in enumerate(zip(ours, reference, strict=True)):
                assert got == want, f"{api}: request {number} differs"
        await store.close()

    run(scenario())


UNMODELLED: list[dict[str, Any]] = [
    {"role": "developer", "content": "Use tools when useful."},
    {"type": "message", "role": "user",
     "content": [{"type": "input_text", "text": "Find news"},
                 {"type": "input_image", "image_url": "https://example.com/a.png",
                  "detail": "auto"}]},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text",
                                                     "text": "Searching the web."}],
     "encrypted_content": "gAAAA-opaque"},
    {"type": "web_search_call", "id": "ws_1", "status": "completed",
     "action": {"type": "search", "query": "news"}},
    {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "docs",
     "tools": [{"name": "lookup", "input_schema": {"type": "object"}}]},
    {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "docs",
     "name": "lookup", "arguments": "{}"},
    {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True},
    {"type": "mcp_call", "id": "mcp_1", "server_label": "docs", "name": "lookup",
     "arguments": "{}", "output": "found it"},
    {"type": "computer_call", "id": "cu_1", "call_id": "cc_1", "status": "completed",
     "action": {"type": "click", "x": 10, "y": 20, "button": "left"},
     "pending_safety_checks": []},
    {"type": "computer_call_output", "call_id": "cc_1",
     "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,AAAA"}},
    {"type": "function_call", "id": "fc_1", "call_id": "p1", "name": "weather",
     "arguments": "{\"city\": \"Oslo\"}", "status": "completed"},
    {"type": "function_call", "id": "fc_2", "call_id": "p2", "name": "weather",
     "arguments": "{\"city\": \"Rome\"}", "status": "completed"},
    {"type": "function_call_output", "call_id": "p1", "output": "sunny"},
    {"type": "function_call_output", "call_id": "p2",
     "output": [{"type": "input_text", "text": "rainy"}]},
    {"type": "custom_tool_call", "id": "ctc_1", "call_id": "k1", "name": "grammar",
     "input": "x = 1"},
    {"type": "custom_tool_call_output", "call_id": "k1", "output": "ok"},
    {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "QUFB"},
    {"type": "compaction", "id": "cmp_1", "encrypted_content": "ENCRYPTED"},
    {"type": "item_reference", "id": "msg_old"},
    {"id": "msg_9", "type": "message", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": "Here is the news.", "annotations": [],
                  "logprobs": []}]},
]


def test_items_round_trip_exactly_including_unmodelled_types(db_url: str) -> None:
    async def scenario() -> None:
        store = await _open(db_url)
        session = ConvotreeSession(store, key=_key())
        given = json.loads(json.dumps(UNMODELLED))
        await session.add_items(given[:9])
        await session.add_items(given[9:])           # across two writes
        assert given == UNMODELLED                     # the caller's list is untouched
        assert await session.get_items() == UNMODELLED
        for limit in (1, 3, 7, len(UNMODELLED), 500):
            assert await session.get_items(limit) == UNMODELLED[-limit:]
        path = await store.path(await store.current(session.conversation_id))
        assert len(path) == len(UNMODELLED)
        by_type = {(n.metadata or {})["agents_item"]: n for n in path}
        assert by_type["reasoning"].content == "Searching the web."
        assert path[1].content == "Find news" and path[0].role == "developer"
        # Parallel calls are not paired (convotree would refuse a call after a call);
        # the custom tool call and its result, next to each other, are.
        assert path[10].tool_calls is None and path[12].role == "user"
        assert path[14].tool_calls[0]["custom"]["name"] == "grammar"
        assert path[15].role == "tool" and path[15].tool_call_id == "k1"
        popped = [await session.pop_item() for _ in range(len(UNMODELLED))]
        assert popped == list(reversed(UNMODELLED))
        assert await session.pop_item() is None and await session.get_items() == []
        await store.close()

    run(scenario())


def test_approval_stores_the_call_before_its_output(db_url: str) -> None:
    async def scenario() -> None:
        store = await _open(db_url)
        with FakeOpenAI() as server:
            agent = _agent(server, tools=[delete_file])
            session = ConvotreeSession(store, key=_key())
            server.script(Reply(tool_calls=(("a1", "delete_file", '{"path": "/tmp/x"}'),)),
                          Reply(text="Deleted."))
            result = await Runner.run(agent, "Delete /tmp/x", session=session)
            assert result.interruptions
            stored = await session.get_items()
            assert stored[-1]["type"] == "function_call"        # before any output
            state = result.to_state()
            state.approve(result.interruptions[0])
            resumed = await Runner.run(agent, state, session=session)
            assert resumed.final_output == "Deleted."
            items = await session.get_items()
            assert [i.get("type", "message") for i in items] == [
                "message", "function_call", "function_call_output", "message"]
            assert items[2]["output"] == "deleted /tmp/x"
            # An approval left unanswered does not block the next run.
            server.script(Reply(tool_calls=(("a2", "delete_file", '{"path": "/y"}'),)))
            pending = await Runner.run(agent, "Delete /y", session=session)
            assert pending.interruptions
            server.script(Reply(text="Fine, kept."))
            later = await Runner.run(agent, "Never mind", session=session)
            assert later.final_output == "Fine, kept."
            assert all(i.get("call_id") != "a2" for i in server.bodies[-1]["input"])
        await store.close()

    run(scenario())


def test_pop_only_moves_back_where_other_branches_continue(db_url: str) -> None:
    async def scenario() -> None:
        store = await _open(db_url)
        session = ConvotreeSession(store, key=_key())
        await session.add_items([{"role": "user", "content": "a"},
                                 {"role": "assistant", "content": "b"}])
        nodes = await session.nodes()
        fork = await session.fork(nodes[0])
        await fork.add_items([{"role": "assistant", "content": "c"}])
        await session.switch(nodes[0])                    # current: an inner node
        assert await session.pop_item() == {"role": "user", "content": "a"}
        assert await session.get_items() == []
        assert len(await store.tree(session.conversation_id)) == 3   # nothing deleted
        await session.switch(nodes[1])
        assert await session.pop_item() == {"role": "assistant", "content": "b"}
        assert len(await store.tree(session.conversation_id)) == 2
        assert await fork.get_items() == [{"role": "user", "content": "a"},
                                          {"role": "assistant", "content": "c"}]
        # A call whose output was popped: the next items may be anything.
        await session.add_items([
            {"type": "function_call", "call_id": "z", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "z", "output": "sunny"}])
        await session.pop_item()
        await session.add_items([{"role": "user", "content": "go on"}])
        assert [i.get("type", "message") for i in await session.get_items()] == [
            "message", "function_call", "message"]
        await store.close()

    run(scenario())


def test_clear_deletes_restart_keeps(db_url: str) -> None:
    async def scenario() -> None:
        store = await _open(db_url)
        session = ConvotreeSession(store, key=_key(), title="kept")
        await session.add_items([{"role": "user", "content": "first"}])
        await session.restart()
        assert await session.get_items() == []
        await session.add_items([{"role": "user", "content": "second"}])
        assert len(await store.roots(session.conversation_id)) == 2
        assert (await store.get_conversation(session.conversation_id)).title == "kept"
        await session.clear_session()
        with pytest.raises(ConversationNotFound):
            await store.get_conversation(session.conversation_id)
        assert await session.get_items() == [] and await session.branches() == []
        await session.clear_session()                       # idempotent
        await session.add_items([{"role": "user", "content": "again"}])
        assert await session.get_items() == [{"role": "user", "content": "again"}]
        await store.close()

    run(scenario())


def test_budgeted_input_keeps_system_and_makes_one_summary(db_url: str) -> None:
    async def scenario() -> None:
        store = await _open(db_url)
        with FakeOpenAI() as server:
            agent = _agent(server)
            session = ConvotreeSession(store, key=_key())
            await session.add_items([{"role": "system", "content": "Always answer in French."}])
            for turn in range(12):
                await session.add_items([
                    {"role": "user", "content": f"Question {turn}: " + "words " * 30},
                    {"role": "assistant", "content": f"Answer {turn}: " + "more " * 30}])
            summarizer = convotree.ExtractiveSummarizer()
            config = RunConfig(call_model_input_filter=session.model_input_filter(
                model="gpt-4o-mini", budget=400, summarizer=summarizer))
            for ask in ("Next?", "And then?"):
                await Runner.run(agent, ask, session=session, run_config=config)
            first, second = server.bodies[-2]["input"], server.bodies[-1]["input"]
            assert first[0] == {"role": "system", "content": "Always answer in French."}
            assert first[1]["role"] == "system" and "Summary" in first[1]["content"]
            assert first[-1]["content"] == "Next?" and second[-1]["content"] == "And then?"
            assert len(first) < 10 and session.last_context.tokens <= 400
            summaries = [n for n in await store.tree(session.conversation_id)
                         if n.kind == "summary"]
            assert len(summaries) == 1                      # made once, reused
            assert len(await session.get_items()) == 1 + 24 + 4   # the transcript is whole
        await store.close()

    run(scenario())


def test_usage_is_queryable_in_sql(db_url: str) -> None:
    async def scenario() -> uuid.UUID:
        store = await _open(db_url)
        with FakeOpenAI() as server:
            agent = _agent(server, "chat")
            session = ConvotreeSession(store, key=_key())
            server.script(Reply(text="one", cached_tokens=3))
            await Runner.run(agent, "a", session=session, hooks=session.usage_hooks())
            await Runner.run(agent, "b", session=session, hooks=session.usage_hooks())
            billed = [c["body"] for c in server.calls]
        await store.close()
        assert len(billed) == 2
        return session.conversation_id

    conversation_id = run(scenario())
    engine = sa.create_engine(db_url)
    with sql_audit.unaudited(), engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT model, input_tokens, output_tokens, cached_tokens, response_id "
            "FROM convotree_nodes WHERE conversation_id = :c AND response_id IS NOT NULL "
            "ORDER BY depth"), {"c": conversation_id if engine.dialect.name == "postgresql"
                                else conversation_id.hex}).all()
    engine.dispose()
    assert [r.model for r in rows] == ["gpt-4o-mini", "gpt-4o-mini"]
    assert rows[0].cached_tokens == 3 and all(r.input_tokens > 0 for r in rows)


# --- hostile input --------------------------------------------------------------------


HOSTILE: list[tuple[Any, type[ConvotreeError]]] = [
    ("not a list", InvalidArgument),
    ({"role": "user", "content": "a dict, not a list"}, InvalidArgument),
    (["a string item"], InvalidContent),
    ([{"role": "user", "content": "ok"}, 42], InvalidContent),
    ([{"content": "no role, no type"}], InvalidContent),
    ([{"role": "tool", "content": "chat-style tool message"}], InvalidRole),
    ([{"role": "wizard", "content": "x"}], InvalidRole),
    ([{"type": 7}], InvalidContent),
    ([{"type": ""}], InvalidContent),
    ([{"role": "user", "content": 12}], InvalidContent),
    ([{"role": "user", "content": ["bare string part"]}], InvalidContent),
    ([{"role": "user", "content": "nul \x00 byte"}], InvalidContent),
    ([{"role": "user", "content": "lone \ud800 surrogate"}], InvalidContent),
    ([{"type": "reasoning", "encrypted_content": "a\x00b"}], InvalidContent),
    ([{"type": "custom", "blob": b"bytes"}], InvalidContent),
    ([{"type": "custom", 1: "int key"}], InvalidContent),
    ([{"type": "custom", "value": float("nan")}], InvalidContent),
    ([{"role": "user", "content": "x" * (5 * 1024 * 1024)}], ContentTooLarge),
    ([{"role": "user", "content": "fine"}, {"type": "function_call_output", "call_id": "q",
                                            "output": "\x00"}], InvalidContent),
]


@pytest.mark.parametrize(("items", "error"), HOSTILE,
                         ids=[f"hostile-{i}" for i in range(len(HOSTILE))])
def test_bad_items_are_refused_and_nothing_is_written(db_url: str, items: Any,
                                                      error: type[ConvotreeError]) -> None:
    async def scenario() -> None:
        store = await _open(db_url)
        sync = convotree.Store(db_url)
        session = ConvotreeSession(store, key=_key())
        await session.add_items([{"role": "user", "content": "before"}])
        before = table_counts(sync)
        with pytest.raises(error):
            await session.add_items(items)
        assert table_counts(sync) == before
        assert await session.get_items() == [{"role": "user", "content": "before"}]
        sync.close()
        await store.close()

    run(scenario())


def test_bad_arguments_are_typed(db_url: str) -> None:
    async def scenario() -> None:
        store = await _open(db_url)
        with pytest.raises(ConfigurationError):
            ConvotreeSession(convotree.Store(db_url))  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            ConvotreeSession(store, "not-a-uuid")
        with pytest.raises(InvalidArgument):
            ConvotreeSession(store, key="")
        with pytest.raises(InvalidArgument):
            ConvotreeSession(store, uuid.uuid4(), key="both")
        session = ConvotreeSession(store, key=_key())
        assert isinstance(session, agents.memory.Session)
        assert isinstance(session, agents.memory.OpenAIResponsesCompactionAwareSession)
        with pytest.raises(InvalidArgument):
            await session.get_items("3")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            await session.fork()                               # nothing to fork from
        with pytest.raises(ConfigurationError):
            await session.run_compaction()                     # no client
        with pytest.raises(InvalidArgument):
            session.model_input_filter(model="")
        await store.close()

    run(scenario())


def test_keys_map_to_stable_ids_per_tenant(db_url: str) -> None:
    assert session_id_for_key("u1") == session_id_for_key("u1")
    assert session_id_for_key("u1") != session_id_for_key("u1", tenant="acme")
    # The separator of the derived name cannot be smuggled into a key: two different
    # (tenant, key) pairs never share an id.
    for bad in ("b\x1fc", "a\x00", "\ud800", "k" * 1025):
        with pytest.raises(InvalidArgument):
            session_id_for_key(bad, tenant="a")

    async def scenario() -> None:
        store = await _open(db_url)
        key = _key()
        acme = ConvotreeSession(store.with_tenant("acme"), key=key)
        other = ConvotreeSession(store.with_tenant("globex"), key=key)
        await acme.add_items([{"role": "user", "content": "acme's"}])
        assert await other.get_items() == []
        assert await ConvotreeSession(store.with_tenant("acme"), key=key).get_items() == [
            {"role": "user", "content": "acme's"}]
        # A conversation id another tenant holds is refused, not shared.
        intruder = ConvotreeSession(store.with_tenant("globex"), acme.conversation_id)
        with pytest.raises(ConversationExists):
            await intruder.add_items([{"role": "user", "content": "hi"}])
        await store.close()

    run(scenario())


def test_drop_orphans_keeps_whole_tool_exchanges() -> None:
    items = [{"type": "function_call_output", "call_id": "gone", "output": "x"},
             {"role": "user", "content": "q"},
             {"type": "reasoning", "id": "rs"},
             {"type": "function_call", "call_id": "open", "name": "f", "arguments": "{}"},
             {"type": "function_call", "call_id": "done", "name": "f", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "done", "output": "y"}]
    assert drop_orphans(items) == [items[1], items[4], items[5]]


@pytest.mark.slow
def test_example_runs_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "adapter_agents.py"), str(tmp_path / "a.db")],
        capture_output=True, text=True, env=env, timeout=120, check=True)
    assert "branches: 2" in result.stdout
    assert "transcript kept" in result.stdout


def test_streamed_runs_store_the_same_items(db_url: str) -> None:
    async def scenario() -> None:
        store = await _open(db_url)
        with FakeOpenAI() as server:
            agent = _agent(server)
            session = ConvotreeSession(store, key=_key())
            server.script(Reply(tool_calls=(("s1", "weather", '{"city": "Nice"}'),)),
                          Reply(text="Sunny in Nice."))
            streamed = Runner.run_streamed(agent, "Weather in Nice?", session=session,
                                           hooks=session.usage_hooks())
            async for _ in streamed.stream_events():
                pass
            assert streamed.final_output == "Sunny in Nice."
            items = await session.get_items()
            assert [i.get("type", "message") for i in items] == [
                "message", "function_call", "function_call_output", "message"]
            await Runner.run(agent, "And Paris?", session=session)
            assert server.bodies[-1]["input"][:4] == items
        await store.close()

    run(scenario())


def test_a_missing_sdk_names_the_extra() -> None:
    code = ("import sys; sys.modules['agents'] = None\n"
            "import convotree\n"
            "try:\n"
            "    import convotree.adapters.agents\n"
            "except ImportError as exc:\n"
            "    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert 'pip install "convotree[agents]"' in out
    plain = subprocess.run([sys.executable, "-c", "import convotree, sys; "
                            "print('agents' in sys.modules)"],
                           capture_output=True, text=True, check=True, timeout=60).stdout
    assert plain.strip() == "False"


def test_the_runner_compacts_past_the_threshold_and_keeps_the_transcript(db_url: str
                                                                         ) -> None:
    async def scenario() -> None:
        store = await _open(db_url)
        with FakeOpenAI() as server:
            agent = _agent(server)
            client = AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
            quiet = ConvotreeSession(store, key=_key(), compaction_client=client)
            await Runner.run(agent, "word " * 200, session=quiet)    # no threshold: no call
            assert not any(c["path"].endswith("/compact") for c in server.calls)
            session = ConvotreeSession(store, key=_key(), compaction_client=client,
                                       compaction_model="gpt-4o-mini", compact_threshold=60)
            await Runner.run(agent, "Short hello", session=session)
            assert not any(c["path"].endswith("/compact") for c in server.calls)
            await Runner.run(agent, "A longer question " + "about trains " * 30,
                             session=session)
            compacts = [c for c in server.calls if c["path"].endswith("/compact")]
            assert len(compacts) == 1
            assert len(await session.get_items()) == 4            # nothing deleted
            summaries = [n for n in await store.tree(session.conversation_id)
                         if n.kind == "summary"]
            assert len(summaries) == 1
            # Right after it, the branch since the summary is short: no second call.
            await Runner.run(agent, "ok", session=session)
            assert len([c for c in server.calls if c["path"].endswith("/compact")]) == 1
        await store.close()

    run(scenario())
