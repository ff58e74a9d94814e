"""Import and export of chat histories on both backends, with the real export files.

Real files are in tests/fixtures/real (sources and licenses in its README); the
branching fixtures in tests/fixtures/interchange are hand-written.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

import convotree
from convotree import errors
from convotree.interchange import (
    FORMATS,
    export_conversation,
    export_conversations,
    import_file,
)
from tests.conftest import table_counts

REAL = Path(__file__).resolve().parent / "fixtures" / "real"
FIX = Path(__file__).resolve().parent / "fixtures" / "interchange"
OASST_SAMPLE = REAL / "oasst2_sample.jsonl"


def key(node: convotree.Node) -> str:
    meta = node.metadata or {}
    return str(meta.get("source_id", node.id))


def shape(store: convotree.Store, conversation: uuid.UUID) -> dict[str, Any]:
    """Everything about a tree that an import must reproduce, by source id."""
    tree = store.tree(conversation)
    by_id = {node.id: node for node in tree}
    current = store.current(conversation)
    return {
        "edges": sorted((key(n), key(by_id[n.parent_id]) if n.parent_id else None)
                        for n in tree),
        "roles": sorted((key(n), n.role) for n in tree),
        "texts": sorted((key(n), n.content or "") for n in tree),
        "roots": sorted(key(n) for n in store.roots(conversation)),
        "leaves": sorted(key(n) for n in store.leaves(conversation)),
        "current": [key(n) for n in store.path(current)] if current else [],
    }


def fresh(store: convotree.Store) -> convotree.Store:
    """Another tenant on the same database: derived ids differ, nothing collides."""
    return convotree.Store(store.engine, tenant=f"t-{uuid.uuid4().hex[:8]}")


def roundtrip(store: convotree.Store, conversation: uuid.UUID, fmt: str, tmp_path: Path
              ) -> tuple[convotree.Store, uuid.UUID]:
    exported = export_conversation(store, conversation, fmt)
    path = tmp_path / f"export.{fmt}"
    if fmt == "oasst":
        path.write_text(json.dumps(exported) + "\n")
    else:
        path.write_text(json.dumps(exported))
    other = fresh(store)
    result = import_file(other, path, fmt)
    assert (result.imported, result.failed) == (1, 0), result.failures
    return other, result.conversation_ids[0]


# --- real files ------------------------------------------------------------------------


def test_chatgpt_real_branching_example(store: convotree.Store, tmp_path: Path) -> None:
    result = import_file(store, REAL / "chatgpt-export-parser__example-conversation.json",
                         "chatgpt")
    assert (result.imported, result.failed, result.nodes) == (1, 0, 6)
    cid = result.conversation_ids[0]
    got = shape(store, cid)
    assert got["roots"] == ["msg-1"]
    assert got["leaves"] == ["msg-5", "msg-6"]
    assert ("msg-4", "msg-3") in got["edges"] and ("msg-5", "msg-3") in got["edges"]
    assert got["current"] == ["msg-1", "msg-2", "msg-3", "msg-4", "msg-6"]
    conv = store.get_conversation(cid)
    assert conv.title == "Sample conversation with branch"
    assert conv.created_at.isoformat() == "2024-01-01T00:00:00+00:00"
    assert store.node(cid, conv.current_node_id).model == "gpt-4"  # type: ignore[arg-type]
    other, again = roundtrip(store, cid, "chatgpt", tmp_path)
    assert shape(other, again) == got


def test_chatgpt_real_linear_skips_hidden(store: convotree.Store) -> None:
    result = import_file(store, REAL / "openwebui-importer__gpt_example.json",
                         "chatgpt")
    assert (result.imported, result.nodes) == (1, 10)
    cid = result.conversation_ids[0]
    got = shape(store, cid)
    assert got["roots"] == ["4a718348-3eb5-4e00-a464-38417f6cb252"]  # hidden ones re-linked
    assert len(got["current"]) == 10 and got["leaves"] == [got["current"][-1]]
    conv = store.get_conversation(cid)
    skipped = conv.metadata["skipped"]  # type: ignore[index]
    assert [s["id"] for s in skipped] == ["e5529cf9-c042-40ea-aba9-f90efa479c28",
                                          "a021bc5d-b3f2-4120-a182-c00058472c7b"]
    models = {n.model for n in store.tree(cid) if n.role == "assistant"}
    assert models == {"gpt-4o"}
    assert all(n.created_at.tzinfo is not None for n in store.tree(cid))


def test_openwebui_real_file(store: convotree.Store, tmp_path: Path) -> None:
    result = import_file(store, REAL / "openwebui-importer__webui-json.json",
                         "openwebui")
    assert (result.imported, result.nodes) == (1, 2)
    cid = result.conversation_ids[0]
    got = shape(store, cid)
    assert got["current"] == ["5ae90291-abf9-453f-9f7d-78f3753af40c",
                              "a9436447-add3-4bd8-a25f-6ce54b73903c"]
    answer = store.current(cid)
    assert answer is not None and answer.model == "deepseek/deepseek-chat:free"
    assert (answer.input_tokens, answer.output_tokens) == (26, 310)
    other, again = roundtrip(store, cid, "openwebui", tmp_path)
    assert shape(other, again) == got


def oasst_facts(path: Path) -> dict[str, int]:
    """What an import of an OASST tree-row file must find, read from the raw JSON with
    a walker of its own (independent of convotree's importer)."""
    seen: set[str] = set()
    facts = dict.fromkeys(("lines", "trees", "duplicates", "messages", "leaves",
                           "branching", "deleted"), 0)
    langs: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        facts["lines"] += 1
        row = json.loads(line)
        if row["message_tree_id"] in seen:
            facts["duplicates"] += 1
            continue
        seen.add(row["message_tree_id"])
        facts["trees"] += 1
        branches = False
        stack = [row["prompt"]]
        while stack:
            message = stack.pop()
            replies = message.get("replies") or []
            facts["messages"] += 1
            facts["leaves"] += not replies
            facts["deleted"] += bool(message.get("deleted"))
            langs.add(message["lang"])
            branches |= len(replies) > 1
            stack.extend(replies)
        facts["branching"] += branches
    facts["langs"] = len(langs)
    return facts


def test_oasst2_sample_facts_are_what_its_readme_says() -> None:
    facts = oasst_facts(OASST_SAMPLE)
    assert (facts["lines"], facts["trees"], facts["duplicates"]) == (100, 95, 5)
    assert facts["branching"] > 10 and facts["deleted"] > 0 and facts["langs"] > 10


def test_oasst2_real_file(store: convotree.Store, tmp_path: Path) -> None:
    expected = oasst_facts(OASST_SAMPLE)
    other = fresh(store)
    seen: list[int] = []
    result = import_file(other, OASST_SAMPLE, "oasst", on_progress=seen.append)
    assert (result.imported, result.skipped, result.failed) == (
        expected["trees"], expected["duplicates"], 0)
    assert result.nodes == expected["messages"]
    assert seen[-1] == expected["lines"] and seen == sorted(seen)
    leaves = branching = deleted = 0
    langs: set[str] = set()
    for cid in result.conversation_ids:
        tree = other.tree(cid)
        leaves += len(other.leaves(cid))
        assert len(other.roots(cid)) == 1
        parents = [n.parent_id for n in tree if n.parent_id]
        branching += len(parents) != len(set(parents))
        deleted += sum(bool(n.metadata and n.metadata["oasst"]["deleted"]) for n in tree)
        langs |= {n.metadata["oasst"]["lang"] for n in tree if n.metadata}
        assert {n.role for n in tree} <= {"user", "assistant"}
    assert (leaves, branching, deleted, len(langs)) == (
        expected["leaves"], expected["branching"], expected["deleted"], expected["langs"])
    again = import_file(other, OASST_SAMPLE, "oasst")
    assert (again.imported, again.skipped, again.nodes) == (0, expected["lines"], 0)
    # One branching tree through the tree-shape export and back.
    cid = next(c for c in result.conversation_ids if len(other.leaves(c)) > 2)
    third, back = roundtrip(other, cid, "oasst", tmp_path)
    assert shape(third, back) == shape(other, cid)
    # Every tree: its export imports back with the same current branch (the best reply
    # does not depend on the order a file lists replies in).
    docs = export_conversations(other, result.conversation_ids, "oasst")
    exported = tmp_path / "all.jsonl"
    exported.write_text("\n".join(json.dumps(doc) for doc in docs))
    copy = fresh(store)
    reimported = import_file(copy, exported, "oasst")
    assert reimported.imported == expected["trees"]

    def current_sources(target: convotree.Store, ids: list[uuid.UUID]) -> set[str]:
        found = set()
        for conversation_id in ids:
            current = target.current(conversation_id)
            assert current is not None and current.metadata is not None
            found.add(current.metadata["source_id"])
        return found

    assert current_sources(copy, reimported.conversation_ids) == current_sources(
        other, result.conversation_ids)


# --- branching fixtures ------------------------------------------------------------------


def test_chatgpt_branches_edits_and_regenerations(store: convotree.Store, tmp_path: Path
                                                  ) -> None:
    result = import_file(store, FIX / "chatgpt_branching.json", "chatgpt")
    assert (result.imported, result.nodes) == (2, 9)
    cid = result.conversation_ids[0]
    got = shape(store, cid)
    assert got["roots"] == ["q1"]
    assert got["leaves"] == ["a2", "a2r", "a3"]
    assert got["current"] == ["q1", "a1", "q2", "a2"]  # not the latest branch
    image = next(n for n in store.tree(cid) if key(n) == "a3")
    assert image.content == "Gulbenkian on day two."
    assert image.metadata["chatgpt"]["content"]["content_type"] == "multimodal_text"  # type: ignore[index]
    q1 = next(n for n in store.tree(cid) if key(n) == "q1")
    assert q1.created_at.timestamp() == 1704067200.5
    for fmt in ("chatgpt", "librechat", "openwebui"):  # native: see the native tests
        other, again = roundtrip(store, cid, fmt, tmp_path)
        expected = dict(got)
        if fmt == "librechat":  # LibreChat has no current node: the latest leaf
            expected["current"] = ["q1", "a1", "q2e", "a3"]
        assert shape(other, again) == expected, fmt
    exported = export_conversation(store, cid, "chatgpt")
    assert exported["mapping"]["a3"]["message"]["content"]["parts"][0]["asset_pointer"] == \
        "file-service://file-abc"


@pytest.mark.parametrize("name", ["librechat_flat.json", "librechat_nested.json"])
def test_librechat_flat_and_nested(store: convotree.Store, tmp_path: Path, name: str) -> None:
    tenant_store = fresh(store)
    result = import_file(tenant_store, FIX / name, "librechat")
    assert (result.imported, result.nodes) == (1, 5)
    cid = result.conversation_ids[0]
    got = shape(tenant_store, cid)
    assert got["edges"] == [("b1", "u1"), ("b2", "u1"), ("b3", "u2"), ("u1", None),
                            ("u2", "b1")]
    assert got["leaves"] == ["b2", "b3"]
    assert got["current"] == ["u1", "b1", "u2", "b3"]
    other, again = roundtrip(tenant_store, cid, "librechat", tmp_path)
    assert shape(other, again) == got


def test_openwebui_current_on_older_branch(store: convotree.Store, tmp_path: Path) -> None:
    result = import_file(store, FIX / "openwebui_branching.json", "openwebui")
    cid = result.conversation_ids[0]
    got = shape(store, cid)
    assert got["leaves"] == ["w3", "w5"]
    assert got["current"] == ["w1", "w2", "w4", "w5"]
    exported = export_conversation(store, cid, "openwebui")
    assert exported["chat"]["history"]["currentId"] == "w5"
    assert [m["id"] for m in exported["chat"]["messages"]] == ["w1", "w2", "w4", "w5"]
    assert exported["chat"]["history"]["messages"]["w1"]["childrenIds"] == ["w2", "w3"]
    other, again = roundtrip(store, cid, "openwebui", tmp_path)
    assert shape(other, again) == got


def test_oasst_flat_rows_with_a_branch(store: convotree.Store, tmp_path: Path) -> None:
    tenant_store = fresh(store)
    result = import_file(tenant_store, FIX / "oasst_flat.jsonl", "oasst")
    assert (result.imported, result.nodes) == (2, 7)
    cid = result.conversation_ids[0]
    got = shape(tenant_store, cid)
    assert got["leaves"] == ["t1-a2", "t1-fa"]
    assert got["current"] == ["t1-p", "t1-a1", "t1-f", "t1-fa"]  # best-ranked replies
    assert tenant_store.get_conversation(cid).title == "Why is the sky blue?"
    other, again = roundtrip(tenant_store, cid, "oasst", tmp_path)
    assert shape(other, again) == got


def test_oasst_flat_rows_of_trees_interleaved(store: convotree.Store, tmp_path: Path) -> None:
    lines = (FIX / "oasst_flat.jsonl").read_text().splitlines()
    path = tmp_path / "split.jsonl"
    path.write_text("\n".join([lines[6], *lines[:2], lines[5], *lines[2:5]]) + "\n")
    tenant_store = fresh(store)
    result = import_file(tenant_store, path, "oasst")
    assert (result.imported, result.failed, result.nodes) == (2, 0, 7)
    assert [len(tenant_store.tree(c)) for c in result.conversation_ids] == [2, 5]


def test_openai_messages_with_tools(store: convotree.Store, tmp_path: Path) -> None:
    tenant_store = fresh(store)
    result = import_file(tenant_store, FIX / "openai_tools.json", "openai")
    assert (result.imported, result.nodes) == (1, 5)
    cid = result.conversation_ids[0]
    exported = export_conversation(tenant_store, cid, "openai")
    assert exported == json.loads((FIX / "openai_tools.json").read_text())
    again = import_file(tenant_store, FIX / "openai_tools.json", "openai")
    assert (again.imported, again.skipped) == (0, 1)


# --- native -------------------------------------------------------------------------------


def _rich_conversation(store: convotree.Store) -> uuid.UUID:
    conv = store.create_conversation(title="rich", metadata={"user": "u1"})
    root = store.append(conv, role="system", content="Be brief.", pinned=True)
    ask = store.append(conv, parent=root, role="user",
                       content=[{"type": "text", "text": "Hi"}], metadata={"k": [1, 2.5]})
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    tool = store.append(conv, parent=ask, role="assistant", tool_calls=[call],
                        model="gpt-4o", input_tokens=10, output_tokens=3)
    result = store.append(conv, parent=tool, role="tool", tool_call_id="c1", content="ok")
    store.append(conv, parent=result, role="assistant", content="Done", name="bot")
    store.edit(ask, "Hello again", set_current=False)
    return conv.id


def test_native_lossless_into_a_fresh_database(store: convotree.Store, empty_db_url: str,
                                               tmp_path: Path) -> None:
    cid = _rich_conversation(store)
    from convotree.summaries import ExtractiveSummarizer
    leaf = store.current(cid)
    assert leaf is not None
    store.context(leaf, model="gpt-4o", budget=30, summarizer=ExtractiveSummarizer())
    first = export_conversation(store, cid, "native")
    assert any(n["kind"] == "summary" for n in first["nodes"])
    path = tmp_path / "backup.json"
    path.write_text(json.dumps(first))
    convotree.migrate(empty_db_url)
    with convotree.Store(empty_db_url) as other:
        result = import_file(other, path, "native")
        assert (result.imported, result.conversation_ids) == (1, [cid])
        assert export_conversation(other, cid, "native") == first
        before = table_counts(other)
        again = import_file(other, path, "native")
        assert (again.imported, again.skipped, again.nodes) == (0, 1, 0)
        assert table_counts(other) == before


def test_native_columns_follow_the_schema(store: convotree.Store) -> None:
    from convotree._schema import conversations, nodes
    exported = export_conversation(store, _rich_conversation(store), "native")
    assert set(exported["conversation"]) == {c.name for c in conversations.c}
    assert set(exported["nodes"][0]) == {c.name for c in nodes.c} - {"conversation_id"}


def test_native_unknown_column_is_refused(store: convotree.Store, tmp_path: Path) -> None:
    exported = export_conversation(store, _rich_conversation(store), "native")
    exported["conversation"]["id"] = str(uuid.uuid4())
    exported["nodes"][1]["from_the_future"] = 1
    path = tmp_path / "x.json"
    path.write_text(json.dumps(exported))
    before = table_counts(store)
    result = import_file(store, path, "native")
    assert result.failed == 1 and "from_the_future" in result.failures[0].reason
    assert table_counts(store) == before


def test_native_id_of_another_tenant_is_not_touched(store: convotree.Store, tmp_path: Path
                                                    ) -> None:
    cid = _rich_conversation(store)
    path = tmp_path / "n.json"
    path.write_text(json.dumps(export_conversation(store, cid, "native")))
    before = table_counts(store)
    result = import_file(fresh(store), path, "native")
    assert result.failed == 1 and "already taken" in result.failures[0].reason
    assert table_counts(store) == before


# --- broken files -----------------------------------------------------------------------


def _chatgpt(mapping_edit: Any) -> list[dict[str, Any]]:
    data = json.loads((FIX / "chatgpt_branching.json").read_text())
    mapping_edit(data[0]["mapping"])
    return data


def _owui(edit: Any) -> list[dict[str, Any]]:
    data = json.loads((FIX / "openwebui_branching.json").read_text())
    second = json.loads(json.dumps(data[0]))
    second["id"] = "owui-2"
    edit(data[0]["chat"]["history"]["messages"])
    return [data[0], second]


def _librechat(edit: Any) -> list[dict[str, Any]]:
    data = json.loads((FIX / "librechat_flat.json").read_text())
    good = json.loads(json.dumps(data))
    good["conversationId"] = "lc-good"
    edit({m["messageId"]: m for m in data["messages"]})
    return [data, good]


def _set(path: list[str], value: Any) -> Any:
    def edit(messages: dict[str, Any]) -> None:
        target = messages
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
    return edit


BROKEN: list[tuple[str, str, Any, str]] = [
    ("chatgpt", "cycle", lambda: _chatgpt(_set(["q1", "parent"], "a2")), "cycle"),
    ("chatgpt", "missing parent", lambda: _chatgpt(_set(["q2", "parent"], "nope")), "nope"),
    ("chatgpt", "unknown role", lambda: _chatgpt(_set(["a1", "message", "author", "role"],
                                                      "critic")), "critic"),
    ("openwebui", "cycle", lambda: _owui(_set(["w1", "parentId"], "w5")), "cycle"),
    ("openwebui", "missing parent", lambda: _owui(_set(["w4", "parentId"], "nope")), "nope"),
    ("openwebui", "unknown role", lambda: _owui(_set(["w2", "role"], "robot")), "robot"),
    ("librechat", "cycle", lambda: _librechat(_set(["u1", "parentMessageId"], "b3")), "cycle"),
    ("librechat", "missing parent", lambda: _librechat(_set(["u2", "parentMessageId"], "zz")),
     "zz"),
    ("librechat", "bad type", lambda: _librechat(_set(["b2", "text"], 42)), "'text'"),
]


@pytest.mark.parametrize(("fmt", "what", "make", "needle"), BROKEN,
                         ids=[f"{b[0]}-{b[1]}" for b in BROKEN])
def test_broken_conversation_fails_alone(store: convotree.Store, tmp_path: Path, fmt: str,
                                         what: str, make: Any, needle: str) -> None:
    tenant_store = fresh(store)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(make()))
    before = table_counts(tenant_store)
    result = import_file(tenant_store, path, fmt)
    assert result.failed == 1 and result.imported == 1, result
    failure = result.failures[0]
    assert failure.source.startswith(("conversation 1", "chat 1")), failure
    assert needle in failure.reason, failure
    conversations, nodes, _ = table_counts(tenant_store)
    written = sum(len(tenant_store.tree(c)) for c in result.conversation_ids)
    assert (conversations, nodes) == (before[0] + 1, before[1] + written)


@pytest.mark.parametrize("fmt", ["chatgpt", "openwebui", "librechat", "native", "openai"])
def test_truncated_json_fails_the_whole_file(store: convotree.Store, tmp_path: Path,
                                             fmt: str) -> None:
    path = tmp_path / "cut.json"
    path.write_text((FIX / "chatgpt_branching.json").read_text()[:500])
    before = table_counts(store)
    with pytest.raises(errors.InvalidImport, match="not valid JSON"):
        import_file(store, path, fmt)
    assert table_counts(store) == before


def test_oasst_bad_lines_fail_only_their_tree(store: convotree.Store, tmp_path: Path) -> None:
    lines = (FIX / "oasst_flat.jsonl").read_text().splitlines()
    bad_role = json.loads(lines[6])
    bad_role["role"] = "moderator"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([*lines[:5], lines[5][:40], lines[5], json.dumps(bad_role)]))
    tenant_store = fresh(store)
    result = import_file(tenant_store, path, "oasst")
    assert (result.imported, result.failed) == (1, 2)
    assert result.failures[0].source == "line 6"
    assert "moderator" in result.failures[1].reason and "t2-p" in result.failures[1].source
    cycle = [json.loads(line) for line in lines[:5]]
    cycle[1]["parent_id"] = "t1-fa"
    path.write_text("\n".join(json.dumps(r) for r in cycle))
    result = import_file(fresh(store), path, "oasst")
    assert result.failed == 1 and "cycle" in result.failures[0].reason


def test_openai_tool_pairing_is_checked(store: convotree.Store, tmp_path: Path) -> None:
    messages = json.loads((FIX / "openai_tools.json").read_text())
    del messages[3]
    path = tmp_path / "unpaired.json"
    path.write_text(json.dumps(messages))
    before = table_counts(store)
    result = import_file(store, path, "openai")
    assert result.failed == 1 and "ToolCallMismatch" in result.failures[0].reason
    assert "message '3'" in result.failures[0].reason
    assert table_counts(store) == before


def test_unknown_format(store: convotree.Store) -> None:
    with pytest.raises(errors.UnknownFormat):
        import_file(store, FIX / "openai_tools.json", "csv")
    with pytest.raises(errors.UnknownFormat):
        export_conversation(store, uuid.uuid4(), "csv")
    assert "native" in FORMATS


def test_oasst_export_refuses_what_it_cannot_hold(store: convotree.Store) -> None:
    cid = _rich_conversation(store)
    with pytest.raises(errors.NotExportable):
        export_conversation(store, cid, "oasst")


def test_oasst_broken_line_fails_its_whole_tree(store: convotree.Store, tmp_path: Path) -> None:
    """A tree whose last line is cut off writes nothing of that tree, not a part of it."""
    lines = (FIX / "oasst_flat.jsonl").read_text().splitlines()
    t1 = [line for line in lines if '"t1-p"' in line]
    others = [line for line in lines if '"t1-p"' not in line]
    cut = t1[-1][: t1[-1].index('"text"') + 12]          # keeps message_tree_id, cuts the text
    path = tmp_path / "cut.jsonl"
    path.write_text("\n".join([*t1[:-1], cut, *others]) + "\n")
    tenant_store = fresh(store)
    before = table_counts(tenant_store)
    result = import_file(tenant_store, path, "oasst")
    assert result.failed == 1 and "tree t1-p" in result.failures[0].source
    assert f"line {len(t1)}" in result.failures[0].reason
    assert result.imported == 1 and result.nodes == len(others)
    assert table_counts(tenant_store)[1] == before[1] + len(others)


def test_oasst_duplicate_flat_tree_is_skipped_once(store: convotree.Store, tmp_path: Path) -> None:
    lines = (FIX / "oasst_flat.jsonl").read_text().splitlines()
    t2 = [json.loads(line) for line in lines if '"t2-p"' in line]
    root = next(r for r in t2 if r["parent_id"] is None)
    tree_row = {"message_tree_id": "t2-p", "tree_state": "ready_for_export",
                "prompt": {**root, "replies": [
                    {**r, "replies": []} for r in t2 if r["parent_id"] == root["message_id"]]}}
    path = tmp_path / "dup.jsonl"
    path.write_text("\n".join([json.dumps(tree_row), *lines]) + "\n")
    result = import_file(fresh(store), path, "oasst")
    assert (result.imported, result.skipped, result.failed) == (2, 1, 0)


def test_native_counts_are_recomputed_not_trusted(store: convotree.Store,
                                                  tmp_path: Path) -> None:
    conv = store.create_conversation(title="tampered")
    node = store.append(conv, role="user", content="Count these words carefully, please.")
    exported = export_conversation(store, conv, "native")
    exported["conversation"]["id"] = str(uuid.uuid4())
    exported["nodes"][0]["token_count"] = 1
    exported["nodes"][0]["overhead_tokens"] = 10**9
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(exported))
    result = import_file(store, path, "native")
    assert result.imported == 1
    copy = store.tree(result.conversation_ids[0])[0]
    assert (copy.token_count, copy.overhead_tokens) == (node.token_count, node.overhead_tokens)


def test_native_unknown_encoding_fails_that_conversation_only(store: convotree.Store,
                                                             tmp_path: Path) -> None:
    conv = store.create_conversation(title="bogus encoding")
    store.append(conv, role="user", content="hello")
    good = export_conversation(store, conv, "native")
    bad = json.loads(json.dumps(good))
    bad["conversation"]["id"] = str(uuid.uuid4())
    bad["nodes"][0]["encoding"] = "bogus_base"
    fine = json.loads(json.dumps(good))
    fine["conversation"]["id"] = str(uuid.uuid4())
    path = tmp_path / "two.json"
    path.write_text(json.dumps([bad, fine]))
    before = table_counts(store)
    result = import_file(store, path, "native")
    assert (result.imported, result.failed) == (1, 1)
    assert "bogus_base" in result.failures[0].reason
    assert table_counts(store)[1] == before[1] + 1


@pytest.mark.parametrize("name", ["openwebui-importer__gpt_example.json",
                                  "chatgpt-export-parser__example-conversation.json"])
def test_chatgpt_export_puts_back_what_import_set_aside(store: convotree.Store,
                                                        name: str) -> None:
    """Hidden messages and the empty root come back with every parent link as it was."""
    source = json.loads((REAL / name).read_text())
    source = source[0] if isinstance(source, list) else source
    other = fresh(store)
    result = import_file(other, REAL / name, "chatgpt")
    exported = export_conversation(other, result.conversation_ids[0], "chatgpt")
    assert set(exported["mapping"]) == set(source["mapping"])
    for key, entry in source["mapping"].items():
        assert exported["mapping"][key]["parent"] == entry.get("parent"), key
        assert sorted(exported["mapping"][key]["children"]) == sorted(entry.get("children", []))
    assert exported["current_node"] == source["current_node"]


def test_oasst_flat_file_concatenated_twice(store: convotree.Store, tmp_path: Path) -> None:
    """The same flat rows twice (two exports joined): every tree once, each copy skipped;
    a row that differs under the same message id fails its tree."""
    lines = (FIX / "oasst_flat.jsonl").read_text().splitlines()
    once = import_file(fresh(store), FIX / "oasst_flat.jsonl", "oasst")
    path = tmp_path / "twice.jsonl"
    path.write_text("\n".join(lines + lines) + "\n")
    twice = import_file(fresh(store), path, "oasst")
    assert (twice.imported, twice.failed, twice.nodes) == (once.imported, 0, once.nodes)
    assert twice.skipped == once.imported
    changed = json.loads(lines[0])
    changed["text"] = "something else"
    path.write_text("\n".join([*lines, json.dumps(changed)]) + "\n")
    conflict = import_file(fresh(store), path, "oasst")
    assert conflict.failed == 1 and "appears twice with different content" in \
        conflict.failures[0].reason


@pytest.mark.parametrize(("fmt", "fixture"), [("oasst", "oasst_flat.jsonl"),
                                              ("openwebui", "openwebui_branching.json")])
def test_a_byte_order_mark_is_not_an_error(store: convotree.Store, tmp_path: Path, fmt: str,
                                           fixture: str) -> None:
    path = tmp_path / fixture
    path.write_bytes(b"\xef\xbb\xbf" + (FIX / fixture).read_bytes())
    plain = import_file(fresh(store), FIX / fixture, fmt)
    with_bom = import_file(fresh(store), path, fmt)
    assert (with_bom.imported, with_bom.failed, with_bom.nodes) == (
        plain.imported, 0, plain.nodes)


# --- re-importing exports: skipped, not copied ------------------------------------------

ID_FORMATS = ["native", "chatgpt", "librechat", "openwebui", "oasst"]


def _write_export(store: convotree.Store, conversation: uuid.UUID, fmt: str, path: Path
                  ) -> Path:
    doc = export_conversation(store, conversation, fmt)
    path.write_text(json.dumps(doc) + ("\n" if fmt == "oasst" else ""))
    return path


@pytest.mark.parametrize("fmt", ID_FORMATS)
def test_an_export_of_a_conversation_made_in_convotree_reimports_as_a_skip(
        store: convotree.Store, tmp_path: Path, fmt: str) -> None:
    mine = fresh(store)
    conv = mine.create_conversation(title="made here")
    ask = mine.append(conv, role="user", content="hi")
    answer = mine.append(conv, parent=ask, role="assistant", content="hello")
    mine.edit(answer, "hey")
    path = _write_export(mine, conv.id, fmt, tmp_path / f"export.{fmt}")
    before = table_counts(mine)
    result = import_file(mine, path, fmt)
    assert (result.imported, result.skipped, result.failed) == (0, 1, 0)
    assert table_counts(mine) == before
    # Another tenant has no such conversation: it imports a copy of its own (native
    # keeps exact ids, so there the id is taken and nothing is touched).
    other = fresh(store)
    outcome = import_file(other, path, fmt)
    if fmt == "native":
        assert outcome.failed == 1 and "already taken" in outcome.failures[0].reason
    else:
        assert outcome.imported == 1


@pytest.mark.parametrize(("source", "target"), [("chatgpt", "librechat"),
                                                ("chatgpt", "openwebui"),
                                                ("openwebui", "chatgpt"),
                                                ("librechat", "oasst")])
def test_an_imported_conversation_exported_in_another_format_is_skipped(
        store: convotree.Store, tmp_path: Path, source: str, target: str) -> None:
    files = {"chatgpt": FIX / "chatgpt_branching.json",
             "librechat": FIX / "librechat_flat.json",
             "openwebui": FIX / "openwebui_branching.json"}
    mine = fresh(store)
    first = import_file(mine, files[source], source)
    assert first.imported >= 1 and first.failed == 0
    before = table_counts(mine)
    for index, conversation in enumerate(first.conversation_ids):
        path = _write_export(mine, conversation, target, tmp_path / f"x{index}")
        again = import_file(mine, path, target)
        assert (again.imported, again.skipped) == (0, 1)
    assert table_counts(mine) == before


def test_an_openai_message_list_carries_no_id(store: convotree.Store, tmp_path: Path) -> None:
    """The one format without ids: the same file re-imports as a skip (its content hash
    is its id), but an export of a conversation made in convotree imports as a copy."""
    mine = fresh(store)
    conv = mine.create_conversation()
    mine.append(conv, role="user", content="hi")
    path = _write_export(mine, conv.id, "openai", tmp_path / "list.json")
    assert import_file(mine, path, "openai").imported == 1
    assert import_file(mine, path, "openai").skipped == 1


@pytest.mark.parametrize("fmt", ["chatgpt", "native"])
def test_replace_writes_the_conversation_again_in_one_transaction(
        store: convotree.Store, tmp_path: Path, fmt: str) -> None:
    mine = fresh(store)
    source = FIX / "chatgpt_branching.json"
    first = import_file(mine, source, "chatgpt")
    cid = first.conversation_ids[0]
    summary = mine.add_summary(mine.leaves(cid)[0], "Summary of the earlier conversation:\n-")
    path = source if fmt == "chatgpt" else _write_export(mine, cid, "native", tmp_path / "n")
    again = import_file(mine, path, fmt, replace=True)
    count = first.imported if fmt == "chatgpt" else 1
    assert (again.imported, again.replaced, again.skipped) == (count, count, 0)
    assert cid in again.conversation_ids
    kinds = [n.kind for n in mine.tree(cid)]
    if fmt == "chatgpt":   # the file has no summary: the stored one went with the old copy
        assert "summary" not in kinds
        with pytest.raises(errors.NodeNotFound):
            mine.node(cid, summary.id)
    else:                  # a native backup holds it
        assert kinds.count("summary") == 1
