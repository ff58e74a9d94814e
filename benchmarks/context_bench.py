"""Assembling a context: convotree vs the bare bounded CTE (the floor) vs a naive assembler.

- convotree: ``Store.context(leaf, model="gpt-4o", budget=B)``, everything included
  (query, pricing, pruning, message building, report).
- floor: the bounded leaf-to-root recursive CTE alone, in raw SQL on the driver's own
  cursor, rows fetched into Python: no pruning, no message building.
- naive: what most chat-history libraries do: load the whole path, tokenize every
  message with tiktoken, prune in Python.
"""

from __future__ import annotations

from typing import Any

import convotree
from convotree.tokens import count_messages

from ._timing import median_ms, paired_median_ms

FLOOR_SQL = """
WITH RECURSIVE walk(id, parent_id, role, content, parts, name, tool_calls, tool_call_id,
                    token_count, overhead_tokens, running) AS (
  SELECT id, parent_id, role, content, parts, name, tool_calls, tool_call_id, token_count,
         overhead_tokens, token_count + overhead_tokens
    FROM convotree_nodes WHERE conversation_id = {p} AND id = {p}
  UNION ALL
  SELECT n.id, n.parent_id, n.role, n.content, n.parts, n.name, n.tool_calls,
         n.tool_call_id, n.token_count, n.overhead_tokens,
         w.running + n.token_count + n.overhead_tokens
    FROM convotree_nodes n JOIN walk w ON n.id = w.parent_id
   WHERE n.conversation_id = {p} AND w.running <= {p}
)
SELECT * FROM walk
"""


def floor_runner(store: convotree.Store, leaf: convotree.Node, budget: int) -> Any:
    """The bare bounded CTE on a raw DBAPI connection, held open like a pool would."""
    raw = store.engine.raw_connection()
    sqlite = store.engine.dialect.name == "sqlite"
    sql = FLOOR_SQL.format(p="?" if sqlite else "%s")
    ids = (leaf.conversation_id.hex, leaf.id.hex) if sqlite else (leaf.conversation_id, leaf.id)
    params = (ids[0], ids[1], ids[0], budget)

    def run() -> list[Any]:
        cursor = raw.cursor()
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        cursor.close()
        raw.commit()
        return rows

    run.close = raw.close  # type: ignore[attr-defined]
    return run


def naive_context(store: convotree.Store, leaf: convotree.Node, model: str, budget: int
                  ) -> list[dict[str, Any]]:
    path = store.path(leaf)
    messages = [node.to_message() for node in path]
    costs = [count_messages([m], model=model) - 3 for m in messages]
    keep = {i for i, m in enumerate(messages) if m["role"] in ("system", "developer")}
    remaining = budget - 3 - sum(costs[i] for i in keep)
    for index in range(len(messages) - 1, -1, -1):
        if index in keep:
            continue
        if costs[index] > remaining:
            break
        remaining -= costs[index]
        keep.add(index)
    return [messages[i] for i in sorted(keep)]


def measure(store: convotree.Store, leaf: convotree.Node, budget: int, repeat: int,
            with_naive: bool) -> dict[str, float]:
    ctx = store.context(leaf, model="gpt-4o", budget=budget)
    floor = floor_runner(store, leaf, budget)
    try:
        ours, bare = paired_median_ms(
            lambda: store.context(leaf, model="gpt-4o", budget=budget), floor, repeat=repeat)
        result = {
            "convotree": ours,
            "floor": bare,
            "messages": float(len(ctx.messages)),
            "tokens": float(ctx.tokens),
            "rows": float(ctx.report.rows_read),
        }
    finally:
        floor.close()
    if with_naive:
        naive = naive_context(store, leaf, "gpt-4o", budget)
        assert naive == ctx.messages, "naive and convotree disagree"
        result["naive"] = median_ms(lambda: naive_context(store, leaf, "gpt-4o", budget),
                                    repeat=repeat, max_seconds=3.0, warmup=0)
    return result
