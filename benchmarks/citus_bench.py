"""convotree on Citus next to one PostgreSQL server: ``python -m benchmarks citus``.

For every store call and every report: the statements it sends, how many shards Citus
sends each one to (``Task Count`` of its EXPLAIN on the distributed database: 1 is a
single-shard "router" query, the shard count a query on every shard), and its median
time on the Citus cluster and on the plain server, with the same data in both. Also
prints the whole EXPLAIN of ``context()``'s one statement.

The cluster is the one ``scripts/citus-cluster start`` makes (coordinator and workers
from ``CONVOTREE_TEST_POSTGRES_URL`` / ``CONVOTREE_TEST_CITUS_WORKERS``, or
``--coordinator``/``--workers``); the plain server is ``CONVOTREE_BENCH_POSTGRES_URL``
(default: the local test server). A database ``convotree_citus_bench`` is made on each
node for the run and dropped afterwards. Writes ``benchmarks/results/citus.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"
if "TIKTOKEN_CACHE_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_SHARED)

import convotree  # noqa: E402
from convotree import reporting  # noqa: E402

from ._data import Pool, load_tree  # noqa: E402
from ._timing import paired_median_ms, parse_run_publish, table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "citus.md"
DATABASE = "convotree_citus_bench"
COORDINATOR = os.environ.get("CONVOTREE_TEST_POSTGRES_URL",
                             "postgresql+psycopg://postgres@127.0.0.1:9700/test")
WORKERS = os.environ.get("CONVOTREE_TEST_CITUS_WORKERS", "127.0.0.1:9701,127.0.0.1:9702")
PLAIN = os.environ.get("CONVOTREE_BENCH_POSTGRES_URL",
                       "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _admin(url: sa.URL, *statements: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _nodes(coordinator: str, workers: str) -> list[sa.URL]:
    base = make_url(coordinator)
    found = [base]
    for worker in filter(None, (w.strip() for w in workers.split(","))):
        host, _, port = worker.rpartition(":")
        found.append(base.set(host=host, port=int(port)))
    return found


def _fresh(nodes: list[sa.URL]) -> str:
    """The bench database on every node; with workers, a Citus database of them."""
    for node in nodes:
        _admin(node, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)",
               f"CREATE DATABASE {DATABASE}")
    if len(nodes) > 1:
        for node in nodes[1:]:
            _admin(node.set(database=DATABASE), "CREATE EXTENSION citus")
        head = nodes[0]
        _admin(head.set(database=DATABASE), "CREATE EXTENSION citus",
               f"SELECT citus_set_coordinator_host('{head.host}', {head.port or 5432})",
               *(f"SELECT citus_add_node('{n.host}', {n.port})" for n in nodes[1:]))
    return nodes[0].set(database=DATABASE).render_as_string(hide_password=False)


def _drop(nodes: list[sa.URL]) -> None:
    for node in nodes:
        _admin(node, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


@dataclass
class Data:
    store: convotree.Store
    leaf: convotree.Node
    parent: convotree.Node      # the leaf's parent (its children: the leaf, a side branch)
    conversation: convotree.Conversation
    nodes: int


def _load(url: str, args: argparse.Namespace, pool: Pool) -> Data:
    store = convotree.Store(url)
    total = 0
    leaf = None
    for index in range(args.conversations):
        node, count = load_tree(store, pool, spine=args.depth, side_branches=1, seed=index)
        total += count
        if index == args.conversations // 2:
            leaf = node
    assert leaf is not None
    parent = store.path(leaf)[-2]
    return Data(store, leaf, parent, store.get_conversation(leaf.conversation_id), total)


#: The calls measured: name -> what it does with the loaded data.
OPERATIONS: dict[str, Callable[[Data], object]] = {
    "append": lambda d: d.store.append(d.conversation, parent=d.leaf, role="user",
                                       content="one more question", set_current=False),
    "context (gpt-4o, 16k)": lambda d: d.store.context(d.leaf, model="gpt-4o", budget=16_000),
    "edit (a sibling answer)": lambda d: d.store.edit(d.leaf, "another answer",
                                                      set_current=False),
    "append_chain (2 messages)": lambda d: d.store.append_chain(
        d.leaf, [{"role": "user", "content": "and then?"},
                 {"role": "assistant", "content": "then this."}], set_current=False),
    "append + add_summary": lambda d: d.store.add_summary(
        d.store.append(d.conversation, parent=d.leaf, role="user", content="summarize",
                       set_current=False), "what was said", model="gpt-4o-mini"),
    "append + delete_subtree": lambda d: d.store.delete_subtree(
        d.store.append(d.conversation, parent=d.leaf, role="user", content="gone",
                       set_current=False)),
    "path": lambda d: d.store.path(d.leaf),
    "tail (20)": lambda d: d.store.tail(d.leaf, 20),
    "children": lambda d: d.store.children(d.parent),
    "tree": lambda d: d.store.tree(d.conversation),
    "leaves": lambda d: d.store.leaves(d.conversation),
    "current": lambda d: d.store.current(d.conversation),
    "get_conversation": lambda d: d.store.get_conversation(d.conversation),
    "list_conversations (50)": lambda d: d.store.list_conversations(limit=50),
    "reporting.conversation_stats (20)": lambda d: reporting.conversation_stats(
        d.store, limit=20),
    "reporting.totals": lambda d: reporting.totals(d.store),
    "reporting.by_model": lambda d: reporting.by_model(d.store),
}


def _statements(data: Data, run: Callable[[Data], object]) -> list[tuple[str, Any]]:
    sent: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
             executemany: bool) -> None:
        if re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", statement, re.IGNORECASE):
            sent.append((statement, parameters))

    sa.event.listen(data.store.engine, "before_cursor_execute", keep)
    try:
        run(data)
    finally:
        sa.event.remove(data.store.engine, "before_cursor_execute", keep)
    return sent


def _explain(engine: sa.Engine, statement: str, parameters: Any) -> str:
    with engine.connect() as conn:
        text = "\n".join(str(r[0]) for r in conn.exec_driver_sql(
            f"EXPLAIN (COSTS OFF) {statement}", parameters))
        conn.rollback()
    return text


def _tasks(plan: str) -> str:
    """``1``; ``1+1`` for a statement Citus runs in two single-shard steps (a
    modifying CTE first, as its own subplan); ``32`` on every shard; ``coordinator``
    for a statement on no distributed table."""
    counts = re.findall(r"Task Count: (\d+)", plan)
    shown = "+".join(counts) if counts else "coordinator"
    return shown + (" (via coordinator)" if "pull to coordinator" in plan else "")


def run(args: argparse.Namespace) -> str:
    pool = Pool.build()
    citus_nodes = _nodes(args.coordinator, args.workers)
    plain_nodes = _nodes(args.plain, "")
    citus_url, plain_url = _fresh(citus_nodes), _fresh(plain_nodes)
    try:
        for url in (citus_url, plain_url):
            convotree.migrate(url)
        citus, plain = _load(citus_url, args, pool), _load(plain_url, args, pool)
        started = time.perf_counter()
        done = convotree.distribute(citus_url, shard_count=args.shards)
        distribute_s = time.perf_counter() - started
        rows: list[list[str]] = []
        context_plan = ""
        for name, operation in OPERATIONS.items():
            sent = _statements(citus, operation)
            tasks = []
            for statement, parameters in sent:
                if isinstance(parameters, list):   # executemany: one plan stands for all
                    parameters = parameters[0]
                plan = _explain(citus.store.engine, statement, parameters)
                tasks.append(_tasks(plan))
                if name.startswith("context") and "WITH RECURSIVE" in statement.upper():
                    context_plan = plan
            plain_ms, citus_ms = paired_median_ms(
                lambda op=operation: op(plain), lambda op=operation: op(citus),
                repeat=args.repeat)
            rows.append([name, str(len(sent)), ", ".join(tasks) or "-",
                         f"{plain_ms:.2f}", f"{citus_ms:.2f}"])
        citus.store.close()
        plain.store.close()
        version = done.citus_version
    finally:
        _drop(citus_nodes)
        _drop(plain_nodes)
    return "\n".join([
        f"# convotree on Citus ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"`python -m benchmarks citus {' '.join(args.argv)}`".replace(" `", "`"),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Citus {version}: a coordinator and "
        f"{len(citus_nodes) - 1} workers on this machine, {done.shard_count} shards; "
        f"plain PostgreSQL: one server on this machine. The same data in both: "
        f"{args.conversations} conversations, each a chain of {args.depth} messages "
        f"with a side branch at every message ({citus.nodes:,} nodes). Calls on the "
        f"middle conversation's leaf; medians of up to {args.repeat} runs taken in turn.",
        "",
        f"`convotree.distribute` of the loaded database (every row copied to the "
        f"workers, in one transaction): {distribute_s:.1f} s.",
        "",
        "Tasks: the `Task Count` of each statement's EXPLAIN on the distributed "
        "database, in the order sent (1: one shard; 1+1: two single-shard steps, a "
        "modifying CTE run first as its own subplan; `coordinator`: a statement on no "
        "distributed table, such as the advisory lock of a summary).",
        "",
        table(["call", "statements", "tasks per statement", "plain PostgreSQL ms",
               "Citus ms"], rows),
        "",
        "EXPLAIN of the one statement of `context()` on the distributed database:",
        "",
        "```text",
        context_plan,
        "```",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks citus", description=__doc__)
    parser.add_argument("--coordinator", default=COORDINATOR)
    parser.add_argument("--workers", default=WORKERS, help="host:port,host:port")
    parser.add_argument("--plain", default=PLAIN, help="a plain PostgreSQL server's URL")
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--depth", type=int, default=200)
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--quick", action="store_true",
                        help="20 conversations of 40 messages, 5 runs (writes nothing)")
    parser.add_argument("--out", type=Path, default=None)

    def quick_then_run(args: argparse.Namespace) -> str:
        if args.quick:
            args.conversations, args.depth, args.repeat = 20, 40, 5
        return run(args)

    return parse_run_publish(parser, argv, quick_then_run, RESULTS)


if __name__ == "__main__":
    sys.exit(main())
