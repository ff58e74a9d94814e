"""The chat helper against a local server speaking the OpenAI wire format.

The real ``openai`` client makes real HTTP requests to ``FakeOpenAI``; the tests
assert on the exact request bodies the server received (the context that was sent)
and on what the store holds afterwards, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import sqlalchemy as sa

import convotree
from convotree import Chat, ExtractiveSummarizer, Node
from convotree.errors import InvalidContent, ToolCallMismatch, ToolStepLimit
from convotree.testing import FakeOpenAI, Reply
from convotree.tokens import count_messages

from .conftest import table_counts
from .twins import make_chat

#: Every test below on Chat + Store and on AsyncChat + AsyncStore (tests/twins.py).
TWINS = True


def chat_of(store: Any, server: FakeOpenAI, client_options: dict[str, Any] | None = None,
            **options: Any) -> Any:
    """The chat of the test's shell, with a real client (sync or async) of ``server``."""
    kwargs = client_options or {}
    return make_chat(store, lambda asynchronous: server.async_client(**kwargs) if asynchronous
                     else server.client(**kwargs), **options)

WEATHER_TOOL = {"type": "function", "function": {
    "name": "weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(params=["chat", "responses"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def sent(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The context a request carried, whichever API it went to."""
    return list(body["messages"] if "messages" in body else body["input"])


def texts(body: dict[str, Any]) -> list[str]:
    return [str(m.get("content")) for m in sent(body) if "content" in m]


def chat_messages(path: list[Node]) -> list[dict[str, Any]]:
    return [node.to_message() for node in path]


# --- turns ------------------------------------------------------------------------------


def test_twenty_turn_chat_sends_the_branch_and_records_usage(
        store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini")
    conv = store.create_conversation(title="long")
    store.append(conv, role="system", content="You are terse.")
    answer = None
    for turn in range(20):
        answer = chat.send(conv, f"Question number {turn}: what is {turn} squared?")
        body = server.bodies[-1]
        path = store.path(answer)
        # Exactly the branch up to the question was sent, in order, nothing else.
        assert body == {"model": "gpt-4o-mini", "messages": chat_messages(path[:-1])}
        assert answer.content == f"Notes: Question number {turn}: what is {turn} squared?"
        assert answer.model == "gpt-4o-mini-2024-07-18"
        assert answer.response_id == f"chatcmpl-{turn + 1}"
        assert answer.finish_reason == "stop"
        assert answer.input_tokens == count_messages(body["messages"], model="gpt-4o-mini")
        assert answer.counted_input_tokens == answer.input_tokens == chat.last.context.tokens
        assert answer.output_tokens is not None and answer.output_tokens > 0
        assert answer.cached_tokens == 0
        assert answer.metadata == {"api": "chat"}
        assert store.get_conversation(conv).current_node_id == answer.id
    assert answer is not None and answer.depth == 40
    assert len(server.calls) == 20


def test_responses_api_sends_items_with_store_false(
        store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api="responses")
    conv = store.create_conversation()
    store.append(conv, role="developer", content="Answer in French.")
    a1 = chat.send(conv, "Hello")
    a2 = chat.send(a1, "And goodbye?", temperature=0.2)
    assert server.bodies[-1] == {"model": "gpt-4o-mini", "store": False, "temperature": 0.2,
                                 "input": [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Notes: Hello"},
        {"role": "user", "content": "And goodbye?"},
    ]}
    assert a2.response_id == "resp_2" and a2.finish_reason == "completed"
    assert a2.input_tokens == a2.counted_input_tokens


def test_regenerate_and_edit_make_siblings(
        store: convotree.Store, server: FakeOpenAI, api: str) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api=api)
    conv = store.create_conversation()
    a1 = chat.send(conv, "Plan a trip to Lisbon")
    a2 = chat.send(a1, "Make it three days")
    server.script(Reply(text="Another plan"))
    b1 = chat.regenerate(a2)
    assert b1.parent_id == a2.parent_id and b1.id != a2.id
    assert b1.content == "Another plan"
    # The regenerated request is the same context as the first one.
    assert sent(server.bodies[-1]) == sent(server.bodies[-2])

    u2 = store.path(a2)[-2]
    c1 = chat.edit(u2, "Make it five days")
    u2_edited = store.path(c1)[-2]
    assert u2_edited.parent_id == u2.parent_id and u2_edited.content == "Make it five days"
    assert texts(server.bodies[-1])[-1] == "Make it five days"
    assert "Make it three days" not in texts(server.bodies[-1])
    assert {n.id for n in store.children(a1)} == {u2.id, u2_edited.id}
    assert store.get_conversation(conv).current_node_id == c1.id
    with pytest.raises(InvalidContent):
        chat.edit(a1, "assistants are regenerated, not edited")


def test_fork_from_turn_three_sends_nothing_of_the_other_branch(
        store: convotree.Store, server: FakeOpenAI, api: str) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api=api)
    conv = store.create_conversation()
    answers = []
    for turn in range(6):
        answers.append(chat.send(conv, f"main branch message {turn}"))
    fork = chat.send(answers[2], "fork question")
    body = server.bodies[-1]
    assert texts(body) == [
        "main branch message 0", "Notes: main branch message 0",
        "main branch message 1", "Notes: main branch message 1",
        "main branch message 2", "Notes: main branch message 2",
        "fork question"]
    assert not any(f"message {turn}" in text for turn in range(3, 6) for text in texts(body))
    assert fork.depth == 7 and len(store.leaves(conv)) == 2
    # Continuing the old branch afterwards still sends only that branch.
    chat.send(answers[5], "back on main")
    assert "fork question" not in texts(server.bodies[-1])


def test_send_at_conversation_uses_its_current_node(
        store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini")
    conv = store.create_conversation()
    a1 = chat.send(conv, "first")
    chat.send(a1, "second")
    store.set_current(conv, a1)       # the user switched back to the first answer
    a3 = chat.send(conv.id, "third")  # a stale Conversation object would say None
    assert store.path(a3)[-2].parent_id == a1.id


def test_budget_prunes_the_request(store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", budget=120)
    conv = store.create_conversation()
    store.append(conv, role="system", content="Be brief.")
    for turn in range(15):
        answer = chat.send(conv, f"turn {turn} " + "words " * 8)
        assert answer.input_tokens is not None and answer.input_tokens <= 120
        assert answer.input_tokens == answer.counted_input_tokens
        assert sent(server.bodies[-1])[0] == {"role": "system", "content": "Be brief."}
    assert chat.last is not None and chat.last.context.report.dropped


def test_summarizer_is_used_by_chat(store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", budget=200,
                summarizer=ExtractiveSummarizer())
    conv = store.create_conversation()
    for turn in range(12):
        chat.send(conv, f"fact {turn}: the code word is word{turn}. " + "filler " * 6)
    assert chat.last is not None
    report = chat.last.context.report
    assert report.summary_id is not None
    summary_message = sent(server.bodies[-1])[0]
    assert summary_message["role"] == "system"
    assert chat.last.context.tokens <= 200


# --- streaming ----------------------------------------------------------------------------


def test_stream_yields_deltas_and_stores_usage(
        store: convotree.Store, server: FakeOpenAI, api: str) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api=api)
    conv = store.create_conversation()
    server.script(Reply(text="Lisbon is lovely in May"))
    stream = chat.stream(conv, "When should I go?")
    deltas = list(stream)
    assert deltas == ["Lisbon", " is", " lovely", " in", " May"]
    node = stream.node
    assert node is not None and node.content == "Lisbon is lovely in May"
    assert node.input_tokens is not None and node.input_tokens == node.counted_input_tokens
    assert node.output_tokens is not None and node.metadata == {"api": api}
    body = server.bodies[-1]
    assert body["stream"] is True
    if api == "chat":
        assert body["stream_options"] == {"include_usage": True}
        assert node.finish_reason == "stop"
    else:
        assert body["store"] is False and node.finish_reason == "completed"
    assert stream.turn is not None and not stream.turn.incomplete
    assert store.get_conversation(conv).current_node_id == node.id


def test_stream_cut_halfway_stores_what_arrived_once(
        store: convotree.Store, server: FakeOpenAI, api: str) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api=api)
    conv = store.create_conversation()
    server.script(Reply(text="one two three four five six", cut_after=3))
    stream = chat.stream(conv, "count")
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        received.extend(stream)
    assert received == ["one", " two", " three"]
    node = stream.node
    assert node is not None and node.content == "one two three"
    assert node.metadata is not None and node.metadata["incomplete"] is True
    assert "APIConnectionError" in node.metadata["error"]
    assert node.input_tokens is None and node.finish_reason is None
    assert stream.turn is not None and stream.turn.incomplete
    stream.close()      # closing again stores nothing more
    assert len(store.tree(conv)) == 2
    # The incomplete answer is part of the branch; a retry is a regenerate.
    again = chat.regenerate(node)
    assert again.parent_id == node.parent_id and again.metadata == {"api": api}


def test_stream_stopped_by_the_caller_is_stored_incomplete(
        store: convotree.Store, server: FakeOpenAI, api: str) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api=api)
    conv = store.create_conversation()
    server.script(Reply(text="a b c d e f g h"))
    with chat.stream(conv, "letters") as stream:
        for index, _ in enumerate(stream):
            if index == 1:
                break
    assert stream.node is not None and stream.node.content == "a b"
    assert stream.node.metadata is not None
    assert stream.node.metadata["incomplete"] is True
    assert stream.node.metadata["error"] == "the caller stopped reading"
    assert len(store.tree(conv)) == 2
    with pytest.raises(convotree.errors.ChatError):
        list(stream)


def test_stream_cut_during_tool_call_keeps_no_half_call(
        store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini")
    conv = store.create_conversation()
    server.script(Reply(text="Let me check", cut_after=2,
                        tool_calls=(("call_9", "weather", '{"city":"Porto"}'),)))
    stream = chat.stream(conv, "weather in Porto?", tools=[WEATHER_TOOL])
    with pytest.raises(openai.APIConnectionError):
        list(stream)
    node = stream.node
    assert node is not None and node.tool_calls is None and node.content == "Let me"
    # The branch can go on: no unanswered call was stored.
    chat.send(node, "try again")


# --- tools --------------------------------------------------------------------------------


def test_tool_round_trip_chat_completions(store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini")
    conv = store.create_conversation()
    server.script(Reply(tool_calls=(("call_1", "weather", '{"city": "Lisbon"}'),
                                    ("call_2", "weather", '{"city": "Porto"}'))),
                  Reply(text="Sunny in both."))
    calling = chat.send(conv, "Weather in Lisbon and Porto?", tools=[WEATHER_TOOL])
    assert calling.content is None and calling.finish_reason == "tool_calls"
    assert [c["id"] for c in calling.tool_calls or []] == ["call_1", "call_2"]
    assert server.bodies[-1]["tools"] == [WEATHER_TOOL]

    with pytest.raises(ToolCallMismatch):
        chat.add_tool_results(calling, {"call_1": "21C"})   # call_2 missing: nothing stored
    assert len(store.tree(conv)) == 2
    results = chat.add_tool_results(calling, {"call_2": {"temp": 19}, "call_1": "21C"})
    assert [(n.role, n.tool_call_id, n.content) for n in results] == [
        ("tool", "call_1", "21C"), ("tool", "call_2", '{"temp": 19}')]
    final = chat.reply(results[-1], tools=[WEATHER_TOOL])
    assert final.content == "Sunny in both."
    assert server.bodies[-1]["messages"][-3:] == [
        {"role": "assistant", "content": None, "tool_calls": calling.tool_calls},
        {"role": "tool", "content": "21C", "tool_call_id": "call_1"},
        {"role": "tool", "content": '{"temp": 19}', "tool_call_id": "call_2"},
    ]


def test_tool_round_trip_responses_with_reasoning(
        store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api="responses")
    conv = store.create_conversation()
    server.script(Reply(tool_calls=(("call_1", "weather", '{"city": "Lisbon"}'),),
                        reasoning="gAAAA-encrypted"),
                  Reply(text="It is 21C."))
    calls: list[str] = []

    def weather(city: str) -> dict[str, Any]:
        calls.append(city)
        return {"city": city, "celsius": 21}

    final = chat.run_tools(conv, "Weather in Lisbon?", {"weather": weather},
                           tools=[WEATHER_TOOL], include=["reasoning.encrypted_content"])
    assert calls == ["Lisbon"] and final.content == "It is 21C."
    first, second = server.bodies[-2], server.bodies[-1]
    # Tools are sent in the Responses shape; include passes through.
    assert first["tools"] == [{"type": "function", **WEATHER_TOOL["function"]}]
    assert second["include"] == ["reasoning.encrypted_content"]
    # The turn with encrypted reasoning goes back exactly as the API returned it, ids
    # included (the API pairs a reasoning item with the item after it).
    output = [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA-encrypted"},
        {"type": "function_call", "id": "fc_call_1", "call_id": "call_1", "name": "weather",
         "arguments": '{"city": "Lisbon"}', "status": "completed"},
    ]
    assert second["input"][1:] == [
        *output,
        {"type": "function_call_output", "call_id": "call_1",
         "output": json.dumps({"city": "Lisbon", "celsius": 21})},
    ]
    calling = store.path(final)[1]
    assert calling.api_items == output
    assert calling.tool_calls == [{"id": "call_1", "type": "function", "function": {
        "name": "weather", "arguments": '{"city": "Lisbon"}'}}]
    # The same branch sent through Chat Completions uses the columns instead.
    chat_of(store, server, model="gpt-4o-mini").send(final, "Thanks")
    messages = server.bodies[-1]["messages"]
    assert messages[1] == {"role": "assistant", "content": None,
                           "tool_calls": calling.tool_calls}


def test_reasoning_without_encrypted_content_is_not_replayed(
        store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api="responses")
    conv = store.create_conversation()
    server.script(Reply(text="Hi", reasoning=""))
    answer = chat.send(conv, "Hello")
    assert answer.api_items is None
    chat.send(answer, "Again")
    assert server.bodies[-1]["input"][1] == {"role": "assistant", "content": "Hi"}


def test_tool_loop_reports_errors_to_the_model_and_stops_at_the_limit(
        store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini")
    conv = store.create_conversation()

    def broken(city: str) -> str:
        raise RuntimeError(f"no data for {city}")

    server.script(Reply(tool_calls=(("c1", "weather", '{"city": "Faro"}'),
                                    ("c2", "nope", "{}"))),
                  Reply(text="Sorry."))
    final = chat.run_tools(conv, "Faro?", {"weather": broken}, tools=[WEATHER_TOOL])
    tool_nodes = store.path(final)[2:4]
    assert [n.content for n in tool_nodes] == [
        "error: RuntimeError: no data for Faro", "error: there is no tool named 'nope'"]

    loop = Reply(tool_calls=(("again", "weather", '{"city": "Braga"}'),))
    server.script(loop, loop, loop)
    with pytest.raises(ToolStepLimit) as caught:
        chat.run_tools(final, "Braga?", {"weather": lambda city: "ok"}, max_steps=2)
    assert caught.value.node is not None and caught.value.node.tool_calls is not None


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "error"), [
    ("400", openai.BadRequestError),
    ("429", openai.RateLimitError),
    ("500", openai.InternalServerError),
])
def test_api_errors_propagate_and_keep_the_user_message(
        store: convotree.Store, server: FakeOpenAI, api: str, mode: str,
        error: type[Exception]) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api=api)
    conv = store.create_conversation()
    server.fail_next(mode)
    with pytest.raises(error):
        chat.send(conv, "Will this work?")
    tree = store.tree(conv)
    assert [(n.role, n.content) for n in tree] == [("user", "Will this work?")]
    assert chat.last is not None and chat.last.node is None and chat.last.error
    # A retry answers the stored message: no second copy of it.
    answer = chat.reply(tree[0])
    assert answer.parent_id == tree[0].id and len(store.tree(conv)) == 2


def test_stream_request_errors_raise_before_any_delta(
        store: convotree.Store, server: FakeOpenAI, api: str) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api=api)
    conv = store.create_conversation()
    server.fail_next("500")
    with pytest.raises(openai.InternalServerError):
        chat.stream(conv, "hello")
    assert [n.role for n in store.tree(conv)] == ["user"]


def test_rate_limit_is_retried_by_the_users_client(
        store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, {"max_retries": 2}, model="gpt-4o-mini")
    conv = store.create_conversation()
    server.fail_next("429")
    server.retry_after_ms = 400
    started = time.perf_counter()
    answer = chat.send(conv, "patience")
    assert time.perf_counter() - started >= 0.4      # the client waited as told
    assert [c["failure"] for c in server.calls] == ["429", None]
    assert answer.content == "Notes: patience" and len(store.tree(conv)) == 2


def test_timeout_raises_the_clients_error(store: convotree.Store) -> None:
    with FakeOpenAI(timeout_sleep=1.0) as slow:
        chat = chat_of(store, slow, {"timeout": 0.3}, model="gpt-4o-mini")
        conv = store.create_conversation()
        slow.fail_next("timeout")
        with pytest.raises(openai.APITimeoutError):
            chat.send(conv, "hello?")
        assert [n.role for n in store.tree(conv)] == ["user"]


def test_bad_arguments_are_typed_errors(store: convotree.Store, server: FakeOpenAI) -> None:
    with pytest.raises(InvalidContent):
        chat_of(store, server, model="gpt-4o-mini", api="assistants")
    chat = chat_of(store, server, model="gpt-4o-mini")
    conv = store.create_conversation()
    with pytest.raises(InvalidContent):
        chat.send(conv, "hi", stream=True)
    answer = chat.send(conv, "hi")
    with pytest.raises(ToolCallMismatch):
        chat.add_tool_results(answer, {"x": "y"})
    before = table_counts(store)
    with pytest.raises(convotree.errors.UnknownModel):
        chat.send(answer, "hello", model="my-private-model")
    assert table_counts(store) == before   # refused before anything was stored


# --- compaction ---------------------------------------------------------------------------


def test_openai_compaction_is_stored_as_a_summary_and_reused(
        store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api="responses")
    conv = store.create_conversation()
    store.append(conv, role="system", content="Be kind.")
    a1 = chat.send(conv, "My name is Ada.")
    a2 = chat.send(a1, "I live in Lisbon.")
    summary = chat.compact(a2)
    assert server.calls[-1]["path"].endswith("/responses/compact")
    assert summary.kind == "summary" and summary.parent_id == a2.id
    assert summary.api_items is not None
    assert summary.api_items[-1] == {"type": "compaction", "id": "cmp_3",
                                     "encrypted_content": "ENCRYPTED-2-messages"}
    assert summary.metadata == {"summarizer": "openai-compaction", "response_id": "resp_3"}
    # Compacting again returns the stored one and sends nothing.
    calls = len(server.calls)
    assert chat.compact(a2).id == summary.id and len(server.calls) == calls

    # Both branches below the compacted node send the compaction instead of history.
    for parent, question in ((a2, "Where do I live?"), (a2, "What is my name?")):
        chat.send(parent, question)
        body = server.bodies[-1]
        assert body["input"][0] == {"role": "system", "content": "Be kind."}
        assert body["input"][1:-1] == summary.api_items
        assert body["input"][-1] == {"role": "user", "content": question}
        assert chat.last is not None and chat.last.context.report.summary_id == summary.id

    # A Chat Completions request from the same branch gets the readable text instead.
    plain = chat_of(store, server, model="gpt-4o-mini")
    plain.send(a2, "Summarize me")
    messages = server.bodies[-1]["messages"]
    assert messages[1] == {"role": "system", "content": summary.content}
    assert "- My name is Ada." in (summary.content or "")


def test_compact_passes_options_and_keeps_an_existing_summary(
        store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api="responses")
    conv = store.create_conversation()
    a1 = chat.send(conv, "Remember 42.")
    chat.compact(a1, instructions="Keep numbers.")
    assert server.bodies[-1]["instructions"] == "Keep numbers."
    a2 = chat.send(a1, "And 43.")
    existing = store.add_summary(a2, "Summary of the earlier conversation: 42 and 43.")
    calls = len(server.calls)
    assert chat.compact(a2).id == existing.id and len(server.calls) == calls


# --- more streaming -----------------------------------------------------------------------


def test_failure_reported_inside_a_stream_raises_and_keeps_what_arrived(
        store: convotree.Store, server: FakeOpenAI, api: str) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api=api)
    conv = store.create_conversation()
    server.script(Reply(text="alpha beta gamma delta", fail_after=2))
    stream = chat.stream(conv, "go")
    received: list[str] = []
    with pytest.raises(openai.APIError, match="crashed"):
        received.extend(stream)
    assert received == ["alpha", " beta"]
    node = stream.node
    assert node is not None and node.content == "alpha beta"
    assert node.metadata is not None and node.metadata["incomplete"] is True
    assert "crashed" in node.metadata["error"]
    assert stream.turn is not None and stream.turn.incomplete
    assert len(store.tree(conv)) == 2


def test_empty_streamed_answer_is_stored(
        store: convotree.Store, server: FakeOpenAI, api: str) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api=api)
    conv = store.create_conversation()
    server.script(Reply(text=""))
    stream = chat.stream(conv, "say nothing")
    assert list(stream) == []
    assert stream.node is not None and stream.node.content == ""
    assert stream.node.response_id is not None and stream.node.input_tokens is not None
    assert store.get_conversation(conv).current_node_id == stream.node.id


def test_streamed_tool_call_with_reasoning_round_trips(
        store: convotree.Store, server: FakeOpenAI, api: str) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api=api)
    conv = store.create_conversation()
    server.script(Reply(tool_calls=(("call_7", "weather", '{"city": "Faro"}'),),
                        reasoning="ENC" if api == "responses" else None))
    stream = chat.stream(conv, "Faro?", tools=[WEATHER_TOOL])
    assert list(stream) == []
    calling = stream.node
    assert calling is not None and calling.tool_calls == [{"id": "call_7", "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Faro"}'}}]
    assert (calling.api_items is not None) == (api == "responses")
    tool = chat.add_tool_results(calling, {"call_7": "sunny"})[-1]
    final = chat.stream_reply(tool, tools=[WEATHER_TOOL])
    text = "".join(final)
    assert final.node is not None and final.node.content == text and text.startswith("Notes:")
    body = server.bodies[-1]
    if api == "responses":
        assert body["input"][1]["type"] == "reasoning"
        assert body["input"][-1] == {"type": "function_call_output", "call_id": "call_7",
                                     "output": "sunny"}
    else:
        assert body["messages"][-1] == {"role": "tool", "content": "sunny",
                                        "tool_call_id": "call_7"}


def test_usage_details_are_recorded(
        store: convotree.Store, server: FakeOpenAI, api: str) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api=api)
    conv = store.create_conversation()
    server.script(Reply(text="cached", cached_tokens=7), Reply(text="streamed", cached_tokens=3))
    answer = chat.send(conv, "hello")
    assert answer.cached_tokens == 7 and answer.reasoning_tokens == 0
    stream = chat.stream(answer, "again")
    list(stream)
    assert stream.node is not None and stream.node.cached_tokens == 3


def test_regenerate_takes_an_answer(store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini")
    conv = store.create_conversation()
    answer = chat.send(conv, "hi")
    user = store.path(answer)[0]
    before = table_counts(store)
    with pytest.raises(InvalidContent):
        chat.regenerate(user)
    assert table_counts(store) == before


def test_redact_removes_the_text_from_replayed_items(
        store: convotree.Store, server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api="responses")
    conv = store.create_conversation()
    server.script(Reply(text="your code is 4242", reasoning="ENC"))
    answer = chat.send(conv, "remember my code")
    assert answer.api_items is not None
    store.redact(answer)
    chat.send(answer, "what was it?")
    sent = json.dumps(server.bodies[-1])
    assert "4242" not in sent and "ENC" not in sent
    assert server.bodies[-1]["input"][1] == {"role": "assistant", "content": "[redacted]"}


def test_reasoning_with_nothing_after_it_is_not_replayed(
        store: convotree.Store, server: FakeOpenAI) -> None:
    """An answer cut off while reasoning: a lone reasoning item would be refused."""
    chat = chat_of(store, server, model="gpt-4o-mini", api="responses")
    conv = store.create_conversation()
    server.script(Reply(text="", reasoning="ENC", omit_message=True))
    answer = chat.send(conv, "think hard")
    assert answer.api_items is None and answer.content == ""
    chat.send(answer, "and?")
    assert server.bodies[-1]["input"][1] == {"role": "assistant", "content": ""}


# --- server-side compaction ------------------------------------------------------------


def _compacting_chat(store: convotree.Store, server: FakeOpenAI, threshold: int = 120
                     ) -> tuple[Chat, Any]:
    chat = chat_of(store, server, model="gpt-4o-mini", api="responses",
                server_compaction=threshold)
    conv = store.create_conversation()
    store.append(conv, role="system", content="You plan trips.")
    return chat, conv


@pytest.mark.parametrize("streamed", [False, True])
def test_a_server_compaction_starts_the_next_context_at_its_item(
        store: convotree.Store, server: FakeOpenAI, streamed: bool) -> None:
    """OpenAI's guide for stateless clients: append the output as usual; the items
    before the latest compaction item may be dropped. The next request of that branch
    is the system prompt, the compaction item, the answer after it, the new message."""
    chat, conv = _compacting_chat(store, server)
    node = None
    for turn in range(12):
        question = f"Day {turn}: what should we see in Lisbon, and where should we eat?"
        if streamed:
            with chat.stream(conv, question) as stream:
                "".join(stream)
            node = stream.node
        else:
            node = chat.send(conv, question)
        assert node is not None
        assert server.bodies[-1]["context_management"] == [
            {"type": "compaction", "compact_threshold": 120}]
        if node.compacted:
            break
    assert node is not None and node.compacted and server.compactions
    item = node.api_items[0]  # type: ignore[index]
    assert item["type"] == "compaction" and item["id"] == server.compactions[-1]
    follow = chat.send(node, "And on the last day?")
    sent_input = server.bodies[-1]["input"]
    assert sent_input[0] == {"role": "system", "content": "You plan trips."}
    assert sent_input[1:-1] == node.api_items           # the item, then the answer after it
    assert sent_input[-1] == {"role": "user", "content": "And on the last day?"}
    assert chat.last is not None and chat.last.context.report.compaction_id == node.id
    assert chat.last.context.report.gap == ()
    # The turn after that still starts at the same item, not at the history before it.
    chat.send(follow, "Thanks!")
    assert server.bodies[-1]["input"][1] == item
    # The transcript is all there, and the tree and SQL show the boundary.
    path = store.path(node)
    assert [n.compacted for n in path].count(True) == 1 and len(path) > 4
    with store.engine.connect() as conn:
        marked = conn.execute(sa.text(
            "SELECT count(*) FROM convotree_nodes n WHERE n.conversation_id = :c "
            "AND n.compacted").bindparams(sa.bindparam("c", type_=sa.Uuid())), {"c": conv.id})
        assert marked.scalar_one() == 1


def test_a_compaction_leaves_other_branches_and_chat_completions_alone(
        store: convotree.Store, server: FakeOpenAI) -> None:
    chat, conv = _compacting_chat(store, server, threshold=40)
    first = chat.send(conv, "Plan a long trip to Lisbon with many museums and restaurants.")
    compacted = chat.send(first, "Now add three more days with beaches and castles please.")
    assert not first.compacted and compacted.compacted
    # A regenerated answer to the same prompt forks above the compacted answer: it gets
    # the history, not the compaction (the item holds the other answer's state).
    again = chat_of(store, server, model="gpt-4o-mini", api="responses")
    other = again.regenerate(compacted)
    assert not any(i.get("type") == "compaction" for i in server.bodies[-1]["input"])
    assert not other.compacted
    # Chat Completions cannot read the item: its context walks the readable history.
    plain = chat_of(store, server, model="gpt-4o-mini")
    plain.send(compacted, "Summarize it")
    contents = [m["content"] for m in server.bodies[-1]["messages"]]
    assert contents[1].startswith("Plan a long trip") and contents[-1] == "Summarize it"


def test_server_compaction_settings_are_checked(store: convotree.Store,
                                                server: FakeOpenAI) -> None:
    with pytest.raises(convotree.errors.ChatError, match="api='responses'"):
        chat_of(store, server, model="gpt-4o", server_compaction=1000)
    with pytest.raises(convotree.errors.ChatError, match="choose one"):
        chat_of(store, server, model="gpt-4o", api="responses", server_compaction=1000,
                summarizer=ExtractiveSummarizer())
    with pytest.raises(convotree.errors.ChatError, match="positive"):
        chat_of(store, server, model="gpt-4o", api="responses", server_compaction=0)
    chat = chat_of(store, server, model="gpt-4o", api="responses", budget=500,
                server_compaction=1000)
    conv = store.create_conversation()
    before = table_counts(store)
    with pytest.raises(convotree.errors.ChatError, match="never compact"):
        chat.send(conv, "hello")
    assert table_counts(store) == before and server.calls == []


def test_compaction_trigger_stores_a_summary(store: convotree.Store,
                                             server: FakeOpenAI) -> None:
    chat = chat_of(store, server, model="gpt-4o-mini", api="responses")
    conv = store.create_conversation()
    a1 = chat.send(conv, "My name is Ada.")
    summary = chat.compact(a1, method="trigger")
    body = server.bodies[-1]
    assert server.calls[-1]["path"].endswith("/responses")
    assert body["input"][-1] == {"type": "compaction_trigger"} and body["store"] is False
    assert summary.kind == "summary" and summary.parent_id == a1.id
    assert summary.api_items == [{"type": "compaction", "id": server.compactions[-1],
                                  "encrypted_content": f"ENCRYPTED-CONTEXT-"
                                                       f"{server.compactions[-1]}"}]
    assert "My name is Ada." in (summary.content or "")
    chat.send(a1, "What is my name?")
    assert server.bodies[-1]["input"][0] == summary.api_items[0]
    with pytest.raises(InvalidContent):
        chat.compact(a1, method="sideways")
