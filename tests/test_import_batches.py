"""Imports write conversations in batches; each conversation stays all or nothing.

The importer puts many small conversations in one transaction (a commit per batch, not
per conversation). These tests hold it to what README promises per conversation: one
the database refuses fails alone and the others of its batch are written; a
conversation twice in one file is written once; progress still counts every record;
a batch larger than one statement's worth of rows still lands whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import convotree
from convotree.interchange import _runner, import_file
from tests import sql_audit


def _conversation(key: str, size: int = 3, title: str | None = None) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for index in range(size):
        node = f"{key}-{index}"
        mapping[node] = {
            "id": node, "parent": f"{key}-{index - 1}" if index else None,
            "children": [f"{key}-{index + 1}"] if index + 1 < size else [],
            "message": {"id": node, "author": {"role": "user" if index % 2 == 0
                                                else "assistant"},
                        "create_time": 1_700_000_000 + index,
                        "content": {"content_type": "text",
                                    "parts": [f"{key}: message {index}"]}}}
    return {"id": key, "title": title or f"conversation {key}",
            "create_time": 1_700_000_000, "mapping": mapping,
            "current_node": f"{key}-{size - 1}"}


def _export(path: Path, conversations: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(conversations))
    return path


def _fresh(db_url: str, name: str) -> convotree.Store:
    import uuid

    return convotree.Store(db_url, tenant=f"{name}-{uuid.uuid4().hex[:8]}")


def _refuse_title(engine: sa.Engine, title: str) -> None:
    """A trigger that makes the database itself refuse one conversation: a failure no
    validation of convotree's can see coming."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON convotree_conversations "
                f"WHEN NEW.title = '{title}' BEGIN SELECT RAISE(ABORT, 'refused'); END")
        else:
            conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.title = '{title}' THEN RAISE EXCEPTION 'refused'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql")
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON convotree_conversations "
                "FOR EACH ROW EXECUTE FUNCTION refuse_poison()")


def _drop_refusal(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER refuse_poison")
        else:
            conn.exec_driver_sql("DROP TRIGGER refuse_poison ON convotree_conversations")
            conn.exec_driver_sql("DROP FUNCTION refuse_poison()")


def test_a_conversation_the_database_refuses_fails_alone(empty_db_url: str,
                                                         tmp_path: Path) -> None:
    store = convotree.Store(empty_db_url, create=True)
    title = "poison"
    _refuse_title(store.engine, title)
    try:
        items = [_conversation(f"c{i}", title=title if i == 3 else None) for i in range(7)]
        result = import_file(store, _export(tmp_path / "c.json", items), "chatgpt")
        assert (result.imported, result.failed, result.nodes) == (6, 1, 18)
        assert "refused" in result.failures[0].reason
        assert "c3" in result.failures[0].source
        titles = sorted(c.title or "" for c in store.list_conversations(limit=50))
        assert titles == sorted(f"conversation c{i}" for i in range(7) if i != 3)
        for conversation in store.list_conversations(limit=50):   # each one whole
            assert len(store.tree(conversation)) == 3
            assert store.current(conversation) is not None
    finally:
        _drop_refusal(store.engine)
        store.close()


def test_the_same_conversation_twice_in_one_file_is_written_once(db_url: str,
                                                                tmp_path: Path) -> None:
    store = _fresh(db_url, "twice")
    items = [_conversation("a"), _conversation("b"), _conversation("a")]
    result = import_file(store, _export(tmp_path / "c.json", items), "chatgpt")
    assert (result.imported, result.skipped, result.failed) == (2, 1, 0)
    assert len(store.list_conversations(limit=10)) == 2
    again = import_file(store, _export(tmp_path / "c.json", items), "chatgpt",
                        replace=True)
    assert (again.imported, again.replaced, again.failed) == (3, 3, 0)
    assert len(store.list_conversations(limit=10)) == 2


def test_progress_counts_every_record_in_order(db_url: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_runner, "BATCH_CONVERSATIONS", 4)   # several batches
    store = _fresh(db_url, "progress")
    items = [_conversation(f"p{i}") for i in range(10)]
    items[5]["mapping"]["p5-1"]["parent"] = "nowhere"           # a broken one in the middle
    seen: list[int] = []
    result = import_file(store, _export(tmp_path / "c.json", items), "chatgpt",
                         on_progress=seen.append)
    assert (result.imported, result.failed) == (9, 1)
    assert seen == sorted(seen) and seen[-1] == 10
    assert len(set(seen)) == len(seen)


def test_a_batch_larger_than_one_statement_lands_whole(db_url: str, tmp_path: Path) -> None:
    """More nodes than ``_bulk.BATCH`` in one batch: the node inserts are split, the
    conversations are not."""
    store = _fresh(db_url, "large")
    items = [_conversation(f"l{i}", size=120) for i in range(15)]   # 1,800 nodes
    result = import_file(store, _export(tmp_path / "c.json", items), "chatgpt")
    assert (result.imported, result.nodes, result.failed) == (15, 1_800, 0)
    with sql_audit.unaudited(), store.engine.connect() as conn:
        per_conversation = conn.execute(sa.text(
            "SELECT count(*) FROM convotree_nodes n JOIN convotree_conversations c "
            "ON c.id = n.conversation_id WHERE c.tenant_id = :t GROUP BY c.id"),
            {"t": store.tenant}).scalars().all()
    assert sorted(per_conversation) == [120] * 15
