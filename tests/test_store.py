"""The tree store on both backends: conversations, appends, branches, paths, deletes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

import convotree
from convotree import errors
from convotree.tokens import count_text

#: Every test below on Store and on AsyncStore (tests/twins.py).
TWINS = True


def test_quickstart_shape(store: convotree.Store) -> None:
    conv = store.create_conversation(title="Trip", metadata={"user": "u1"})
    root = store.append(conv, role="system", content="You are terse.")
    q = store.append(conv, parent=root, role="user", content="Hi", name=None)

    path = store.path(q)
    assert [n.id for n in path] == [root.id, q.id]
    assert [n.depth for n in path] == [0, 1]
    assert path[0].parent_id is None and path[1].parent_id == root.id
    assert store.children(root) == [q]
    assert q.conversation_id == conv.id
    assert q.token_count == count_text("Hi", "o200k_base")
    assert store.get_conversation(conv).current_node_id == q.id


def test_nodes_round_trip_every_field(store: convotree.Store) -> None:
    conv = store.create_conversation()
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    user = store.append(conv, role="user", content="ping", name="alice",
                        metadata={"k": [1, 2, {"x": None}]}, created_at=when)
    calls = [{"id": "call_1", "type": "function",
              "function": {"name": "lookup", "arguments": '{"q": "ping"}'}}]
    call = store.append(conv, parent=user, role="assistant", content=None, tool_calls=calls,
                        model="gpt-4o-mini", input_tokens=12, output_tokens=7)
    result = store.append(conv, parent=call, role="tool", content="pong", tool_call_id="call_1")

    stored = {n.id: n for n in store.tree(conv)}
    assert stored[user.id] == user
    assert stored[call.id] == call
    assert stored[result.id] == result
    assert stored[user.id].created_at == when
    assert stored[user.id].created_at.tzinfo is not None
    assert stored[call.id].tool_calls == calls
    assert stored[call.id].content is None
    assert (stored[call.id].input_tokens, stored[call.id].output_tokens) == (12, 7)
    assert stored[user.id].metadata == {"k": [1, 2, {"x": None}]}


def test_content_parts_kept_losslessly(store: convotree.Store) -> None:
    conv = store.create_conversation()
    parts = [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png",
                                            "detail": "low"}},
        {"type": "text", "text": "Answer briefly."},
    ]
    node = store.append(conv, role="user", content=parts)
    again = store.node(conv, node.id)
    assert again.parts == parts
    assert again.content == "What is in this image?\nAnswer briefly."
    assert again.token_count == (count_text("What is in this image?", "o200k_base")
                                 + count_text("Answer briefly.", "o200k_base"))
    assert again.to_message() == {"role": "user", "content": parts}


def test_branches_are_siblings_and_leaves(store: convotree.Store) -> None:
    conv = store.create_conversation()
    u1 = store.append(conv, role="user", content="Plan a trip")
    a1 = store.append(conv, parent=u1, role="assistant", content="Where to?")
    a2 = store.edit(a1, "Lisbon?")                      # regenerate: sibling answer
    u2 = store.append(conv, parent=a1, role="user", content="Rome")
    u2b = store.edit(u2, "Paris")                       # edited prompt: sibling user node
    root2 = store.edit(u1, "Plan a weekend")            # editing the first message: a root

    assert [n.id for n in store.children(u1)] == [a1.id, a2.id]
    assert [n.id for n in store.children(a1)] == [u2.id, u2b.id]
    assert {n.id for n in store.roots(conv)} == {u1.id, root2.id}
    assert {n.id for n in store.leaves(conv)} == {a2.id, u2.id, u2b.id, root2.id}
    assert [n.content for n in store.path(u2b)] == ["Plan a trip", "Where to?", "Paris"]
    assert [n.content for n in store.path(a2)] == ["Plan a trip", "Lisbon?"]
    assert u2b.role == "user" and a2.role == "assistant"
    assert len(store.tree(conv)) == 6


def test_current_node_follows_appends_and_moves(store: convotree.Store) -> None:
    conv = store.create_conversation()
    assert store.current(conv) is None
    u = store.append(conv, role="user", content="a")
    a = store.append(conv, parent=u, role="assistant", content="b")
    assert store.current(conv) == a
    side = store.append(conv, parent=u, role="assistant", content="c", set_current=False)
    assert store.current(conv) == a
    store.set_current(conv, side)
    assert store.current(conv) == side
    store.set_current(conv, None)
    assert store.current(conv) is None
    with pytest.raises(errors.NodeNotFound):
        store.set_current(conv, uuid.uuid4())


def test_delete_subtree_moves_current_to_parent(store: convotree.Store) -> None:
    conv = store.create_conversation()
    u = store.append(conv, role="user", content="a")
    a = store.append(conv, parent=u, role="assistant", content="b")
    u2 = store.append(conv, parent=a, role="user", content="c")
    store.append(conv, parent=u2, role="assistant", content="d")
    keep = store.append(conv, parent=u, role="assistant", content="other", set_current=False)

    assert store.delete_subtree(a) == 3
    assert store.current(conv) == u
    assert {n.id for n in store.tree(conv)} == {u.id, keep.id}
    with pytest.raises(errors.NodeNotFound):
        store.path(a)
    assert store.delete_subtree(u) == 2
    assert store.current(conv) is None
    assert store.tree(conv) == []


def test_conversation_lifecycle(store: convotree.Store) -> None:
    conv = store.create_conversation(title="first", metadata={"a": 1})
    assert store.get_conversation(conv.id) == conv
    assert store.get_conversation(str(conv.id)) == conv
    renamed = store.rename_conversation(conv, "second")
    assert renamed.title == "second" and renamed.metadata == {"a": 1}
    assert renamed.updated_at >= conv.updated_at
    updated = store.update_conversation(conv, metadata={"b": 2})
    assert updated.title == "second" and updated.metadata == {"b": 2}
    store.append(conv, role="user", content="x")
    store.delete_conversation(conv)
    with pytest.raises(errors.ConversationNotFound):
        store.get_conversation(conv)
    with pytest.raises(errors.ConversationNotFound):
        store.tree(conv)
    with pytest.raises(errors.ConversationNotFound):
        store.delete_conversation(conv)


def test_list_conversations_newest_activity_first_with_keyset_pages(
    db_url: str,
) -> None:
    with convotree.Store(db_url, tenant=f"list-{uuid.uuid4()}") as store:
        base = datetime(2025, 1, 1, tzinfo=UTC)
        made = [store.create_conversation(title=str(i), created_at=base + timedelta(minutes=i))
                for i in range(5)]
        store.append(made[1], role="user", content="bump")     # most recent activity
        listed = store.list_conversations(limit=10)
        assert [c.title for c in listed] == ["1", "4", "3", "2", "0"]
        page1 = store.list_conversations(limit=2)
        page2 = store.list_conversations(limit=2, before=page1[-1])
        page3 = store.list_conversations(limit=2, before=page2[-1])
        assert [c.title for c in page1 + page2 + page3] == ["1", "4", "3", "2", "0"]


def test_tenants_are_isolated(db_url: str) -> None:
    with convotree.Store(db_url, tenant="acme") as acme, \
            convotree.Store(db_url, tenant="globex") as globex:
        conv = acme.create_conversation(title="secret")
        node = acme.append(conv, role="user", content="hi")
        with pytest.raises(errors.ConversationNotFound):
            globex.get_conversation(conv)
        with pytest.raises(errors.ConversationNotFound):
            globex.append(conv, parent=node, role="assistant", content="leak")
        with pytest.raises(errors.ConversationNotFound):
            globex.path(node)
        with pytest.raises(errors.ConversationNotFound):
            globex.delete_subtree(node)
        assert all(c.id != conv.id for c in globex.list_conversations())
        assert acme.path(node) == [node]


def test_parallel_tool_calls_answered_one_after_another(store: convotree.Store) -> None:
    conv = store.create_conversation()
    user = store.append(conv, role="user", content="weather in Paris and Rome?")
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
        {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
    ]
    call = store.append(conv, parent=user, role="assistant", tool_calls=calls)
    with pytest.raises(errors.ToolCallMismatch):   # the next turn before all results
        store.append(conv, parent=call, role="user", content="well?")
    r2 = store.append(conv, parent=call, role="tool", content="sunny", tool_call_id="c2")
    with pytest.raises(errors.ToolCallMismatch):   # c2 is already answered on this branch
        store.append(conv, parent=r2, role="tool", content="again", tool_call_id="c2")
    with pytest.raises(errors.ToolCallMismatch):
        store.append(conv, parent=r2, role="user", content="well?")
    r1 = store.append(conv, parent=r2, role="tool", content="rain", tool_call_id="c1")
    with pytest.raises(errors.ToolCallMismatch):   # every call is answered now
        store.append(conv, parent=r1, role="tool", content="more", tool_call_id="c3")
    final = store.append(conv, parent=r1, role="assistant", content="Paris sunny, Rome rain")
    assert [n.role for n in store.path(final)] == ["user", "assistant", "tool", "tool",
                                                   "assistant"]


def test_store_accepts_an_engine_and_leaves_it_open(db_url: str) -> None:
    engine = convotree.create_engine(db_url)
    with convotree.Store(engine) as store:
        conv = store.create_conversation()
        store.append(conv, role="user", content="x")
    with convotree.Store(engine) as again:   # the engine was borrowed, not disposed
        assert len(again.tree(conv)) == 1
    engine.dispose()


def test_sqlite_enforces_foreign_keys_on_every_connection(tmp_path: object) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/fk.db"
    convotree.migrate(url)
    engine = sa.create_engine(url)       # a plain engine: convotree must fix it up
    store = convotree.Store(engine)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    conv = store.create_conversation()
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO convotree_nodes (conversation_id, id, parent_id, depth, kind, role, "
            "token_count, overhead_tokens, encoding, pinned, created_at) VALUES "
            f"('{conv.id.hex}', '{uuid.uuid4().hex}', '{uuid.uuid4().hex}', 1, 'message', "
            "'user', 0, 0, 'o200k_base', 0, '2025-01-01 00:00:00')"
        )
    engine.dispose()


def test_absent_json_fields_are_sql_null(store: convotree.Store) -> None:
    """Reporting SQL can write ``tool_calls IS NULL`` on both backends."""
    import sqlalchemy as sa

    from tests import sql_audit

    conv = store.create_conversation()
    store.append(conv, role="user", content="plain")
    with sql_audit.unaudited(), store.engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT tool_calls IS NULL, parts IS NULL, media IS NULL, metadata IS NULL "
            "FROM convotree_nodes WHERE conversation_id = :c").bindparams(
                sa.bindparam("c", type_=sa.Uuid())), {"c": conv.id}).one()
    assert [bool(v) for v in row] == [True, True, True, True]
