"""Single-writer append throughput: ``Store.append`` vs a raw INSERT loop.

Both commit every message (one transaction each), on the same database and engine
settings. convotree's append also validates, tokenizes, reads the parent (depth,
tool pairing, pinned pointer) and moves the conversation's current node.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import convotree
from convotree._ids import uuid7

RAW_INSERT = (
    "INSERT INTO convotree_nodes (conversation_id, id, parent_id, depth, kind, role, content, "
    "token_count, overhead_tokens, encoding, pinned, created_at) "
    "VALUES ({p}, {p}, {p}, {p}, 'message', {p}, {p}, 0, 0, 'o200k_base', {false}, {p})"
)


def convotree_rate(store: convotree.Store, texts: list[str], count: int) -> float:
    conv = store.create_conversation(title="append bench")
    parent = store.append(conv, role="system", content="Be brief.")
    started = time.perf_counter()
    for index in range(count):
        parent = store.append(conv, parent=parent, role="user" if index % 2 else "assistant",
                              content=texts[index % len(texts)])
    return count / (time.perf_counter() - started)


def raw_rate(store: convotree.Store, texts: list[str], count: int) -> float:
    conv = store.create_conversation(title="raw bench")
    sqlite = store.engine.dialect.name == "sqlite"
    sql = RAW_INSERT.format(p="?" if sqlite else "%s", false="0" if sqlite else "false")
    raw = store.engine.raw_connection()
    conv_id = conv.id.hex if sqlite else conv.id
    parent = None
    try:
        started = time.perf_counter()
        for index in range(count):
            node: uuid.UUID = uuid7()
            now = datetime.now(UTC)
            cursor = raw.cursor()
            if sqlite:
                cursor.execute("BEGIN")
            cursor.execute(sql, (conv_id, node.hex if sqlite else node,
                                 (parent.hex if sqlite else parent) if parent else None, index,
                                 "user" if index % 2 else "assistant",
                                 texts[index % len(texts)],
                                 now.replace(tzinfo=None).isoformat(" ") if sqlite else now))
            raw.commit()
            cursor.close()
            parent = node
        return count / (time.perf_counter() - started)
    finally:
        raw.close()
