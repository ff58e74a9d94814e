"""pydantic-ai's ``ConversationStore`` over convotree, on both backends.

The behaviour pydantic-ai's ABC documents for a store (pydantic_ai/conversation_store.py
of pydantic-ai-slim 2.68.0): load/save with compare-and-set on the revision, branches
kept and reachable, forks sharing entries, scopes, deletes that collect unreachable
entries, conflicts for concurrent writers. The real ``pydantic_ai.Agent`` drives it
with an OpenAI model pointed at ``convotree.testing.FakeOpenAI``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic_ai import Agent, DeferredToolRequests
from pydantic_ai.conversation import Conversation
from pydantic_ai.conversation_store import (
    ConversationConflict,
    ConversationEntry,
    ConversationRecord,
)
from pydantic_ai.messages import (
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    UserPromptPart,
)
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.usage import RunUsage

import convotree
from convotree import errors
from convotree.adapters.pydantic_ai import ConvotreeConversationStore
from convotree.testing import FakeOpenAI, Reply
from tests import sql_audit

ROOT = Path(__file__).resolve().parents[1]
SHELLS = ["async", "sync"]


def run(scenario: Callable[[ConvotreeConversationStore], Awaitable[Any]], url: str, *,
        shell: str = "async", tenant: str = "") -> Any:
    """Run ``scenario`` with an adapter over an AsyncStore (or a Store) of ``url``."""
    async def main() -> Any:
        if shell == "async":
            async with convotree.AsyncStore(url, tenant=tenant) as store:
                return await scenario(ConvotreeConversationStore(store))
        with convotree.Store(url, tenant=tenant) as sync:
            return await scenario(ConvotreeConversationStore(sync))
    return asyncio.run(main())


def name() -> str:
    return f"chat-{uuid.uuid4().hex[:10]}"


def rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """The test's own look at the tables (every statement pins one conversation)."""
    engine = convotree.create_engine(url)
    try:
        with engine.connect() as conn:
            statement = sa.text(sql).bindparams(*(
                sa.bindparam(key, type_=sa.Uuid()) for key, value in params.items()
                if isinstance(value, uuid.UUID)))
            return [tuple(row) for row in conn.execute(statement, params)]
    finally:
        engine.dispose()


def node_count(url: str, tree: uuid.UUID | None) -> int:
    if tree is None:
        return 0
    return int(rows(url, "SELECT count(*) FROM convotree_nodes n WHERE n.conversation_id = :c",
                    c=tree)[0][0])


def text_of(message: Any) -> str:
    return " ".join(str(part.content) for part in message.parts
                    if isinstance(part, TextPart | UserPromptPart))


def turn(prompt: str, answer: str) -> list[Any]:
    return [ModelRequest(parts=[UserPromptPart(content=prompt)]),
            ModelResponse(parts=[TextPart(content=answer)], model_name="gpt-4o-mini")]


def json_round_trip(messages: list[Any]) -> list[Any]:
    return ModelMessagesTypeAdapter.validate_python(
        ModelMessagesTypeAdapter.dump_python(messages, mode="json"))


def agent_for(server: FakeOpenAI, **kwargs: Any) -> Agent[None, str]:
    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(
        base_url=server.base_url, api_key="x"))
    return Agent(model, system_prompt="You are terse.", **kwargs)


def sent(server: FakeOpenAI) -> list[str]:
    """The contents of the last request's messages, as the model received them."""
    return [str(message.get("content")) for message in server.bodies[-1]["messages"]]


# --- the real Agent through several runs, a branch and a fork -----------------------------


def test_agent_runs_branch_and_fork_share_one_tree(db_url: str) -> None:
    chat = name()

    async def scenario(store: ConvotreeConversationStore) -> None:
        with FakeOpenAI() as server:
            agent = agent_for(server)

            @agent.tool_plain
            def weather(city: str) -> str:
                """The weather in a city."""
                return f"sunny in {city}"

            conversation = await store.load(chat) or Conversation(conversation_id=chat)
            first = await agent.run("Plan Lisbon", conversation=conversation)
            saved = await store.save(first)
            assert [type(entry.message) for entry in saved] == [ModelRequest, ModelResponse]

            server.script(Reply(tool_calls=(("call_1", "weather", '{"city": "Lisbon"}'),)),
                          Reply(text="Take a hat."))
            loaded = await store.load(chat)
            # Exactly what pydantic-ai's own JSON round trip gives back.
            assert loaded is not None and loaded.messages == json_round_trip(
                first.all_messages())
            second = await agent.run("Weather?", conversation=loaded)
            assert second.output == "Take a hat."
            await store.save(second)
            # The model got the first turn back from the database.
            assert "Plan Lisbon" in sent(server) and "Notes: Plan Lisbon" in sent(server)

            loaded = await store.load(chat)
            assert loaded is not None and len(loaded.messages) == 6
            entries = await store.load_entries(chat)
            assert entries is not None
            assert [e.parent_id for e in entries[1:]] == [e.id for e in entries[:-1]]

            # A branch from the first answer: the weather turn stays, as a branch tip.
            branched = await store.branch(chat, at=2, expected_revision=loaded.revision)
            third = await agent.run("Make it Porto", conversation=branched)
            await store.save(third)
            assert "Weather?" not in sent(server) and "Make it Porto" in sent(server)
            record = await store.read_record(chat)
            assert record is not None and record.branches == [entries[-1].id]

            # A fork from an entry of the branch the record left, under a new id.
            fork = await store.fork(chat, from_entry=entries[-1].id,
                                    new_conversation_id=chat + "-fork")
            assert [text_of(m) for m in fork.messages][:2] == ["Plan Lisbon",
                                                               "Notes: Plan Lisbon"]
            fourth = await agent.run("And tomorrow?", conversation=fork)
            await store.save(fourth)
            assert "Weather?" in sent(server) and "Make it Porto" not in sent(server)

            again = await store.load(chat)
            assert again is not None
            assert [text_of(m) for m in again.messages][-2:] == ["Make it Porto",
                                                                 "Notes: Make it Porto"]
            forked = await store.read_record(chat + "-fork")
            assert forked is not None and forked.forked_from == chat
            assert forked.forked_at == entries[-1].id
            listed = [r.conversation_id for r in await store.list_conversations()]
            assert listed.index(chat + "-fork") < listed.index(chat)

            # One convotree tree under both records; every message stored once.
            tree = await store.tree_of(chat)
            assert tree is not None and tree == await store.tree_of(chat + "-fork")
            nodes = await store.store.tree(tree) if isinstance(
                store.store, convotree.AsyncStore) else store.store.tree(tree)
            assert len(nodes) == 6 + 2 + 2
            assert {n.role for n in nodes} == {"user", "assistant"}
            answer = next(n for n in nodes if n.content == "Take a hat.")
            assert answer.model == "gpt-4o-mini-2024-07-18" and answer.input_tokens
            assert answer.response_id and answer.finish_reason == "stop"
            assert 'weather({"city":"Lisbon"})' in [n.content for n in nodes]
            assert "sunny in Lisbon" in [n.content for n in nodes]

            # convotree's budgeted context works on the stored history.
            context = await store.context(chat, model="gpt-4o-mini", budget=60)
            assert context.tokens <= 60
            assert context.messages[-1]["content"] == "Notes: Make it Porto"

    run(scenario, db_url)
    # Reportable in SQL: tokens by role in the shared tree.
    tree = run(lambda s: s.tree_of(chat), db_url)
    report = dict(rows(db_url, "SELECT n.role, sum(n.token_count) FROM convotree_nodes n "
                              "WHERE n.conversation_id = :c GROUP BY n.role", c=tree))
    assert report["user"] > 0 and report["assistant"] > 0


# --- records: compare-and-set ------------------------------------------------------------


@pytest.mark.parametrize("over", SHELLS)
def test_save_is_checked_against_the_revision(db_url: str, over: str) -> None:
    chat = name()

    async def scenario(store: ConvotreeConversationStore) -> None:
        conversation = Conversation(conversation_id=chat, messages=turn("hi", "hello"))
        first = await store.save(conversation)
        assert len(first) == 2 and conversation.revision is not None
        stale = await store.load(chat)
        fresh = await store.load(chat)
        assert stale is not None and fresh is not None
        fresh.messages.extend(turn("again", "sure"))
        await store.save(fresh)
        tree = await store.tree_of(chat)
        before = node_count(db_url, tree)
        stale.messages.extend(turn("lost", "never stored"))
        with pytest.raises(ConversationConflict):
            await store.save(stale)
        # A new conversation under an id the store has is a conflict too.
        with pytest.raises(ConversationConflict):
            await store.save(Conversation(conversation_id=chat, messages=turn("x", "y")))
        with pytest.raises(ConversationConflict):
            await store.branch(chat, at=0, expected_revision=stale.revision)
        assert node_count(db_url, tree) == before
        loaded = await store.load(chat)
        assert loaded is not None
        assert [text_of(m) for m in loaded.messages] == ["hi", "hello", "again", "sure"]
        # A save with nothing new still advances the revision.
        revision = loaded.revision
        assert await store.save(loaded) == [] and loaded.revision != revision

    run(scenario, db_url, shell=over)


@pytest.mark.parametrize("over", SHELLS)
def test_concurrent_writers_exactly_one_wins(db_url: str, over: str) -> None:
    """Two writers (tasks on one AsyncStore, or threads on one Store) race for the same
    revision: one commits, the other gets ConversationConflict and leaves nothing."""
    chat = name()

    async def scenario(store: ConvotreeConversationStore) -> None:
        await store.save(Conversation(conversation_id=chat, messages=turn("start", "ok")))
        record = await store.read_record(chat)
        assert record is not None
        tree = await store.tree_of(chat)
        before = node_count(db_url, tree)

        async def write(label: str) -> str:
            first = ConversationEntry(parent_id=record.head_id, message=turn(label, "")[0])
            second = ConversationEntry(parent_id=first.id, message=ModelResponse(
                parts=[TextPart(content=f"answer {label}")]))
            updated = ConversationRecord(conversation_id=chat, head_id=second.id,
                                         usage=record.usage, scope=record.scope)
            await store.write_record(updated, new_entries=[first, second],
                                     expected_revision=record.revision)
            return label

        for attempt in range(3):
            outcomes = await asyncio.gather(write(f"a{attempt}"), write(f"b{attempt}"),
                                            return_exceptions=True)
            won = [o for o in outcomes if isinstance(o, str)]
            lost = [o for o in outcomes if isinstance(o, BaseException)]
            if attempt == 0:
                assert len(won) == 1 and len(lost) == 1, outcomes
                assert isinstance(lost[0], ConversationConflict)
            else:   # the revision moved on: both lose
                assert not won and all(isinstance(o, ConversationConflict) for o in lost)
        assert node_count(db_url, tree) == before + 2
        loaded = await store.load(chat)
        assert loaded is not None
        assert text_of(loaded.messages[-1]) == f"answer {won_first(loaded)}"

        # Two creators of one new conversation through save(): one wins.
        other = name()
        results = await asyncio.gather(
            *(store.save(Conversation(conversation_id=other, messages=turn(w, w)))
              for w in ("x", "y")), return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["ConversationConflict", "list"]
        made = await store.load(other)
        assert made is not None and len(made.messages) == 2
        assert node_count(db_url, await store.tree_of(other)) == 2

    run(scenario, db_url, shell=over)


def won_first(conversation: Conversation) -> str:
    return text_of(conversation.messages[-2])


# --- history: one statement, bounded -----------------------------------------------------


def test_history_is_one_bounded_statement(db_url: str) -> None:
    chat = name()

    async def scenario(store: ConvotreeConversationStore) -> None:
        messages = [m for i in range(20) for m in turn(f"q{i}", f"a{i}")]
        await store.save(Conversation(conversation_id=chat, messages=messages))
        record = await store.read_record(chat)
        assert record is not None
        with sql_audit.capture() as log:
            tail = await store.read_history(record.head_id, limit=3)
        on_nodes = [s for s in log if "convotree_nodes" in s]
        assert len(on_nodes) == 1 and "RECURSIVE" in on_nodes[0].upper()
        assert [text_of(e.message) for e in tail] == ["a18", "q19", "a19"]
        window = await store.load(chat, limit=4)
        assert window is not None and [text_of(m) for m in window.messages] == [
            "q18", "a18", "q19", "a19"]
        # Saving the window appends to the whole conversation.
        window.messages.extend(turn("q20", "a20"))
        await store.save(window)
        whole = await store.load(chat)
        assert whole is not None and len(whole.messages) == 42
        entry = await store.read_entry(tail[0].id)
        assert entry == tail[0]
        assert await store.read_history(record.head_id, limit=0) == []
        assert await store.read_history(None) == []
        with pytest.raises(LookupError):
            await store.read_entry(str(uuid.uuid4()))

    run(scenario, db_url)


# --- branches, forks and garbage collection ------------------------------------------------


def test_delete_collects_only_unreachable_entries(db_url: str) -> None:
    chat, fork_name = name(), name()

    async def scenario(store: ConvotreeConversationStore) -> None:
        messages = turn("one", "1") + turn("two", "2") + turn("three", "3")
        conversation = Conversation(conversation_id=chat, messages=messages)
        entries = await store.save(conversation)
        tree = await store.tree_of(chat)
        fork = await store.fork(chat, at=2, new_conversation_id=fork_name)
        fork.messages.extend(turn("fork", "f"))
        await store.save(fork)
        branched = await store.branch(chat, at=4, expected_revision=conversation.revision)
        branched.messages.extend(turn("other", "o"))
        await store.save(branched)
        assert node_count(db_url, tree) == 6 + 2 + 2
        # The tip the branch left stays reachable: branch back to it.
        record = await store.read_record(chat)
        assert record is not None and record.branches == [entries[-1].id]
        back = await store.branch(chat, from_entry=entries[-1].id,
                                  expected_revision=branched.revision)
        assert [text_of(m) for m in back.messages][-1] == "3"

        await store.delete(chat)
        assert await store.load(chat) is None
        # Only the fork's history is left: its two shared entries and its own two.
        assert node_count(db_url, tree) == 4
        kept = rows(db_url, "SELECT count(*) FROM convotree_pydantic_ai_messages m "
                            "WHERE m.conversation_id = :c", c=tree)
        assert kept == [(4,)]
        left = await store.load(fork_name)
        assert left is not None
        assert [text_of(m) for m in left.messages] == ["one", "1", "fork", "f"]
        # The name is free again: a new conversation under it starts empty.
        await store.save(Conversation(conversation_id=chat, messages=turn("new", "n")))
        renewed = await store.load(chat)
        assert renewed is not None and [text_of(m) for m in renewed.messages] == ["new", "n"]
        await store.delete(chat)
        await store.delete(fork_name)
        assert await store.tree_of(fork_name) is None
        with pytest.raises(errors.ConversationNotFound):
            await store.store.get_conversation(tree)  # type: ignore[misc]
        assert rows(db_url, "SELECT count(*) FROM convotree_nodes n "
                            "WHERE n.conversation_id = :c", c=tree) == [(0,)]

    run(scenario, db_url)


def test_a_fork_written_by_another_store_object_finds_its_tree(db_url: str) -> None:
    """A store object that never read the source (another process) places a fork by its
    ``forked_from`` record; without one, an unknown anchor is a conflict, not a guess."""
    chat = name()

    async def first(store: ConvotreeConversationStore) -> Any:
        await store.save(Conversation(conversation_id=chat, messages=turn("q", "a")))
        return await store.read_record(chat)

    source = run(first, db_url)

    async def other(store: ConvotreeConversationStore) -> None:
        fork = ConversationRecord(conversation_id=chat + "-f", head_id=source.head_id,
                                  forked_from=chat, forked_at=source.head_id)
        await store.write_record(fork, expected_revision=None)
        loaded = await store.load(chat + "-f")
        assert loaded is not None and [text_of(m) for m in loaded.messages] == ["q", "a"]
        assert await store.tree_of(chat + "-f") == await store.tree_of(chat)
        orphan = ConversationRecord(conversation_id=chat + "-g", head_id=str(uuid.uuid4()))
        with pytest.raises(ConversationConflict):
            await store.write_record(orphan, expected_revision=None)
        assert await store.read_record(chat + "-g") is None

    run(other, db_url)


def test_a_tree_deleted_through_the_store_frees_its_names(db_url: str) -> None:
    """``Store.delete_conversation`` on a tree cascades to its records; the names can be
    used again."""
    chat = name()

    async def scenario(store: ConvotreeConversationStore) -> None:
        await store.save(Conversation(conversation_id=chat, messages=turn("q", "a")))
        await store.fork(chat, new_conversation_id=chat + "-f")
        tree = await store.tree_of(chat)
        convo: Any = store.store
        head = (await convo.leaves(tree))[0]
        with pytest.raises(errors.StoreError):   # a head's foreign key keeps its node
            await convo.delete_subtree(head)
        assert node_count(db_url, tree) == 2
        await convo.delete_conversation(tree)
        assert await store.load(chat) is None and await store.load(chat + "-f") is None
        await store.save(Conversation(conversation_id=chat + "-f", messages=turn("b", "c")))
        again = await store.load(chat + "-f")
        assert again is not None and [text_of(m) for m in again.messages] == ["b", "c"]

    run(scenario, db_url)


def test_delete_of_a_changed_record_is_a_conflict(db_url: str) -> None:
    chat = name()

    async def scenario(store: ConvotreeConversationStore) -> None:
        conversation = Conversation(conversation_id=chat, messages=turn("a", "b"))
        await store.save(conversation)
        with pytest.raises(ConversationConflict):
            await store.delete_record(chat, expected_revision="not-the-revision")
        assert await store.load(chat) is not None
        await store.delete_record(chat, expected_revision=conversation.revision or "")
        with pytest.raises(ConversationConflict):
            await store.delete_record(chat, expected_revision=conversation.revision or "")

    run(scenario, db_url)


# --- scopes and tenants --------------------------------------------------------------------


def test_scopes_keep_a_conversation_to_its_owner(db_url: str) -> None:
    chat, theirs = name(), name()

    async def scenario(store: ConvotreeConversationStore) -> None:
        await store.save(Conversation(conversation_id=chat, messages=turn("mine", "m")),
                         scope="alice")
        await store.save(Conversation(conversation_id=theirs, messages=turn("x", "y")),
                         scope="bob")
        assert await store.load(chat, scope="bob") is None
        mine = await store.load(chat, scope="alice")
        assert mine is not None
        listed = [r.conversation_id for r in await store.list_conversations(scope="alice")]
        assert chat in listed and theirs not in listed
        assert [r.conversation_id for r in await store.list_conversations(limit=1)] == [theirs]
        mine.messages.extend(turn("more", "m2"))
        with pytest.raises(ConversationConflict):
            await store.save(mine, scope="bob")
        await store.delete(chat, scope="bob")   # another owner's: left as it is
        assert await store.load(chat) is not None
        fork = await store.fork(chat, source_scope="alice", new_conversation_id=chat + "-b",
                                scope="bob")
        assert fork.messages == mine.messages[:2]
        record = await store.read_record(chat + "-b")
        assert record is not None and record.scope == "bob"

    run(scenario, db_url)


@pytest.mark.parametrize("over", ["async", "sync"])
def test_an_entry_kept_for_later_is_found_by_a_fresh_store(db_url: str, over: str) -> None:
    """pydantic-ai suggests keeping entry ids (ratings, billing) and reading them later,
    from another process: a store object that never saw the id finds its tree by the id
    alone (one indexed statement), in its own tenant only; a fork anchored at it works
    without ``forked_from``."""
    chat = name()
    # Tenants of this test alone: other tests list the records of theirs.
    owner, other = f"owner-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"

    async def write(store: ConvotreeConversationStore) -> Any:
        await store.save(Conversation(conversation_id=chat, messages=turn("q", "a")))
        record = await store.read_record(chat)
        return record.head_id, (await store.read_history(record.head_id))[0].id

    head, first = run(write, db_url, shell=over, tenant=owner)

    async def later(store: ConvotreeConversationStore) -> None:
        entry = await store.read_entry(head)
        assert entry.id == head and text_of(entry.message) == "a"
        assert [e.id for e in await store.read_history(head)] == [first, head]
        fork = ConversationRecord(conversation_id=chat + "-f", head_id=first,
                                  forked_at=first)
        await store.write_record(fork, expected_revision=None)
        loaded = await store.load(chat + "-f")
        assert loaded is not None and [text_of(m) for m in loaded.messages] == ["q"]
        assert await store.tree_of(chat + "-f") == await store.tree_of(chat)

    run(later, db_url, shell=over, tenant=owner)

    async def intruder(store: ConvotreeConversationStore) -> None:
        with pytest.raises(errors.NodeNotFound):
            await store.read_entry(head)
        with pytest.raises(ConversationConflict):
            await store.write_record(ConversationRecord(conversation_id=chat, head_id=head),
                                     expected_revision=None)

    run(intruder, db_url, shell=over, tenant=other)


def test_tenants_do_not_see_each_other(db_url: str) -> None:
    chat = name()

    def as_tenant(prompt: str) -> Any:
        async def scenario(store: ConvotreeConversationStore) -> Any:
            if await store.load(chat) is None:
                await store.save(Conversation(conversation_id=chat, messages=turn(prompt, "")))
            loaded = await store.load(chat)
            assert loaded is not None
            return (text_of(loaded.messages[0]),
                    [r.conversation_id for r in await store.list_conversations()])
        return scenario

    a = run(as_tenant("from acme"), db_url, tenant="acme")
    b = run(as_tenant("from umbrella"), db_url, tenant="umbrella")
    assert a == ("from acme", [chat]) and b == ("from umbrella", [chat])


# --- what the record carries ----------------------------------------------------------------


def test_usage_and_deferred_tool_requests_round_trip(db_url: str) -> None:
    chat = name()

    async def scenario(store: ConvotreeConversationStore) -> None:
        call = ToolCallPart(tool_name="approve", args={"amount": 12.5}, tool_call_id="c1")
        messages = [ModelRequest(parts=[UserPromptPart(content="pay")]),
                    ModelResponse(parts=[call], model_name="gpt-4o-mini")]
        usage = RunUsage(input_tokens=11, output_tokens=7, requests=1, tool_calls=1)
        deferred = DeferredToolRequests(approvals=[call])
        conversation = Conversation(conversation_id=chat, messages=messages, usage=usage,
                                    deferred_tool_requests=deferred)
        await store.save(conversation, scope="team")
        loaded = await store.load(chat)
        assert loaded is not None
        assert loaded.usage == usage and loaded.deferred_tool_requests == deferred
        assert loaded.messages == messages
        record = await store.read_record(chat)
        assert record is not None and record.scope == "team" and record.format_version == 1

    run(scenario, db_url)


def test_the_system_prompt_stays_in_a_budgeted_context(db_url: str) -> None:
    """pydantic-ai puts the system prompt in the first user request: that entry is
    pinned, so convotree's budgeted context keeps it however far back it is."""
    chat = name()

    async def scenario(store: ConvotreeConversationStore) -> None:
        with FakeOpenAI() as server:
            agent = agent_for(server)
            for prompt in ("Plan a trip to Lisbon", "Make it three days", "Add Sintra",
                           "And Porto?"):
                conversation = await store.load(chat) or Conversation(conversation_id=chat)
                await store.save(await agent.run(prompt, conversation=conversation))
        context = await store.context(chat, model="gpt-4o-mini", budget=40)
        assert context.tokens <= 40
        assert context.messages[0]["content"].startswith("You are terse.")
        assert context.messages[-1]["content"] == "Notes: And Porto?"
        assert len(context.messages) < 8    # the middle turns were dropped, not the prompt

    run(scenario, db_url)


# --- hostile input: a typed error, nothing written -----------------------------------------


def test_hostile_input_is_refused_before_anything_is_written(db_url: str) -> None:
    chat = name()

    async def scenario(store: ConvotreeConversationStore) -> None:
        await store.save(Conversation(conversation_id=chat, messages=turn("ok", "fine")))
        tree = await store.tree_of(chat)
        before = node_count(db_url, tree)
        loaded = await store.load(chat)
        assert loaded is not None
        revision = loaded.revision
        loaded.messages.extend(turn("bad \x00 byte", "x"))
        with pytest.raises(errors.InvalidContent):
            await store.save(loaded)
        loaded.messages[-2:] = turn("\ud800 lone surrogate", "x")
        with pytest.raises(errors.InvalidContent):
            await store.save(loaded)
        loaded.messages[-2:] = turn("x" * (4 * 1024 * 1024 + 1), "x")
        with pytest.raises(errors.ContentTooLarge):
            await store.save(loaded)
        with pytest.raises(errors.InvalidContent):
            await store.load("bad\x00id")
        with pytest.raises(errors.InvalidArgument):
            await store.load("x" * 2000)
        with pytest.raises(errors.InvalidArgument):
            await store.read_history("not-an-entry-id")
        with pytest.raises(errors.InvalidArgument):
            await store.read_history(str(uuid.uuid4()).upper())
        with pytest.raises(errors.InvalidArgument):
            await store.read_records(limit=-1)
        with pytest.raises(errors.InvalidArgument):
            await store.read_records(scope=7)  # type: ignore[arg-type]
        record = await store.read_record(chat)
        assert record is not None
        bad = ConversationRecord(conversation_id=chat, head_id=record.head_id,
                                 branches=["tip; DELETE FROM x"], revision=record.revision)
        with pytest.raises(errors.InvalidArgument):
            await store.write_record(bad, expected_revision=record.revision)
        bad_entry = ConversationEntry(id="1; DROP TABLE convotree_nodes", parent_id=None,
                                      message=turn("x", "y")[0])
        with pytest.raises(errors.InvalidArgument):
            await store.write_record(record, new_entries=[bad_entry],
                                     expected_revision=record.revision)
        assert node_count(db_url, tree) == before
        still = await store.read_record(chat)
        assert still is not None and still.revision == revision

    run(scenario, db_url)


# --- row-level security (PostgreSQL) -------------------------------------------------------


def test_row_level_security_covers_the_adapter_tables(postgres: Any) -> None:
    """``convotree db enable-rls`` gives the three 0005 tables a policy: the adapter works
    for its tenant through an application role, and raw SQL without the tenant setting
    sees none of their rows."""
    from tests.conftest import _require

    _require(postgres)
    assert postgres.admin is not None
    role = f"convotree_pai_app_{uuid.uuid4().hex[:8]}"
    database = None
    try:
        with sql_audit.unaudited():
            with postgres.admin.connect() as conn:
                conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
            database = postgres.create_database()
            convotree.migrate(database)
            done = convotree.enable_row_level_security(database, role=role)
            assert {"convotree_pydantic_ai_names", "convotree_pydantic_ai_records",
                    "convotree_pydantic_ai_messages"} <= set(done.tables)
        app = sa.make_url(database).set(username=role).render_as_string(hide_password=False)
        chat = name()

        async def save(store: ConvotreeConversationStore) -> Any:
            await store.save(Conversation(conversation_id=chat, messages=turn("q", "a")))
            fork = await store.fork(chat, new_conversation_id=chat + "-f")
            await store.save(fork)
            loaded = await store.load(chat + "-f")
            assert loaded is not None and len(loaded.messages) == 2
            return await store.tree_of(chat)

        tree = run(save, app, tenant="acme")
        assert run(lambda s: s.load(chat), app, tenant="umbrella") is None
        engine = sa.create_engine(app)
        try:
            with sql_audit.unaudited(), engine.connect() as conn:
                for table in ("convotree_pydantic_ai_names", "convotree_pydantic_ai_records",
                              "convotree_pydantic_ai_messages"):
                    seen = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
                    assert seen == 0, table
        finally:
            engine.dispose()
        assert node_count(database, tree) == 2      # as the owner: the rows are there
    finally:
        with sql_audit.unaudited(), postgres.admin.connect() as conn:
            if database is not None:
                name_ = sa.make_url(database).database
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name_}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))


# --- the schema ---------------------------------------------------------------------------


def test_migration_0005_down_and_up_with_data(empty_db_url: str) -> None:
    chat = name()
    with sql_audit.unaudited():
        convotree.migrate(empty_db_url)

    async def write(store: ConvotreeConversationStore) -> Any:
        await store.save(Conversation(conversation_id=chat, messages=turn("keep", "me")))
        return await store.tree_of(chat)

    tree = run(write, empty_db_url)
    with sql_audit.unaudited():
        convotree.downgrade(empty_db_url, "0004")
        engine = convotree.create_engine(empty_db_url)
        try:
            tables = set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert not {t for t in tables if t.startswith("convotree_pydantic_ai")}
        convotree.migrate(empty_db_url)
    # The nodes stayed as ordinary convotree messages; the records went with 0005.
    assert node_count(empty_db_url, tree) == 2
    assert run(lambda s: s.load(chat), empty_db_url) is None


# --- packaging -------------------------------------------------------------------------------


def test_import_convotree_does_not_import_pydantic_ai() -> None:
    code = ("import sys, convotree, convotree.adapters; "
            "assert 'pydantic_ai' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_example_runs_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "adapter_pydantic_ai.py"),
         str(tmp_path / "pai.db")],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "forked from" in result.stdout and "nodes in one tree" in result.stdout
