"""Reporting at scale: the cookbook's queries over a million messages.

``python -m benchmarks reporting [--messages N] [--conversations N] [--backends ...]``

Why this benchmark exists: the reporting views (migration 0006) compute everything from
the tree when queried, nothing is stored ahead, so what a dashboard query costs is what
the planner makes of the view. This fills a database with branching conversations
(regenerations, edits, tool calls, summaries, usage on every answer, twenty tenants,
ninety days), runs each query of docs/reporting.md's cookbook and each
``convotree.reporting`` function with typical parameters, and prints the median time
and what the plan reads (indexes, full scans). Defaults: 1,000,000 messages in 10,000
conversations on PostgreSQL, 200,000 in 2,000 on SQLite; ``--quick`` is a small run
that writes no file.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import convotree
from convotree import reporting

from ._cookbook import queries
from ._data import Pool
from ._timing import parse_run_publish, table
from .plans_bench import drop_postgres_database, postgres_database

RESULTS = Path(__file__).resolve().parent / "results" / "reporting.md"
MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-5", "o4-mini")
REASONING = {"gpt-5", "o4-mini"}
TOOLS = ("get_weather", "search_docs", "lookup_order", "send_email")
TENANTS = tuple(f"tenant-{i:02d}" for i in range(20))
START = datetime(2026, 8, 1, tzinfo=UTC)
NODE_COLUMNS = (
    "conversation_id", "id", "parent_id", "depth", "kind", "role", "content", "name",
    "tool_calls", "tool_call_id", "model", "token_count", "overhead_tokens", "encoding",
    "input_tokens", "output_tokens", "finish_reason", "cached_tokens", "reasoning_tokens",
    "counted_input_tokens", "compacted", "pinned", "pinned_ancestor_id", "created_at")


@dataclass
class Data:
    #: (id, tenant, title, created_at, updated_at, current node id)
    conversations: list[tuple[Any, ...]] = field(default_factory=list)
    nodes: list[tuple[Any, ...]] = field(default_factory=list)


class _Builder:
    """The nodes of one generated conversation, appended to ``rows`` as they are made."""

    def __init__(self, rng: random.Random, pool: Pool, rows: list[tuple[Any, ...]],
                 cid: uuid.UUID, clock: datetime) -> None:
        self.rng, self.pool, self.rows, self.cid, self.clock = rng, pool, rows, cid, clock
        self.first = len(rows)
        self.path_tokens = 0

    def node(self, parent: tuple[Any, ...] | None, role: str, kind: str = "message",
             **extra: Any) -> tuple[Any, ...]:
        rng = self.rng
        self.clock += timedelta(seconds=rng.randrange(5, 400))
        text = (self.pool.system if role == "system" else rng.choice(
            self.pool.assistant if role in ("assistant", "tool") else self.pool.user))
        values: dict[str, Any] = {
            "conversation_id": self.cid, "id": uuid.UUID(int=rng.getrandbits(128), version=4),
            "parent_id": parent[1] if parent else None,
            "depth": parent[3] + 1 if parent else 0, "kind": kind, "role": role,
            "content": text.content, "name": None, "tool_calls": None, "tool_call_id": None,
            "model": None, "token_count": text.token_count,
            "overhead_tokens": text.overhead_tokens, "encoding": "o200k_base",
            "input_tokens": None, "output_tokens": None, "finish_reason": None,
            "cached_tokens": None, "reasoning_tokens": None, "counted_input_tokens": None,
            "compacted": False, "pinned": False,
            "pinned_ancestor_id": self.rows[self.first][1] if parent else None,
            "created_at": self.clock}
        if role == "assistant" or kind == "summary":
            model = rng.choice(MODELS)
            billed = self.path_tokens + rng.randrange(0, 40)
            values.update(
                model=model, input_tokens=billed, output_tokens=text.token_count,
                finish_reason="stop", cached_tokens=billed // 2 if rng.random() < 0.6 else 0,
                reasoning_tokens=rng.randrange(0, 600) if model in REASONING else 0,
                counted_input_tokens=billed - rng.randrange(-3, 8))
        values.update(extra)
        row = tuple(values[c] for c in NODE_COLUMNS)
        self.rows.append(row)
        if kind == "message" and role in ("user", "assistant"):
            self.path_tokens += text.token_count + text.overhead_tokens
        return row


def generate(conversations: int, messages: int, pool: Pool, seed: int = 17) -> Data:
    """Branching conversations, ``messages`` nodes in all (summaries included).

    Each conversation: a system root, a spine of user/assistant turns (some answers call
    a tool, whose result follows), regenerated answers (another answer under the same
    prompt), edited prompts (another prompt under the same answer, with an answer), a
    summary every 40 levels; its current node is the spine's leaf, or now and then a
    side branch's.
    """
    rng = random.Random(seed)
    data = Data()
    per = messages / conversations
    for index in range(conversations):
        cid = uuid.UUID(int=rng.getrandbits(128), version=4)
        tenant = TENANTS[min(int(rng.paretovariate(1.2)) - 1, len(TENANTS) - 1)]
        created = START + timedelta(seconds=rng.randrange(90 * 86_400))
        build = _Builder(rng, pool, data.nodes, cid, created)
        target = max(3, int(rng.uniform(0.4, 1.6) * per))
        root = spine = build.node(None, "system")
        side_leaves: list[tuple[Any, ...]] = []
        while len(data.nodes) - build.first < target:
            prompt = build.node(spine, "user")
            if rng.random() < 0.04 and spine is not root:       # an edited prompt
                edit = build.node(spine, "user")
                side_leaves.append(build.node(edit, "assistant"))
            if rng.random() < 0.06:                             # a tool call
                call_id = f"call_{rng.getrandbits(40):010x}"
                calls = [{"id": call_id, "type": "function", "function": {
                    "name": rng.choice(TOOLS), "arguments": json.dumps({"q": index})}}]
                asked = build.node(prompt, "assistant", tool_calls=calls, content=None,
                                   token_count=0, finish_reason="tool_calls")
                prompt = build.node(asked, "tool", tool_call_id=call_id)
            answer = build.node(prompt, "assistant")
            for _ in range(rng.choice((0, 0, 0, 0, 0, 0, 0, 1, 1, 2))):   # regenerations
                side_leaves.append(build.node(prompt, "assistant"))
            spine = answer
            if spine[3] % 40 == 0 or (spine[3] % 40 == 1 and rng.random() < 0.5):
                build.node(spine, "system", kind="summary")
        current = rng.choice(side_leaves) if side_leaves and rng.random() < 0.1 else spine
        data.conversations.append((cid, tenant, f"conversation {index}", created,
                                   build.clock, current[1]))
    return data


# --- loading -------------------------------------------------------------------------------


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def load_postgres(url: str, data: Data) -> None:
    import psycopg

    conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
    json_at = NODE_COLUMNS.index("tool_calls")
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        with cur.copy("COPY convotree_conversations (id, tenant_id, title, created_at, "
                      "updated_at) FROM STDIN") as copy:
            for row in data.conversations:
                copy.write_row(row[:5])
        with cur.copy(f"COPY convotree_nodes ({', '.join(NODE_COLUMNS)}) FROM STDIN") as copy:
            for row in data.nodes:
                copy.write_row((*row[:json_at], _json(row[json_at]), *row[json_at + 1:]))
        cur.execute("CREATE TEMPORARY TABLE current_nodes (id uuid, node uuid)")
        with cur.copy("COPY current_nodes FROM STDIN") as copy:
            for row in data.conversations:
                copy.write_row((row[0], row[5]))
        cur.execute("UPDATE convotree_conversations c SET current_node_id = t.node "
                    "FROM current_nodes t WHERE t.id = c.id")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    if isinstance(value, list):
        return json.dumps(value)
    return value


def load_sqlite(path: Path, data: Data) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany("INSERT INTO convotree_conversations (id, tenant_id, title, "
                         "created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                         ([_sqlite_value(v) for v in row[:5]] for row in data.conversations))
        conn.executemany(
            f"INSERT INTO convotree_nodes ({', '.join(NODE_COLUMNS)}) VALUES "
            f"({', '.join('?' * len(NODE_COLUMNS))})",
            ([_sqlite_value(v) for v in row] for row in data.nodes))
        conn.executemany("UPDATE convotree_conversations SET current_node_id = ? WHERE id = ?",
                         ((row[5].hex, row[0].hex) for row in data.conversations))
    conn.execute("ANALYZE")
    conn.close()


# --- parameters, plans, timing ---------------------------------------------------------------


def parameters(backend: str, data: Data) -> dict[str, Any]:
    """Typical values: the tenant with the median number of conversations, the
    conversation of median size, the last 30 days."""
    by_tenant: dict[str, int] = {}
    for row in data.conversations:
        by_tenant[row[1]] = by_tenant.get(row[1], 0) + 1
    ranked = sorted(by_tenant, key=lambda t: (by_tenant[t], t))
    tenant = ranked[len(ranked) // 2]
    sizes: dict[uuid.UUID, int] = {}
    summarized: set[uuid.UUID] = set()
    for node in data.nodes:
        sizes[node[0]] = sizes.get(node[0], 0) + 1
        if node[4] == "summary":
            summarized.add(node[0])
    candidates = sorted((n, c) for c, n in sizes.items() if c in summarized or not summarized)
    conversation = candidates[len(candidates) // 2][1]
    last = max(row[4] for row in data.conversations)
    since = (last - timedelta(days=30)).date()
    cutoff = last - timedelta(days=30)
    if backend == "sqlite":
        return {"tenant": tenant, "conversation_id": conversation.hex,
                "since": since.isoformat(), "cutoff": _sqlite_value(cutoff),
                "quota": 1_000_000}
    return {"tenant": tenant, "conversation_id": conversation, "since": since,
            "cutoff": cutoff, "quota": 1_000_000}


def _used(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if re.search(rf":{k}\b", sql)}


def plan_summary(conn: sa.Connection, backend: str, sql: str, params: dict[str, Any]) -> str:
    """What the plan reads: each index (or "full scan of <table>"), once."""
    seen: list[str] = []
    if backend == "postgresql":
        lines = [r[0] for r in conn.execute(sa.text(f"EXPLAIN {sql}"), params)]
        for line in lines:
            index = re.search(r"(Index Only Scan|Index Scan|Bitmap Index Scan) "
                              r"(?:Backward )?(?:using|on) (\w+)", line)
            full = re.search(r"Seq Scan on (\w+)", line)
            item = (f"{'index-only ' if index[1] == 'Index Only Scan' else ''}{index[2]}"
                    if index else f"full scan of {full[1]}" if full else None)
            if item and item not in seen:
                seen.append(item)
    else:
        for row in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {sql}"), params):
            detail = row[-1]
            index = re.search(r"USING (?:COVERING )?INDEX (\w+)|USING (INTEGER )?PRIMARY KEY",
                              detail)
            scan = re.match(r"SCAN (\w+)", detail)
            item = (index[1] or "primary key" if index else
                    f"full scan of {scan[1]}" if scan and "INDEX" not in detail else None)
            if item and item not in seen:
                seen.append(item)
    return ", ".join(seen) or "-"


def median_ms(run: Callable[[], object], repeat: int) -> float:
    run()   # warm the cache once
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(backend: str, url: str, data: Data, repeat: int) -> list[list[str]]:
    """Each query with the typical parameters; those that name a tenant once more with
    the largest tenant (about half of everything), the worst case for a tenant's report."""
    engine = sa.create_engine(url)
    typical = parameters(backend, data)
    largest = {**typical, "tenant": Counter(r[1] for r in data.conversations).most_common(1)[0][0]}
    rows: list[list[str]] = []
    with engine.connect() as conn:
        for name, sql in queries(backend).items():
            cases = [("typical", typical)] + ([("largest", largest)] if ":tenant" in sql else [])
            for case, params in cases:
                bound = _used(sql, params)

                def run(sql: str = sql, bound: dict[str, Any] = bound) -> object:
                    return conn.execute(sa.text(sql), bound).all()

                count = len(conn.execute(sa.text(sql), bound).all())
                rows.append([backend, name, case, f"{median_ms(run, repeat):,.1f}",
                             f"{count:,}", plan_summary(conn, backend, sql, bound)])
        conn.rollback()
    last_day = max(r[4] for r in data.conversations).date()
    for case, params in (("typical", typical), ("largest", largest)):
        with convotree.Store(engine, tenant=params["tenant"]) as store:
            reports: dict[str, Callable[[], object]] = {
                "reporting.totals": lambda store=store: reporting.totals(store),
                "reporting.by_model": lambda store=store: reporting.by_model(store),
                "reporting.by_day (30 days)": lambda store=store: reporting.by_day(
                    store, days=30, today=last_day),
                "reporting.conversation_stats (20)":
                    lambda store=store: reporting.conversation_stats(store, limit=20),
            }
            for name, report in reports.items():
                rows.append([backend, name, case, f"{median_ms(report, repeat):,.1f}", "", ""])
    engine.dispose()
    return rows


def run(args: argparse.Namespace) -> str:
    pool = Pool.build()
    sizes = {"postgresql": (args.messages, args.conversations),
             "sqlite": (args.sqlite_messages, args.sqlite_conversations)}
    if args.quick:
        small = (min(args.messages, 20_000), min(args.conversations, 200))
        sizes = {"postgresql": small, "sqlite": small}
    out = [f"# Reporting views at scale ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
           f"Command: `{' '.join(['python -m benchmarks reporting', *args.argv])}`",
           "",
           f"Median of {args.repeat} runs after one warm-up, on one connection; rows "
           "returned; what the plan reads (EXPLAIN / EXPLAIN QUERY PLAN). Tenant: "
           "\"typical\" is the tenant with the median number of conversations, "
           "\"largest\" the biggest one (tenants are Pareto-distributed, as customers "
           "are).", ""]
    results: list[list[str]] = []
    fills: list[str] = []
    for backend in args.backends:
        messages, conversations = sizes[backend]
        data = generate(conversations, messages, pool)
        start = time.perf_counter()
        if backend == "postgresql":
            pg = postgres_database()
            if pg is None:
                out.append("PostgreSQL unavailable: skipped.")
                continue
            url, admin = pg
            try:
                convotree.migrate(url)
                load_postgres(url, data)
                fills.append(f"PostgreSQL: {len(data.nodes):,} nodes in "
                             f"{len(data.conversations):,} conversations, loaded in "
                             f"{time.perf_counter() - start:,.0f} s")
                results += measure(backend, url, data, args.repeat)
            finally:
                drop_postgres_database(admin)
        else:
            with tempfile.TemporaryDirectory(prefix="convotree-reporting-") as folder:
                path = Path(folder) / "reporting.db"
                url = f"sqlite:///{path}"
                convotree.migrate(url)
                load_sqlite(path, data)
                fills.append(f"SQLite: {len(data.nodes):,} nodes in "
                             f"{len(data.conversations):,} conversations, loaded in "
                             f"{time.perf_counter() - start:,.0f} s")
                results += measure(backend, url, data, args.repeat)
    out += [*(f"- {line}" for line in fills), "",
            table(["backend", "query", "tenant", "median ms", "rows", "plan reads"], results), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks reporting",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000,
                        help="nodes on PostgreSQL (default 1,000,000)")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--sqlite-messages", type=int, default=200_000)
    parser.add_argument("--sqlite-conversations", type=int, default=2_000)
    parser.add_argument("--backends", default="postgresql,sqlite",
                        type=lambda s: s.split(","))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="at most 20,000 messages in 200 conversations per backend; "
                             "writes no file")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"write the report here too (default: {RESULTS.name} for a "
                             "full run; a --quick run writes no file)")
    return parse_run_publish(parser, argv, run, RESULTS)


if __name__ == "__main__":
    sys.exit(main())
