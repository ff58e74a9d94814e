"""Many writers at once: rows expected vs found, errors, messages/s, sync vs async.

``python -m benchmarks.concurrency_bench [--appends N] [--out FILE]`` runs, on a SQLite
file and on PostgreSQL (``CONVOTREE_BENCH_POSTGRES_URL``, default the local test
server), each writer appending ``N`` messages under the same parent of one conversation:

- async: 8 asyncio tasks on one ``AsyncStore``;
- sync: 8 threads on one ``Store``;
- processes: 4 processes, a ``Store`` each.

It prints how many rows it expected and found, how many calls failed, and the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

import convotree

from ._timing import publish, table

PG_URL = os.environ.get("CONVOTREE_BENCH_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).resolve().parent / "results" / "concurrency.md"
ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import sys, uuid, convotree
url, conv, parent, count = sys.argv[1:5]
errors = 0
with convotree.Store(url) as store:
    for turn in range(int(count)):
        try:
            store.append(uuid.UUID(conv), parent=uuid.UUID(parent), role="user",
                         content=f"turn {turn}: a message of a dozen words or so, like chat")
        except convotree.ConvotreeError:
            errors += 1
print(errors)
"""


def _setup(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    with convotree.Store(url, create=True) as store:
        conv = store.create_conversation(title="crowd")
        root = store.append(conv, role="system", content="root")
    return conv.id, root.id


def _found(url: str, conv: uuid.UUID, root: uuid.UUID) -> int:
    with convotree.Store(url) as store:
        return len(store.children(store.node(conv, root)))


def _text(turn: int) -> str:
    return f"turn {turn}: a message of a dozen words or so, like chat"


def run_async(url: str, writers: int, appends: int) -> tuple[int, int, float]:
    conv, root = _setup(url)
    errors = 0

    async def scenario() -> float:
        nonlocal errors
        async with convotree.AsyncStore(url) as store:
            async def writer() -> None:
                nonlocal errors
                for turn in range(appends):
                    try:
                        await store.append(conv, parent=root, role="user", content=_text(turn))
                    except convotree.ConvotreeError:
                        errors += 1
            started = time.perf_counter()
            await asyncio.gather(*(writer() for _ in range(writers)))
            return time.perf_counter() - started

    seconds = asyncio.run(scenario())
    return _found(url, conv, root), errors, seconds


def run_threads(url: str, writers: int, appends: int) -> tuple[int, int, float]:
    conv, root = _setup(url)
    errors = 0
    lock = threading.Lock()
    with convotree.Store(url) as store:
        def writer() -> None:
            nonlocal errors
            for turn in range(appends):
                try:
                    store.append(conv, parent=root, role="user", content=_text(turn))
                except convotree.ConvotreeError:
                    with lock:
                        errors += 1
        threads = [threading.Thread(target=writer) for _ in range(writers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
    return _found(url, conv, root), errors, seconds


def run_processes(url: str, writers: int, appends: int) -> tuple[int, int, float]:
    conv, root = _setup(url)
    started = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(conv), str(root),
                                   str(appends)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
                 for _ in range(writers)]
    outputs = [p.communicate()[0] for p in processes]
    seconds = time.perf_counter() - started
    errors = sum(int(out.strip() or 0) for out in outputs)
    errors += sum(1 for p in processes if p.returncode != 0)
    return _found(url, conv, root), errors, seconds


def _postgres() -> tuple[str, sa.Engine] | None:
    admin = sa.create_engine(sa.make_url(PG_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("DROP DATABASE IF EXISTS convotree_bench_crowd WITH (FORCE)"))
            conn.execute(sa.text("CREATE DATABASE convotree_bench_crowd"))
    except Exception as exc:
        print(f"PostgreSQL unavailable ({type(exc).__name__}): SQLite only", file=sys.stderr)
        return None
    url = sa.make_url(PG_URL).set(database="convotree_bench_crowd").render_as_string(False)
    return url, admin


def run(appends: int) -> str:
    folder = Path(tempfile.mkdtemp(prefix="convotree-crowd-"))
    targets = [("sqlite", f"sqlite:///{folder / 'crowd.db'}")]
    pg = _postgres()
    if pg:
        targets.append(("postgresql", pg[0]))
    rows = []
    try:
        for backend, url in targets:
            for shell, writers, runner in (("async, tasks", 8, run_async),
                                           ("sync, threads", 8, run_threads),
                                           ("sync, processes", 4, run_processes)):
                found, errors, seconds = runner(url, writers, appends)
                expected = writers * appends
                rows.append([backend, shell, f"{writers} x {appends:,}", f"{expected:,}",
                             f"{found:,}", str(errors), f"{expected / seconds:,.0f}"])
                print("  " + " | ".join(rows[-1]), file=sys.stderr)
    finally:
        if pg:
            with pg[1].connect() as conn:
                conn.execute(sa.text(
                    "DROP DATABASE IF EXISTS convotree_bench_crowd WITH (FORCE)"))
            pg[1].dispose()
    return "\n".join([
        "# Concurrent writers", "",
        "Every writer appends under the same parent of one conversation, a transaction per "
        "message (each append: read the parent, insert, move the current node). "
        "Rows found = children of that parent afterwards.", "",
        table(["backend", "shell", "writers x appends", "expected", "found", "errors",
               "messages/s"], rows), ""])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.concurrency_bench",
                                     description=__doc__)
    parser.add_argument("--appends", type=int, default=1_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    publish(run(args.appends), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
