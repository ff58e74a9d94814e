"""convotree side by side with its peers, in one run, on the same messages and databases.

Contenders: convotree; the raw-SQL floor on convotree's own tables; the OpenAI Agents
SDK's ``SQLiteSession`` and ``SQLAlchemySession``; LangChain's ``SQLChatMessageHistory``.
Every contender gets the same chain (a system root, then alternating user/assistant
OASST2 texts, read back from convotree once), in a fresh database per backend and
depth, so a number in one column can be compared with the number beside it.

The peers store a flat list per session: they have no budgeted context and no fork,
so they are measured doing what their users must do instead (load everything, count
tokens from the newest message back; copy the history up to the fork into a new
session). ``main()`` prints the tables and writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import make_url

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"
if "TIKTOKEN_CACHE_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_SHARED)

import convotree  # noqa: E402
from convotree._schema import nodes  # noqa: E402
from convotree.tokens import count_messages  # noqa: E402

from . import _data, append_bench  # noqa: E402
from ._data import Pool, load_tree, texts  # noqa: E402
from ._timing import median_ms, publish, table  # noqa: E402
from .context_bench import floor_runner  # noqa: E402

PG_URL = os.environ.get("CONVOTREE_BENCH_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DATABASE = "convotree_peers"
RESULTS = Path(__file__).resolve().parent / "results" / "peers.md"
MODEL = "gpt-4o"
BUDGETS = (16_000, 128_000)
#: Messages per ``add_items``/``add_messages`` call when loading a peer (not timed).
LOAD_BATCH = 2_000
#: A cell whose warm-up run takes longer than this gets 3 timed runs, not ``--repeat``.
SLOW_SECONDS = 1.0

CONVOTREE = "convotree"
FLOOR = "floor"
AGENTS_SQLITE = "agents SQLiteSession"
AGENTS_SQLA = "agents SQLAlchemySession"
LANGCHAIN = "langchain SQLChatMessageHistory"
PEERS = (AGENTS_SQLITE, AGENTS_SQLA, LANGCHAIN)
COLUMNS = (CONVOTREE, FLOOR, *PEERS)
RATIOS = ["convotree/floor", "best peer/convotree"]

CONVOTREE_TABLES = ("convotree_conversations", "convotree_nodes")
FORK_TEXT = "And what if we went by train instead?"

Message = dict[str, str]
T = TypeVar("T")

#: The unbounded leaf-to-root walk with every column of convotree_nodes: the floor for
#: loading a whole branch (context_bench.FLOOR_SQL without its budget bound).
_COLUMNS = [column.name for column in nodes.c]
WALK_SQL = f"""
WITH RECURSIVE walk AS (
  SELECT {", ".join(_COLUMNS)}
    FROM convotree_nodes WHERE conversation_id = {{p}} AND id = {{p}}
  UNION ALL
  SELECT {", ".join("n." + c for c in _COLUMNS)}
    FROM convotree_nodes n JOIN walk w ON n.id = w.parent_id
   WHERE n.conversation_id = {{p}}
)
SELECT * FROM walk
"""


# --- measuring -------------------------------------------------------------------------


def timed_ms(run: Callable[[], object], repeat: int) -> float:
    """Median ms of ``repeat`` runs after a warm-up; 3 runs when one takes over a second,
    so the deep peer cells keep the whole benchmark within minutes.

    The objects alive before the cell (the harness's 100,000-message chains) are frozen
    out of the garbage collector: the collections a contender's own allocations trigger
    still count, but they do not also walk the benchmark's heap."""
    gc.collect()
    gc.freeze()
    try:
        started = time.perf_counter()
        run()
        slow = time.perf_counter() - started > SLOW_SECONDS
        return median_ms(run, repeat=3 if slow else repeat, max_seconds=float("inf"),
                         warmup=0)
    finally:
        gc.unfreeze()


def peak_mb(run: Callable[[], object]) -> float:
    """Peak Python memory allocated while ``run`` executes and its result is alive (MB).

    tracemalloc sees Python allocations only, in every thread (the Agents SDK's
    SQLiteSession reads in a worker thread); what libpq or SQLite allocate in C is not
    counted, for any contender."""
    gc.collect()
    tracemalloc.start()
    try:
        result = run()
        peak = tracemalloc.get_traced_memory()[1]
        del result
    finally:
        tracemalloc.stop()
    return peak / 1e6


def cost(message: Message) -> int:
    """Tokens one message adds to a gpt-4o request (convotree's rule, re-tokenized)."""
    return count_messages([message], model=MODEL) - 3


def newest_that_fit(messages: Sequence[Message], budget: int) -> list[Message]:
    """What a peer's user writes: keep system messages, then the newest messages that fit,
    tokenizing from the newest back and stopping at the first that does not fit."""
    keep = {i for i, m in enumerate(messages) if m["role"] in ("system", "developer")}
    remaining = budget - 3 - sum(cost(messages[i]) for i in keep)
    for index in range(len(messages) - 1, -1, -1):
        if index in keep:
            continue
        price = cost(messages[index])
        if price > remaining:
            break
        remaining -= price
        keep.add(index)
    return [messages[i] for i in sorted(keep)]


def pairs(messages: Sequence[Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


def sqlite_bytes(path: Path) -> int:
    """Pages in use by the database, WAL frames included (page_count x page_size)."""
    with sqlite3.connect(path) as conn:
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return int(count * size)


def postgres_bytes(engine: sa.Engine, tables: Sequence[str]) -> int:
    with engine.connect() as conn:
        return int(sum(conn.execute(sa.text("SELECT pg_total_relation_size(:t)"), {"t": t})
                       .scalar_one() for t in tables))


# --- the floor -------------------------------------------------------------------------


def walk_runner(store: convotree.Store, leaf: convotree.Node) -> Callable[[], list[Any]]:
    """The full walk on a raw DBAPI connection held open, rows fetched, root first."""
    raw = store.engine.raw_connection()
    sqlite = store.engine.dialect.name == "sqlite"
    sql = WALK_SQL.format(p="?" if sqlite else "%s")
    ids = (leaf.conversation_id.hex, leaf.id.hex) if sqlite else (leaf.conversation_id, leaf.id)
    params = (ids[0], ids[1], ids[0])

    def run() -> list[Any]:
        cursor = raw.cursor()
        cursor.execute(sql, params)
        rows = list(cursor.fetchall())
        cursor.close()
        raw.commit()
        rows.reverse()
        return rows

    run.close = raw.close  # type: ignore[attr-defined]
    return run


# --- the peers -------------------------------------------------------------------------


class Peer:
    """One peer library on one database, wrapped to the operations this benchmark times."""

    label: str
    #: Its tables (PostgreSQL sizes) and its file (SQLite sizes; None on PostgreSQL).
    tables: tuple[str, ...]
    file: Path | None = None

    def load(self, messages: list[Message]) -> None:
        raise NotImplementedError

    def load_all(self) -> list[Any]:
        """The whole history through the peer's own read call."""
        raise NotImplementedError

    def chat(self) -> list[Message]:
        """The whole history as Chat Completions messages."""
        raise NotImplementedError

    def fork(self, keep: int, new: Message) -> None:
        """Read the history, copy its first ``keep`` messages and ``new`` to a new session."""
        raise NotImplementedError

    def append_rate(self, sample: list[str], count: int) -> float:
        """Messages per second, one per call (a commit each), into a fresh session."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def chain_message(index: int, sample: list[str]) -> Message:
    """The ``index``-th appended message, with the roles append_bench gives convotree."""
    return {"role": "user" if index % 2 else "assistant", "content": sample[index % len(sample)]}


SYSTEM: Message = {"role": "system", "content": "Be brief."}


class AgentsPeer(Peer):
    """The Agents SDK's sessions: async methods, driven on one persistent event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.session = self.open("bench")

    def open(self, session_id: str) -> Any:
        raise NotImplementedError

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def load(self, messages: list[Message]) -> None:
        for start in range(0, len(messages), LOAD_BATCH):
            self.run(self.session.add_items(messages[start:start + LOAD_BATCH]))

    def load_all(self) -> list[Any]:
        return self.run(self.session.get_items())

    def chat(self) -> list[Message]:
        return self.load_all()  # its items are Chat-style {"role", "content"} messages

    def fork(self, keep: int, new: Message) -> None:
        items = self.load_all()
        copy = self.open(f"fork-{uuid.uuid4().hex}")
        self.run(copy.add_items([*items[:keep], new]))
        self.shut(copy)

    def append_rate(self, sample: list[str], count: int) -> float:
        session = self.open(f"append-{uuid.uuid4().hex}")
        self.run(session.add_items([SYSTEM]))
        started = time.perf_counter()
        for index in range(count):
            self.run(session.add_items([chain_message(index, sample)]))
        rate = count / (time.perf_counter() - started)
        self.shut(session)
        return rate

    def shut(self, session: Any) -> None:
        """Release one session (the SQLite one holds a connection per worker thread)."""


class AgentsSQLite(AgentsPeer):
    label = AGENTS_SQLITE
    tables = ("agent_sessions", "agent_messages")

    def __init__(self, loop: asyncio.AbstractEventLoop, file: Path) -> None:
        from agents import SQLiteSession

        self.factory = SQLiteSession
        self.file = self.path = file
        super().__init__(loop)

    def open(self, session_id: str) -> Any:
        return self.factory(session_id, self.path)

    def shut(self, session: Any) -> None:
        session.close()

    def close(self) -> None:
        self.session.close()


class AgentsSQLAlchemy(AgentsPeer):
    label = AGENTS_SQLA
    tables = ("agent_sessions", "agent_messages")

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str, file: Path | None) -> None:
        from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
        from sqlalchemy.ext.asyncio import create_async_engine

        self.factory = SQLAlchemySession
        self.engine = create_async_engine(url)
        self.file = file
        self.created = False
        super().__init__(loop)

    def open(self, session_id: str) -> Any:
        # The first session creates the tables (create_tables=True, as its docs suggest
        # for development); later ones, made after they exist, skip that check.
        first, self.created = not self.created, True
        return self.factory(session_id, engine=self.engine, create_tables=first)

    def close(self) -> None:
        self.run(self.engine.dispose())


#: LangChain message types as Chat Completions roles.
LANGCHAIN_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


class LangChainSQL(Peer):
    """LangChain's SQLChatMessageHistory on a sync engine (its default mode)."""

    label = LANGCHAIN
    tables = ("message_store",)

    def __init__(self, url: str, file: Path | None) -> None:
        from langchain_community.chat_message_histories import SQLChatMessageHistory
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        self.factory = SQLChatMessageHistory
        self.classes = {"user": HumanMessage, "assistant": AIMessage, "system": SystemMessage}
        self.engine = sa.create_engine(url)
        self.file = file
        self.history = self.open("bench")

    def open(self, session_id: str) -> Any:
        return self.factory(session_id=session_id, connection=self.engine,
                            table_name=self.tables[0])

    def to_langchain(self, message: Message) -> Any:
        return self.classes[message["role"]](content=message["content"])

    def load(self, messages: list[Message]) -> None:
        for start in range(0, len(messages), LOAD_BATCH):
            self.history.add_messages(
                [self.to_langchain(m) for m in messages[start:start + LOAD_BATCH]])

    def load_all(self) -> list[Any]:
        return self.history.messages  # type: ignore[no-any-return]

    def chat(self) -> list[Message]:
        return [{"role": LANGCHAIN_ROLES[m.type], "content": m.content} for m in self.load_all()]

    def fork(self, keep: int, new: Message) -> None:
        messages = self.load_all()
        self.open(f"fork-{uuid.uuid4().hex}").add_messages(
            [*messages[:keep], self.to_langchain(new)])

    def append_rate(self, sample: list[str], count: int) -> float:
        history = self.open(f"append-{uuid.uuid4().hex}")
        history.add_message(self.to_langchain(SYSTEM))
        started = time.perf_counter()
        for index in range(count):
            history.add_message(self.to_langchain(chain_message(index, sample)))
        return count / (time.perf_counter() - started)

    def close(self) -> None:
        self.history.session_maker.remove()
        self.engine.dispose()


# --- one backend at one depth ----------------------------------------------------------


@dataclass
class Results:
    """Cells by table: each row is its leading labels plus one value per column."""

    append: list[tuple[list[str], dict[str, float]]] = field(default_factory=list)
    context: list[tuple[list[str], dict[str, float]]] = field(default_factory=list)
    load: list[tuple[list[str], dict[str, float]]] = field(default_factory=list)
    memory: list[tuple[list[str], dict[str, float]]] = field(default_factory=list)
    disk: list[tuple[list[str], dict[str, float]]] = field(default_factory=list)
    fork: list[tuple[list[str], dict[str, float]]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)


@dataclass
class Stage:
    """Where one backend x depth lives: convotree's URL, the peers' URLs and files."""

    backend: str
    depth: int
    workdir: Path
    pg_url: str | None = None

    def url(self, name: str, *, async_: bool = False) -> str:
        if self.pg_url is not None:
            return self.pg_url
        return f"sqlite{'+aiosqlite' if async_ else ''}:///{self.file(name)}"

    def file(self, name: str) -> Path:
        return self.workdir / f"{self.backend}-{self.depth}-{name.split()[-1]}.db"


def make_peers(stage: Stage, loop: asyncio.AbstractEventLoop) -> list[Peer]:
    """The peers that run on this backend (SQLiteSession is SQLite only)."""
    sqlite = stage.pg_url is None
    makers: list[tuple[str, Callable[[], Peer]]] = [
        (AGENTS_SQLA, lambda: AgentsSQLAlchemy(
            loop, stage.url(AGENTS_SQLA, async_=True), stage.file(AGENTS_SQLA) if sqlite
            else None)),
        (LANGCHAIN, lambda: LangChainSQL(stage.url(LANGCHAIN),
                                         stage.file(LANGCHAIN) if sqlite else None)),
    ]
    if sqlite:
        makers.insert(0, (AGENTS_SQLITE, lambda: AgentsSQLite(loop, stage.file(AGENTS_SQLITE))))
    peers: list[Peer] = []
    for label, make in makers:
        try:
            peers.append(make())
        except ImportError as exc:
            print(f"{label} skipped: {exc}", file=sys.stderr)
            SKIPPED.add(label)
    return peers


#: Peers that could not be imported in this run: its table is then not the published one.
SKIPPED: set[str] = set()


def run_stage(stage: Stage, args: argparse.Namespace, pool: Pool, loop: asyncio.AbstractEventLoop,
              results: Results, *, fork_here: bool, append_here: bool) -> None:
    """Load the same chain into every contender, then take every measure at this depth."""
    depth, backend = stage.depth, stage.backend
    log = f"[{backend} {depth:,}]"
    store = convotree.Store(stage.url(CONVOTREE), create=True)
    peers: list[Peer] = []
    try:
        started = time.perf_counter()
        leaf = bulk_load(store, pool, depth, stage.pg_url)
        path = store.path(leaf)
        chain: list[Message] = [{"role": n.role, "content": str(n.content)} for n in path]
        peers = make_peers(stage, loop)
        for peer in peers:
            peer.load(chain)
            assert pairs(peer.chat()) == pairs(chain), f"{peer.label} lost or reordered messages"
        print(f"{log} loaded {len(chain):,} messages into {1 + len(peers)} contenders in "
              f"{time.perf_counter() - started:.1f}s", file=sys.stderr)
        measure_disk(stage, peers, len(chain), results)
        measure_context(store, leaf, peers, args.repeat, results, [backend, f"{depth:,}"], log)
        measure_load(store, leaf, peers, args.repeat, results,
                     [backend, f"{depth:,}", f"{len(chain):,}"], log)
        if fork_here:
            middle = path[depth // 2]
            fork: dict[str, float] = {CONVOTREE: timed_ms(
                partial(store.append, leaf.conversation_id, parent=middle, role="user",
                        content=FORK_TEXT), args.repeat)}
            new = {"role": "user", "content": FORK_TEXT}
            for peer in peers:
                fork[peer.label] = timed_ms(partial(peer.fork, depth // 2 + 1, new),
                                            args.repeat)
            results.fork.append(([backend, f"{depth:,}", f"{depth // 2 + 1:,}"], fork))
            print(f"{log} fork: {fmt_row(fork)}", file=sys.stderr)
        if append_here:
            sample = texts()[:200]
            rates = {CONVOTREE: append_bench.convotree_rate(store, sample, args.appends),
                     FLOOR: append_bench.raw_rate(store, sample, args.appends)}
            for peer in peers:
                rates[peer.label] = peer.append_rate(sample, args.appends)
            results.append.append(([backend, f"{args.appends:,}"], rates))
            print(f"{log} append msg/s: {fmt_row(rates)}", file=sys.stderr)
    finally:
        for peer in peers:
            peer.close()
        store.close()


def measure_disk(stage: Stage, peers: list[Peer], messages: int, results: Results) -> None:
    """Bytes per message of each contender's storage, right after the load."""
    if stage.pg_url is None:
        disk = {CONVOTREE: sqlite_bytes(stage.file(CONVOTREE))}
        disk.update({p.label: sqlite_bytes(p.file) for p in peers if p.file is not None})
    else:
        admin = sa.create_engine(stage.pg_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                # Fresh statistics for every contender; VACUUM too, so autovacuum does
                # not start on the new rows and take a core in the middle of the measures.
                conn.execute(sa.text("VACUUM ANALYZE"))
            disk = {CONVOTREE: postgres_bytes(admin, CONVOTREE_TABLES)}
            disk.update({p.label: postgres_bytes(admin, p.tables) for p in peers})
        finally:
            admin.dispose()
    results.disk.append(([stage.backend, f"{stage.depth:,}"],
                         {label: size / messages for label, size in disk.items()}))


def bulk_load(store: convotree.Store, pool: Pool, depth: int, pg_url: str | None
              ) -> convotree.Node:
    """The chain, loaded by ``load_tree`` (batched inserts, foreign keys checked: with
    the children index of revision 0004 that is linear even on a fresh table)."""
    return load_tree(store, pool, spine=depth)[0]


def measure_context(store: convotree.Store, leaf: convotree.Node, peers: list[Peer],
                    repeat: int, results: Results, labels: list[str], log: str) -> None:
    for budget in BUDGETS:
        ctx = store.context(leaf, model=MODEL, budget=budget)
        expected = pairs(ctx.messages)
        cells = {CONVOTREE: timed_ms(partial(store.context, leaf, model=MODEL, budget=budget),
                                     repeat)}
        floor = floor_runner(store, leaf, budget)
        try:
            cells[FLOOR] = timed_ms(floor, repeat)
        finally:
            floor.close()
        for peer in peers:
            def assemble(peer: Peer = peer, budget: int = budget) -> list[Message]:
                return newest_that_fit(peer.chat(), budget)

            assert pairs(assemble()) == expected, f"{peer.label} context differs"
            cells[peer.label] = timed_ms(assemble, repeat)
        results.context.append(([*labels, f"{budget // 1000}k", f"{len(expected):,}"], cells))
        print(f"{log} context {budget // 1000}k ms: {fmt_row(cells)}", file=sys.stderr)


def measure_load(store: convotree.Store, leaf: convotree.Node, peers: list[Peer], repeat: int,
                 results: Results, labels: list[str], log: str) -> None:
    walk = walk_runner(store, leaf)
    runs: dict[str, Callable[[], object]] = {CONVOTREE: lambda: store.path(leaf), FLOOR: walk}
    runs.update({peer.label: peer.load_all for peer in peers})
    try:
        times = {label: timed_ms(run, repeat) for label, run in runs.items()}
        memory = {label: peak_mb(run) for label, run in runs.items()}
    finally:
        walk.close()  # type: ignore[attr-defined]
    results.load.append((labels, times))
    results.memory.append((labels, memory))
    print(f"{log} load-all ms: {fmt_row(times)}; MB: {fmt_row(memory)}", file=sys.stderr)


# --- PostgreSQL ------------------------------------------------------------------------


def pg_admin() -> sa.Engine | None:
    """An AUTOCOMMIT engine on the server's default database, or None if it is down."""
    try:
        admin = sa.create_engine(_psycopg(make_url(PG_URL)), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        print(f"PostgreSQL unavailable ({type(exc).__name__}); SQLite only", file=sys.stderr)
        return None
    return admin


def _psycopg(url: sa.URL) -> sa.URL:
    """psycopg 3 for every engine (the bare scheme would pick psycopg2); an async engine
    given this URL picks psycopg's async mode itself."""
    return url.set(drivername="postgresql+psycopg")


def recreate(admin: sa.Engine, *, drop_only: bool = False) -> str:
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        if not drop_only:
            conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
    return _psycopg(make_url(PG_URL)).set(database=DATABASE).render_as_string(False)


# --- the report ------------------------------------------------------------------------


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}"


def fmt_row(cells: dict[str, float]) -> str:
    return ", ".join(f"{k} {fmt(v)}" for k, v in cells.items())


def row(labels: list[str], cells: dict[str, float], *, rate: bool = False) -> list[str]:
    """The labels, one cell per column, then the two ratios as time (or size) ratios:
    convotree/floor, and best peer/convotree where >1 means convotree is better."""
    values = [fmt(cells[c]) if c in cells else "-" for c in COLUMNS]
    peers = [cells[p] for p in PEERS if p in cells]
    ours, floor = cells[CONVOTREE], cells.get(FLOOR)
    if rate:  # msg/s: the time ratios are the inverse rate ratios
        over_floor = floor / ours if floor else None
        best = ours / max(peers) if peers else None
    else:
        over_floor = ours / floor if floor else None
        best = min(peers) / ours if peers else None
    return [*labels, *values, *(f"{r:.2f}" if r is not None else "-" for r in
                                (over_floor, best))]


def versions() -> dict[str, str]:
    names = ["convotree", "sqlalchemy", "alembic", "tiktoken", "openai", "rich", "psycopg",
             "aiosqlite", "greenlet", "openai-agents", "langchain-community", "langchain-core"]
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores"


def report(args: argparse.Namespace, results: Results, pool: Pool, server: str | None,
           elapsed: float) -> str:
    v = results.versions
    lead = {"append": ["backend", "messages"], "context": ["backend", "depth", "budget", "msgs"],
            "load": ["backend", "depth", "rows"], "memory": ["backend", "depth", "rows"],
            "disk": ["backend", "depth"], "fork": ["backend", "depth", "copied"]}
    headers = [*COLUMNS, *RATIOS]
    out = [
        f"# convotree and its peers ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {machine()}. Python {platform.python_version()}, SQLite "
        f"{sqlite3.sqlite_version}" + (f", PostgreSQL {server}" if server else "") + ".",
        "",
        "Packages: convotree " + v["convotree"] + " (" + ", ".join(
            f"{k} {v[k]}" for k in ("sqlalchemy", "alembic", "tiktoken", "openai", "rich",
                                    "psycopg", "aiosqlite", "greenlet")) + "); peers: "
        + ", ".join(f"{k} {v[k]}" for k in ("openai-agents", "langchain-community",
                                             "langchain-core")) + ".",
        "",
        f"Data: {len(texts()):,} OASST2 texts ({_data.OASST.name}), mean "
        f"{pool.mean_tokens():.0f} tokens per message with overhead. A chain of depth d is "
        "a system root and d user/assistant messages; every contender gets the same "
        "messages in the same order (read back from convotree), in a fresh SQLite file "
        f"(per contender) or PostgreSQL database `{DATABASE}` per depth. Tokens: gpt-4o "
        "(o200k_base). Times: median of " + str(args.repeat) + " runs after a warm-up, 3 "
        f"when the warm-up took over {SLOW_SECONDS:.0f} s. Whole run: {elapsed / 60:.1f} min.",
        "",
        "Columns:",
        "",
        "- **convotree**: the public API (`Store.append`, `Store.context`, `Store.path`).",
        "- **floor**: the bare SQL on the DBAPI cursor, rows fetched into Python, on "
        "convotree's tables: INSERT + commit per message (append); the bounded recursive "
        "CTE (context); the unbounded leaf-to-root CTE with every column (load-all).",
        "- **agents SQLiteSession** (SQLite only), **agents SQLAlchemySession** (aiosqlite / "
        "psycopg async), driven on one persistent event loop; **langchain "
        "SQLChatMessageHistory** on a sync engine. Each as configured by default: on "
        "SQLite, convotree and both Agents sessions switch the file to WAL, LangChain keeps "
        "the rollback journal; the Agents SQLAlchemySession stores JSON with "
        "`ensure_ascii=True` (non-ASCII text escaped). Each database holds one session, so "
        "LangChain's table, which has no index on `session_id`, is scanned only for that "
        "session's rows (with many sessions per table it reads them all); in the fork cell "
        "the copies accumulate and later runs scan them too.",
        "- **convotree/floor**: convotree's time over the floor's (what the library adds).",
        "- **best peer/convotree**: the best peer's time (or size) over convotree's; "
        "**>1 means convotree is faster (or smaller)**. For msg/s both ratios are "
        "taken on the time per message.",
        "",
        "The peers have neither a budgeted context nor a fork. Context for a peer = what its "
        "user must write: load the whole session (`get_items()` / `.messages`), keep the "
        "system message, tokenize from the newest message back with tiktoken "
        "(`convotree.tokens.count_messages`, the same rule convotree stores counts by) and "
        "stop at the first message that does not fit. Each peer's context is checked equal "
        "to convotree's. Fork for a peer = load the whole session, copy the messages up to "
        "the fork point plus the new message into a new session (one `add_items` / "
        "`add_messages` call); convotree's fork is one `append` under the middle node.",
        "",
        "## Append (msg/s; one message per call, each its own commit)",
        "",
        table([*lead["append"], *headers],
              [row(labels, cells, rate=True) for labels, cells in results.append]),
        "",
        "## Context (ms): 16k and 128k-token budgets, gpt-4o",
        "",
        table([*lead["context"], *headers], [row(lb, c) for lb, c in results.context]),
        "",
        "## Load the whole history (ms): `Store.path` / `get_items()` / `.messages`",
        "",
        table([*lead["load"], *headers], [row(lb, c) for lb, c in results.load]),
        "",
        "## Peak extra Python memory during one load of the whole history (MB, tracemalloc)",
        "",
        table([*lead["memory"], *headers], [row(lb, c) for lb, c in results.memory]),
        "",
        "## Bytes on disk per message",
        "",
        "SQLite: the contender's file (page_count x page_size, WAL included) over the "
        "messages; PostgreSQL: `pg_total_relation_size` of its tables (indexes and TOAST "
        "included), after VACUUM ANALYZE. Includes fixed overheads, which dominate at "
        "small depths.",
        "",
        table([*lead["disk"], *headers], [row(lb, c) for lb, c in results.disk]),
        "",
        "## Fork in the middle (ms)",
        "",
        "copied = the messages a peer reads and copies into its new session.",
        "",
        table([*lead["fork"], *headers], [row(lb, c) for lb, c in results.fork]),
        "",
    ]
    return "\n".join(out)


def run(args: argparse.Namespace) -> str:
    began = time.perf_counter()
    pool = Pool.build()
    results = Results(versions=versions())
    workdir = Path(tempfile.mkdtemp(prefix="convotree-peers-"))
    admin = pg_admin() if "postgresql" in args.backends else None
    server = None
    if admin is not None:
        with admin.connect() as conn:
            server = conn.execute(sa.text("SHOW server_version")).scalar_one()
    depths = sorted(args.depths)
    fork_depth = min(depths, key=lambda d: abs(d - (1_000 if args.quick else 10_000)))
    loop = asyncio.new_event_loop()
    try:
        for backend in args.backends:
            if backend == "postgresql" and admin is None:
                continue
            for depth in depths:
                pg_url = recreate(admin) if backend == "postgresql" and admin else None
                run_stage(Stage(backend, depth, workdir, pg_url), args, pool, loop, results,
                          fork_here=depth == fork_depth, append_here=depth == depths[0])
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if admin is not None:
            recreate(admin, drop_only=True)
            admin.dispose()
    return report(args, results, pool, server, time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks peers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="depths 100 and 1,000, 100 appends, fork at 1,000")
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgresql"],
                        default=["sqlite", "postgresql"])
    parser.add_argument("--depths", nargs="+", type=int, default=None,
                        help="chain depths (default 100 1000 10000 100000)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed runs per cell (default 11; 5 with --quick)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"write the report here too (default {RESULTS.name} for a full "
                             "run with every peer installed)")
    args = parser.parse_args(argv)
    if args.depths is None:
        args.depths = [100, 1_000] if args.quick else [100, 1_000, 10_000, 100_000]
    if args.repeat is None:
        args.repeat = 5 if args.quick else 11
    args.appends = 100 if args.quick else 1_000
    report = run(args)
    out = args.out
    if out is None and not args.quick:
        if SKIPPED:
            # A table with empty peer columns must never replace the published one.
            print(f"not writing {RESULTS}: {', '.join(sorted(SKIPPED))} not installed "
                  "(make bench-peers installs them)", file=sys.stderr)
        else:
            out = RESULTS
    publish(report, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
