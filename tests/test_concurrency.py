"""Concurrent writers and readers: nothing lost, nothing half-seen (modest sizes; the
large runs are ``python -m benchmarks.concurrency_bench``).

- N asyncio tasks and N processes appending under the same parent make N siblings,
  with no lost write and no error; the conversation's current node is one of them
  (last writer wins) and always a node of its own conversation.
- A context assembled while another task appends to the same branch is always a
  consistent prefix of the branch: one statement, one snapshot, no half-written node.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import convotree
from tests import sql_audit

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TASKS = 8
EACH = 15


def _check_siblings(url: str, conversation_id: uuid.UUID, parent_id: uuid.UUID,
                    expected: int) -> None:
    with convotree.Store(url) as store:
        children = store.children(store.node(conversation_id, parent_id))
        assert len(children) == expected
        assert len({child.id for child in children}) == expected
        current = store.current(conversation_id)
        assert current is not None and current.id in {c.id for c in children}
        assert current.conversation_id == conversation_id


def test_async_tasks_appending_under_one_parent_lose_nothing(db_url: str) -> None:
    async def scenario() -> tuple[uuid.UUID, uuid.UUID]:
        async with convotree.AsyncStore(db_url) as store:
            conv = await store.create_conversation(title="crowd")
            root = await store.append(conv, role="system", content="root")

            async def writer(index: int) -> None:
                for turn in range(EACH):
                    await store.append(conv, parent=root, role="user",
                                       content=f"task {index} turn {turn}")

            await asyncio.gather(*(writer(i) for i in range(TASKS)))
            return conv.id, root.id

    conversation_id, root_id = asyncio.run(scenario())
    _check_siblings(db_url, conversation_id, root_id, TASKS * EACH)


WRITER = """
import sys, uuid, convotree
url, conv, parent, index, count = sys.argv[1:6]
with convotree.Store(url) as store:
    for turn in range(int(count)):
        store.append(uuid.UUID(conv), parent=uuid.UUID(parent), role="user",
                     content=f"process {index} turn {turn}")
"""


def test_processes_appending_under_one_parent_lose_nothing(db_url: str) -> None:
    with convotree.Store(db_url) as store:
        conv = store.create_conversation(title="processes")
        root = store.append(conv, role="system", content="root")
    processes = [subprocess.Popen(
        [sys.executable, "-c", WRITER, db_url, str(conv.id), str(root.id), str(i), str(EACH)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True) for i in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, errors
    _check_siblings(db_url, conv.id, root.id, 4 * EACH)


def test_a_context_read_during_appends_is_a_consistent_prefix(db_url: str) -> None:
    async def scenario() -> tuple[list[list[Any]], list[uuid.UUID]]:
        async with convotree.AsyncStore(db_url) as store:
            conv = await store.create_conversation(title="moving branch")
            leaf = await store.append(conv, role="system", content="root")
            branch = [leaf.id]
            seen: list[list[Any]] = []
            done = asyncio.Event()

            async def writer() -> None:
                nonlocal leaf
                for turn in range(60):
                    leaf = await store.append(conv, parent=leaf, role="user" if turn % 2
                                              else "assistant", content=f"turn {turn}")
                    branch.append(leaf.id)
                done.set()

            async def reader() -> None:
                while not done.is_set():
                    current = await store.current(conv)
                    assert current is not None
                    ctx = await store.context(current, model="gpt-4o")
                    seen.append(list(ctx.node_ids))
                    await asyncio.sleep(0)

            await asyncio.gather(writer(), reader(), reader())
            return seen, branch

    seen, branch = asyncio.run(scenario())
    assert len(seen) > 3
    for ids in seen:
        assert ids == branch[:len(ids)]   # the root and a contiguous run, nothing torn


def test_every_async_statement_is_audited_too(db_url: str) -> None:
    async def scenario() -> None:
        async with convotree.AsyncStore(db_url) as store:
            conv = await store.create_conversation()
            await store.append(conv, role="user", content="hi")

    with sql_audit.capture() as log:
        asyncio.run(scenario())
    assert any("INSERT INTO convotree_nodes" in statement for statement in log)
