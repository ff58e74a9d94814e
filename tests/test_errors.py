"""Every bad input raises its typed error and leaves the database exactly as it was."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

import convotree
from convotree import errors
from tests.conftest import table_counts

CALL = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]


BAD_APPENDS: list[tuple[str, type[Exception], Callable[[dict[str, Any]], dict[str, Any]]]] = [
    ("unknown role", errors.InvalidRole, lambda t: {"role": "robot", "content": "x"}),
    ("unknown kind", errors.InvalidKind,
     lambda t: {"role": "user", "content": "x", "kind": "note"}),
    ("NUL in content", errors.InvalidContent, lambda t: {"role": "user", "content": "a\x00b"}),
    ("lone surrogate", errors.InvalidContent, lambda t: {"role": "user", "content": "a\ud800"}),
    ("NUL in name", errors.InvalidContent,
     lambda t: {"role": "user", "content": "x", "name": "a\x00"}),
    ("NUL inside metadata", errors.InvalidContent,
     lambda t: {"role": "user", "content": "x", "metadata": {"k": ["ok", "b\x00d"]}}),
    ("NUL inside a content part", errors.InvalidContent,
     lambda t: {"role": "user", "content": [{"type": "text", "text": "\x00"}]}),
    ("part without type", errors.InvalidContent,
     lambda t: {"role": "user", "content": [{"text": "x"}]}),
    ("content not text", errors.InvalidContent, lambda t: {"role": "user", "content": 42}),
    ("metadata not an object", errors.InvalidContent,
     lambda t: {"role": "user", "content": "x", "metadata": [1]}),
    ("metadata not JSON", errors.InvalidContent,
     lambda t: {"role": "user", "content": "x", "metadata": {"when": object()}}),
    ("user without content", errors.InvalidContent, lambda t: {"role": "user"}),
    ("too large", errors.ContentTooLarge, lambda t: {"role": "user", "content": "x" * 5000}),
    ("unknown parent", errors.NodeNotFound,
     lambda t: {"role": "user", "content": "x", "parent": uuid.uuid4()}),
    ("parent in another conversation", errors.InvalidParent,
     lambda t: {"role": "user", "content": "x", "parent": t["foreign"]}),
    ("parent id of another conversation", errors.NodeNotFound,
     lambda t: {"role": "user", "content": "x", "parent": t["foreign"].id}),
    ("tool without a call above", errors.ToolCallMismatch,
     lambda t: {"role": "tool", "content": "r", "tool_call_id": "c1", "parent": t["user"]}),
    ("tool root", errors.ToolCallMismatch,
     lambda t: {"role": "tool", "content": "r", "tool_call_id": "c1"}),
    ("tool answering an unknown call", errors.ToolCallMismatch,
     lambda t: {"role": "tool", "content": "r", "tool_call_id": "zz", "parent": t["call"]}),
    ("tool without tool_call_id", errors.ToolCallMismatch,
     lambda t: {"role": "tool", "content": "r", "parent": t["call"]}),
    ("next turn with calls unanswered", errors.ToolCallMismatch,
     lambda t: {"role": "user", "content": "?", "parent": t["call"]}),
    ("tool_calls on a user message", errors.ToolCallMismatch,
     lambda t: {"role": "user", "content": "x", "tool_calls": CALL}),
    ("tool_call_id on an assistant", errors.ToolCallMismatch,
     lambda t: {"role": "assistant", "content": "x", "tool_call_id": "c1"}),
    ("malformed tool call", errors.InvalidContent,
     lambda t: {"role": "assistant", "tool_calls": [{"type": "function"}]}),
    ("duplicate call ids", errors.ToolCallMismatch,
     lambda t: {"role": "assistant", "tool_calls": CALL + CALL}),
    ("pinned tool call", errors.ToolCallMismatch,
     lambda t: {"role": "assistant", "tool_calls": CALL, "pinned": True}),
    ("negative usage", errors.InvalidArgument,
     lambda t: {"role": "assistant", "content": "x", "output_tokens": -1}),
]


@pytest.mark.parametrize(("case", "error", "make"), BAD_APPENDS, ids=[c[0] for c in BAD_APPENDS])
def test_bad_append_raises_and_writes_nothing(
    db_url: str, tree_factory: Callable[[convotree.Store], dict[str, Any]],
    case: str, error: type[Exception], make: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    with convotree.Store(db_url, max_message_bytes=4096) as store:
        t = tree_factory(store)
        before = table_counts(store)
        with pytest.raises(error) as raised:
            store.append(t["conv"], **make(t))
        assert isinstance(raised.value, errors.ConvotreeError)
        assert table_counts(store) == before


@pytest.fixture
def tree_factory() -> Callable[[convotree.Store], dict[str, Any]]:
    def make(store: convotree.Store) -> dict[str, Any]:
        conv = store.create_conversation(title="t")
        other = store.create_conversation(title="other")
        user = store.append(conv, role="user", content="hi")
        call = store.append(conv, parent=user, role="assistant", tool_calls=CALL)
        foreign = store.append(other, role="user", content="elsewhere")
        return {"conv": conv, "user": user, "call": call, "foreign": foreign}
    return make


def test_unknown_conversation(store: convotree.Store) -> None:
    before = table_counts(store)
    missing = uuid.uuid4()
    with pytest.raises(errors.ConversationNotFound) as raised:
        store.append(missing, role="user", content="x")
    assert raised.value.conversation_id == missing
    assert isinstance(raised.value, LookupError)
    with pytest.raises(errors.ConversationNotFound):
        store.get_conversation(missing)
    with pytest.raises(errors.ConversationNotFound):
        store.update_conversation(missing, title="x")
    with pytest.raises(errors.InvalidInput):
        store.get_conversation("not-a-uuid")
    assert table_counts(store) == before


def test_unknown_node(store: convotree.Store) -> None:
    conv = store.create_conversation()
    with pytest.raises(errors.NodeNotFound) as raised:
        store.node(conv, uuid.uuid4())
    assert raised.value.conversation_id == conv.id


def test_bad_conversation_fields_write_nothing(store: convotree.Store) -> None:
    before = table_counts(store)
    with pytest.raises(errors.InvalidContent):
        store.create_conversation(title="a\x00b")
    with pytest.raises(errors.InvalidContent):
        store.create_conversation(metadata={"x": "\ud83d"})
    conv = store.create_conversation(title="ok")
    after_create = table_counts(store)
    with pytest.raises(errors.InvalidContent):
        store.rename_conversation(conv, "bad\x00")
    assert table_counts(store) == after_create
    assert before[0] + 1 == after_create[0]


def test_summary_cannot_have_children(store: convotree.Store) -> None:
    conv = store.create_conversation()
    user = store.append(conv, role="user", content="x")
    summary = store.append(conv, parent=user, role="system", kind="summary", content="s",
                           set_current=False)
    before = table_counts(store)
    with pytest.raises(errors.InvalidParent):
        store.append(conv, parent=summary, role="user", content="y")
    assert table_counts(store) == before


def test_special_token_text_is_plain_text(store: convotree.Store) -> None:
    conv = store.create_conversation()
    node = store.append(conv, role="user", content="ends with <|endoftext|> literally")
    assert node.token_count > 3
    assert store.node(conv, node.id).content == "ends with <|endoftext|> literally"


def test_driver_errors_become_store_errors(tmp_path: object) -> None:
    store = convotree.Store(f"sqlite:///{tmp_path}/gone.db", create=True)
    conv = store.create_conversation()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE convotree_nodes")
    # A convotree table missing is a schema problem (the message says how to fix it),
    # not a refusal of the data; still a typed error with the driver's cause chained.
    with pytest.raises(errors.SchemaOutOfDate, match="convotree db upgrade") as raised:
        store.tree(conv)
    assert raised.value.__cause__ is not None
    store.close()
