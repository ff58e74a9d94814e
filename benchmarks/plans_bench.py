"""Plan-cache trap: one long-lived ``Store``, mixed calls, shallow and deep conversations.

``python -m benchmarks plans [--quick] [--calls N] [--timeout-s S] [--out FILE]``

Why this benchmark exists: psycopg 3 prepares a statement on the server after it ran
``prepare_threshold`` (5) times on a connection, and PostgreSQL may then switch that
prepared statement to a *generic plan*, costed once without the parameter values. A
plan that was cheap for the short conversations a process served first can be
ruinous for a deep one (reported: one ``path()`` at depth 10,000 took 117 s after 12
calls on a short conversation; 0.96 s with preparation off). Stale statistics do the
same with custom plans: ``ANALYZE`` while the table held two small conversations, bulk
load a 10,000-message one, and a 16k ``context()`` takes ~380 ms instead of 3 ms.

So the benchmark builds that trap on purpose, in a fresh database ``convotree_plans``:

1. two shallow conversations (depth 10 and 100, with side branches), then ``ANALYZE``;
2. deep conversations bulk-loaded after it (depth 1,000 and 10,000; ``--quick``: 1,000
   and 3,000), no ``ANALYZE`` after, autovacuum off on convotree's tables (so a server
   with autovacuum on shows the same thing);
3. one long-lived ``Store`` (psycopg's default ``prepare_threshold``, a server-side
   ``statement_timeout`` of ``--timeout-s``) runs ``--calls`` calls in a seeded random
   order; the first calls all go to the shallow conversations, so statements get
   prepared, and generic plans chosen, on small data first.

Every call is timed; a call the statement timeout cancels is recorded as a timeout and
the run goes on. Per (operation, conversation depth) it reports the median, p95 and
max, and a verdict (see ``result_rows``): "DEGRADED" for a timeout, a spike over 3 x
the median beyond the machine's noise, or a PostgreSQL median far above SQLite's. On
PostgreSQL it also lists the store's prepared statements with how many generic and
custom plans each ran. A SQLite file gets the same calls, as the row to
compare with (SQLite has no plan cache of this kind).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import platform
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"
if "TIKTOKEN_CACHE_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_SHARED)

import convotree  # noqa: E402

from ._data import Pool, load_tree, texts  # noqa: E402
from ._timing import parse_run_publish, table  # noqa: E402

PG_URL = os.environ.get("CONVOTREE_BENCH_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).resolve().parent / "results" / "plans.md"
#: A database of its own, so the run never touches another benchmark's.
DATABASE = "convotree_plans"
SEED = 20_240_601
MODEL = "gpt-4o"

#: (spine depth, side branches per spine node). The shallow ones are loaded and
#: analyzed first; the deep ones are loaded after ANALYZE, so the statistics are stale.
SHALLOW = ((10, 2), (100, 2))
DEEP = ((1_000, 1), (10_000, 0))
DEEP_QUICK = ((1_000, 1), (3_000, 0))
#: ``tree()`` returns every node: only asked of conversations this small.
TREE_MAX_NODES = 1_000
#: The share of calls, at the start, that all go to the shallow conversations; at least
#: WARM_PER_KIND calls per shallow (kind, conversation) pair (a prepared statement runs
#: 5 custom plans before PostgreSQL weighs a generic one), but never more than half.
SHALLOW_SHARE = 0.15
WARM_PER_KIND = 6

KINDS = ("path", "context 16k", "context 128k", "append", "fork", "children", "leaves",
         "tree", "node", "delete_subtree")


@dataclass
class Conv:
    """One benchmark conversation and the nodes the calls work on."""

    id: uuid.UUID
    depth: int
    nodes: int
    shallow: bool
    leaf: convotree.Node          # the main branch's tip; ``append`` moves it down
    middle: convotree.Node        # a spine node half-way down: forks hang here
    node_ids: list[uuid.UUID]     # a sample of the main path, for ``node()``


@dataclass
class Stats:
    """The timings of one (backend, operation, depth) cell."""

    times: list[float] = field(default_factory=list)
    slowest_call: int = 0         # the slowest call's number in the whole run
    timeouts: int = 0
    errors: int = 0


@dataclass
class BackendRun:
    """What one backend's run produced."""

    backend: str
    stats: dict[tuple[str, int], Stats]
    seconds: float
    notes: list[str]
    nodes: dict[int, int]         # node count of each conversation depth, as loaded
    prepared: list[list[str]] = field(default_factory=list)


# --- setup -------------------------------------------------------------------------------


def postgres_database() -> tuple[str, sa.Engine] | None:
    """A fresh ``convotree_plans`` database (its URL) and the admin engine, or None."""
    admin_url = make_url(PG_URL)
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
    except Exception as exc:
        print(f"PostgreSQL unavailable ({type(exc).__name__}: {exc}); SQLite only",
              file=sys.stderr)
        return None
    return admin_url.set(database=DATABASE).render_as_string(False), admin


def drop_postgres_database(admin: sa.Engine) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
    admin.dispose()


def _load(store: convotree.Store, pool: Pool, spine: int, side: int, *, shallow: bool,
          seed: int) -> Conv:
    """Bulk-load one conversation and pick its working nodes (one ``path`` call)."""
    leaf, total = load_tree(store, pool, spine=spine, side_branches=side, seed=seed)
    path = store.path(leaf)
    sample = random.Random(seed).sample(path, min(20, len(path)))
    return Conv(id=leaf.conversation_id, depth=spine, nodes=total, shallow=shallow,
                leaf=leaf, middle=path[len(path) // 2], node_ids=[n.id for n in sample])


def build_trap(url: str, backend: str, pool: Pool, deep: tuple[tuple[int, int], ...],
               notes: list[str]) -> list[Conv]:
    """Shallow conversations, ANALYZE, then deep ones bulk-loaded with no ANALYZE."""
    convs: list[Conv] = []
    with convotree.Store(url, create=True) as store:
        if backend == "postgresql":
            with store.engine.begin() as conn:
                # The trap must not heal itself on a server with autovacuum on.
                for name in ("convotree_nodes", "convotree_conversations"):
                    conn.execute(sa.text(f"ALTER TABLE {name} SET (autovacuum_enabled = false)"))
        for index, (spine, side) in enumerate(SHALLOW):
            convs.append(_load(store, pool, spine, side, shallow=True, seed=index + 1))
        if backend == "postgresql":
            with store.engine.begin() as conn:
                conn.execute(sa.text("ANALYZE"))
        analyzed = sum(c.nodes for c in convs)
        for index, (spine, side) in enumerate(deep):
            started = time.perf_counter()
            convs.append(_load(store, pool, spine, side, shallow=False, seed=index + 11))
            print(f"[{backend}] loaded depth {spine:,} ({convs[-1].nodes:,} nodes) in "
                  f"{time.perf_counter() - started:.1f}s", file=sys.stderr)
        if backend == "postgresql":
            with store.engine.connect() as conn:
                reltuples = conn.execute(sa.text(
                    "SELECT reltuples FROM pg_class WHERE relname = 'convotree_nodes'")
                ).scalar_one()
            notes.append(f"ANALYZE ran on {analyzed:,} nodes (pg_class.reltuples "
                         f"{reltuples:,.0f}); the table then holds "
                         f"{sum(c.nodes for c in convs):,} nodes, never analyzed again.")
    return convs


# --- the calls ---------------------------------------------------------------------------


def schedule(convs: list[Conv], calls: int, seed: int) -> list[tuple[str, int]]:
    """(kind, conversation index) for every call: shallow ones first, then all mixed.

    Each phase cycles through its eligible pairs and shuffles them, so every pair gets
    about the same number of calls in a random order.
    """
    rng = random.Random(seed)

    def pairs(shallow_only: bool) -> list[tuple[str, int]]:
        return [(kind, i) for i, c in enumerate(convs) for kind in KINDS
                if (c.shallow or not shallow_only)
                and (kind != "tree" or c.nodes <= TREE_MAX_NODES)]

    def phase(eligible: list[tuple[str, int]], count: int) -> list[tuple[str, int]]:
        cycled = eligible * math.ceil(count / len(eligible))
        rng.shuffle(cycled)
        return cycled[:count]

    shallow = pairs(shallow_only=True)
    first = min(max(round(calls * SHALLOW_SHARE), WARM_PER_KIND * len(shallow)), calls // 2)
    return phase(shallow, first) + phase(pairs(shallow_only=False), calls - first)


class Runner:
    """Runs the scheduled calls on one long-lived store, timing each."""

    def __init__(self, make_engine: Callable[[], sa.Engine], convs: list[Conv],
                 timeout_ms: float) -> None:
        self.make_engine = make_engine
        self.engines: list[sa.Engine] = []
        #: The kind of the call running now, for ``statement_kinds``.
        self.kind = "setup"
        #: Normalized SQL -> the kinds that ran it (to name the prepared statements).
        self.statement_kinds: dict[str, set[str]] = {}
        self.store = self.new_store()
        self.convs = convs
        self.timeout_ms = timeout_ms
        self.texts = [t for t in texts() if len(t) < 2_000][:500]
        self.rng = random.Random(SEED + 1)
        self.stats: dict[tuple[str, int], Stats] = {}
        self.notes: list[str] = []

    def new_store(self) -> convotree.Store:
        """A store on an engine of its own, its statements watched."""
        engine = self.make_engine()
        self.engines.append(engine)
        watch_statements(engine, self)
        return convotree.Store(engine)

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()

    def _text(self) -> str:
        return self.texts[self.rng.randrange(len(self.texts))]

    @staticmethod
    def _reply_role(node: convotree.Node) -> str:
        return "assistant" if node.role == "user" else "user"

    def call(self, kind: str, conv: Conv) -> Callable[[], object]:
        """The call to time (the untimed preparation of a ``delete_subtree`` runs here)."""
        store = self.store
        if kind == "path":
            return lambda: store.path(conv.leaf)
        if kind.startswith("context"):
            budget = 16_000 if kind == "context 16k" else 128_000
            return lambda: store.context(conv.leaf, model=MODEL, budget=budget)
        if kind == "append":
            def append() -> None:
                conv.leaf = store.append(conv.id, role=self._reply_role(conv.leaf),
                                         content=self._text(), parent=conv.leaf)
            return append
        if kind == "fork":
            return lambda: store.append(conv.id, role=self._reply_role(conv.middle),
                                        content=self._text(), parent=conv.middle,
                                        set_current=False)
        if kind == "children":
            return lambda: store.children(conv.middle)
        if kind == "leaves":
            return lambda: store.leaves(conv.id)
        if kind == "tree":
            return lambda: store.tree(conv.id)
        if kind == "node":
            node_id = self.rng.choice(conv.node_ids)
            return lambda: store.node(conv.id, node_id)
        if kind == "delete_subtree":
            # A small fork of two messages, made (untimed) to be deleted.
            top = store.append(conv.id, role=self._reply_role(conv.middle),
                               content=self._text(), parent=conv.middle, set_current=False)
            store.append(conv.id, role=self._reply_role(top), content=self._text(),
                         parent=top, set_current=False)
            return lambda: store.delete_subtree(top)
        raise ValueError(kind)

    def warm_up(self) -> None:
        """One untimed call of each kind on the smallest conversation.

        The first call of a statement on an engine compiles its SQL (SQLAlchemy's cache
        is per engine): without this, every cell's max would be its first call. It
        counts as one of the five executions before psycopg prepares, as it would in a
        service.
        """
        self.kind = "warm-up"
        smallest = min(self.convs, key=lambda c: c.nodes)
        for kind in KINDS:
            with contextlib.suppress(Exception):
                self.call(kind, smallest)()

    def run(self, plan: list[tuple[str, int]], label: str) -> None:
        """Every call of ``plan``, timed; the garbage collector runs between calls only
        (as ``timeit`` does), so its pauses do not pass for a slow plan."""
        started = time.perf_counter()
        gc.collect()
        gc.disable()
        try:
            self._run(plan, label, started)
        finally:
            gc.enable()
        self.kind = "report"

    def _run(self, plan: list[tuple[str, int]], label: str, started: float) -> None:
        for number, (kind, index) in enumerate(plan, 1):
            conv = self.convs[index]
            cell = self.stats.setdefault((kind, conv.depth), Stats())
            self.kind = kind
            outcome: str | None = None
            elapsed = 0.0
            try:
                run = self.call(kind, conv)
            except Exception as exc:  # the untimed preparation failed: count, go on
                outcome = _outcome(exc)
            else:
                begin = time.perf_counter()
                try:
                    run()
                except Exception as exc:
                    outcome = _outcome(exc)
                elapsed = (time.perf_counter() - begin) * 1000
                if not cell.times or elapsed > max(cell.times):
                    cell.slowest_call = number
                cell.times.append(elapsed)
            if outcome == "timeout":
                cell.timeouts += 1
            elif outcome is not None:
                cell.errors += 1
                self.notes.append(f"call {number} ({kind}, depth {conv.depth:,}): {outcome}")
            if outcome is not None:
                print(f"[{label}] call {number}/{len(plan)} {kind} depth {conv.depth:,}: "
                      f"{outcome} after {elapsed:,.0f} ms", file=sys.stderr)
                self._check_store(number, kind)
            if number % 100 == 0:
                gc.collect()
                print(f"[{label}] {number}/{len(plan)} calls, "
                      f"{time.perf_counter() - started:.0f}s", file=sys.stderr)

    def _check_store(self, number: int, kind: str) -> None:
        """After a failed call: is the store still usable? If not, make a new one."""
        try:
            self.store.get_conversation(self.convs[0].id)
        except Exception as exc:
            self.notes.append(f"the store was broken after call {number} ({kind}): "
                              f"{_outcome(exc)}; a new Store took over")
            self.store = self.new_store()


def _outcome(exc: BaseException) -> str:
    """'timeout' for a statement the server cancelled, else the error in a few words."""
    text = str(exc)
    if "statement timeout" in text or type(getattr(exc.__cause__, "orig", None)).__name__ \
            == "QueryCanceled":
        return "timeout"
    return f"{type(exc).__name__}: {text.splitlines()[0][:120] if text else ''}"


_PLACEHOLDER = re.compile(r"%\(\w+\)s|\$\d+|\?")


def normalize(sql: str) -> str:
    """SQL with placeholders and whitespace made uniform (SQLAlchemy's ``%(name)s`` and
    psycopg's ``$1`` alike), to match pg_prepared_statements to the calls."""
    return " ".join(_PLACEHOLDER.sub("?", sql).split())


def watch_statements(engine: sa.Engine, runner: Runner) -> None:
    """Record which kinds of call ran each SQL statement."""
    seen: dict[str, str] = {}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        key = seen.get(statement)
        if key is None:
            key = seen[statement] = normalize(statement)
        runner.statement_kinds.setdefault(key, set()).add(runner.kind)


def prepared_statements(engine: sa.Engine, runner: Runner) -> list[list[str]]:
    """Every prepared statement of the pool's idle connections, with its plan counts.

    Prepared statements belong to a server session: each pooled connection has its
    own, so all idle connections are checked out together and each is asked.
    """
    idle = max(1, engine.pool.checkedin() if isinstance(engine.pool, sa.pool.QueuePool)
               else 1)
    rows: list[list[str]] = []
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(engine.connect()) for _ in range(idle)]
        for conn in conns:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            found = conn.execute(sa.text(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
                "ORDER BY generic_plans + custom_plans DESC, statement")).all()
            for statement, generic, custom in found:
                kinds = runner.statement_kinds.get(normalize(statement), set())
                rows.append([str(pid), " ".join(statement.split())[:60].replace("|", "/"),
                             ", ".join(k for k in KINDS if k in kinds) or "-",
                             f"{generic:,}", f"{custom:,}"])
    return rows


def run_backend(backend: str, url: str, pool: Pool, args: argparse.Namespace
                ) -> BackendRun:
    notes: list[str] = []
    convs = build_trap(url, backend, pool, DEEP_QUICK if args.quick else DEEP, notes)
    timeout_ms = args.timeout_s * 1000

    def make_engine() -> sa.Engine:
        if backend == "postgresql":
            # psycopg's default prepare_threshold stays: the point of the benchmark.
            return convotree.create_engine(url, connect_args={
                "options": f"-c statement_timeout={round(timeout_ms)}"})
        return convotree.create_engine(url)

    runner = Runner(make_engine, convs, timeout_ms)
    plan = schedule(convs, args.calls, SEED)
    shallow_calls = sum(1 for _, i in plan if convs[i].shallow)
    first_deep = next((n for n, (_, i) in enumerate(plan) if not convs[i].shallow), len(plan))
    notes.append(f"{len(plan):,} calls; the first {first_deep:,} all on the shallow "
                 f"conversations ({shallow_calls:,} shallow in all).")
    started = time.perf_counter()
    try:
        runner.warm_up()
        runner.run(plan, backend)
        seconds = time.perf_counter() - started
        prepared = (prepared_statements(runner.store.engine, runner)
                    if backend == "postgresql" else [])
    finally:
        runner.close()
    return BackendRun(backend, runner.stats, seconds, notes + runner.notes,
                      {c.depth: c.nodes for c in convs}, prepared)


# --- the report --------------------------------------------------------------------------


def _ms(value: float, timeout_ms: float | None) -> str:
    if timeout_ms is not None and value >= timeout_ms:
        return f">= {timeout_ms:,.0f}"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _median(run: BackendRun | None, key: tuple[str, int]) -> float | None:
    cell = run.stats.get(key) if run else None
    return statistics.median(cell.times) if cell and cell.times else None


#: A spike smaller than this is the machine's noise, not a plan (2 shared cores).
NOISE_MS = 5.0
#: A PostgreSQL cell this many times slower than SQLite's is on a bad plan every time.
SLOWER_THAN_SQLITE = 10.0


def result_rows(run: BackendRun, timeout_ms: float | None, baseline: BackendRun | None
                ) -> list[list[str]]:
    """One row per (operation, depth); ``baseline`` (SQLite) gives the x sqlite column."""
    rows: list[list[str]] = []
    for kind in KINDS:
        for depth in sorted(d for k, d in run.stats if k == kind):
            cell = run.stats[(kind, depth)]
            if not cell.times:
                rows.append([run.backend, kind, f"{depth:,}", f"{run.nodes.get(depth, 0):,}",
                             "0", "-", "-", "-", "-", "-", "-", str(cell.timeouts),
                             str(cell.errors), "DEGRADED"])
                continue
            times = sorted(cell.times)
            median = statistics.median(times)
            p95 = (statistics.quantiles(times, n=20, method="inclusive")[18]
                   if len(times) > 1 else times[0])
            worst = times[-1]
            ratio = worst / median if median > 0 else math.inf
            other = _median(baseline, (kind, depth)) if baseline is not run else None
            spiked = worst > 3 * median and worst - median > NOISE_MS
            slow = other is not None and median > SLOWER_THAN_SQLITE * other
            ok = cell.timeouts == 0 and cell.errors == 0 and not spiked and not slow
            rows.append([
                run.backend, kind, f"{depth:,}", f"{run.nodes.get(depth, 0):,}",
                f"{len(times):,}", _ms(median, timeout_ms), _ms(p95, timeout_ms),
                f">= {timeout_ms:,.0f}" if cell.timeouts and timeout_ms else _ms(worst, None),
                f"{ratio:,.1f}", f"{median / other:,.1f}" if other else "-",
                f"{cell.slowest_call:,}", str(cell.timeouts), str(cell.errors),
                "ok" if ok else "DEGRADED"])
    return rows


def _versions(pg_url: str | None) -> str:
    import psycopg  # the driver convotree uses on PostgreSQL

    parts = [f"Python {platform.python_version()}", f"SQLAlchemy {sa.__version__}",
             f"psycopg {psycopg.__version__}", f"SQLite {sqlite3.sqlite_version}",
             f"convotree {convotree.__version__}"]
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "-C", str(Path(convotree.__file__).resolve().parent), "rev-parse",
             "--short", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        if commit:
            parts[-1] += f" (git {commit}, {Path(convotree.__file__).resolve().parents[2]})"
    if pg_url:
        with contextlib.suppress(Exception):
            engine = sa.create_engine(pg_url)
            with engine.connect() as conn:
                version = conn.execute(sa.text("SHOW server_version")).scalar_one()
                settings = {name: conn.execute(sa.text(f"SHOW {name}")).scalar_one()
                            for name in ("plan_cache_mode", "autovacuum")}
            engine.dispose()
            parts.append(f"PostgreSQL {version} (plan_cache_mode={settings['plan_cache_mode']},"
                         f" server autovacuum={settings['autovacuum']})")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> str:
    pool = Pool.build()
    deep = DEEP_QUICK if args.quick else DEEP
    workdir = Path(tempfile.mkdtemp(prefix="convotree-plans-"))
    backends: list[tuple[str, str]] = []
    if "sqlite" in args.backends:
        backends.append(("sqlite", f"sqlite:///{workdir / 'plans.db'}"))
    pg = postgres_database() if "postgresql" in args.backends else None
    if pg:
        backends.append(("postgresql", pg[0]))
    versions = _versions(pg[0] if pg else None)
    runs: list[BackendRun] = []
    total_started = time.perf_counter()
    try:
        for backend, url in backends:
            runs.append(run_backend(backend, url, pool, args))
            print(f"[{backend}] {args.calls:,} calls in {runs[-1].seconds:.0f}s",
                  file=sys.stderr)
    finally:
        if pg:
            drop_postgres_database(pg[1])
    total = time.perf_counter() - total_started

    sqlite_run = next((r for r in runs if r.backend == "sqlite"), None)
    rows = [row for r in runs
            for row in result_rows(r, args.timeout_s * 1000 if r.backend == "postgresql"
                                   else None, sqlite_run)]
    nodes = runs[0].nodes if runs else {}
    shapes = ", ".join(f"depth {d:,} ({nodes.get(d, 0):,} nodes)" for d, _ in SHALLOW + deep)
    out = [
        f"# Plan cache and stale statistics ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({platform.platform()}); "
        f"{versions}.", "",
        "**The trap.** psycopg 3 prepares a statement on the server after 5 executions "
        "(`prepare_threshold`), and PostgreSQL may then use a generic plan, costed without "
        "the parameter values. Stale statistics mislead custom plans too. This run builds "
        f"both on purpose in a fresh database `{DATABASE}`: two shallow conversations "
        f"(depth {', '.join(f'{d:,}' for d, _ in SHALLOW)}, with side branches) are loaded "
        f"and `ANALYZE`d, then deep ones (depth {', '.join(f'{d:,}' for d, _ in deep)}) "
        "are bulk-loaded with no `ANALYZE` after; autovacuum is off on convotree's tables. "
        "One long-lived `Store` (default `prepare_threshold`, server-side "
        f"`statement_timeout={args.timeout_s:g}s`) then makes {args.calls:,} calls in a "
        "seeded random order, the first ones all on the shallow conversations. SQLite gets "
        "the same calls, for comparison.", "",
        f"Conversations: {shapes}. Calls: `path(leaf)`, `context(leaf, model=\"{MODEL}\", "
        "budget=16000 | 128000)`, `append` under the branch's tip (then under the new "
        "one), `fork` (append under the middle node of the main path, `set_current=False`), "
        "`children(middle)`, `leaves(conv)`, `tree(conv)` (conversations of at most "
        f"{TREE_MAX_NODES:,} nodes), `node(conv, id)`, `delete_subtree` of a two-message "
        "fork made (untimed) for it. Before the timed calls, one untimed call of each kind "
        "on the depth-10 conversation compiles the SQL. Depth = the conversation's depth "
        "when loaded; x sqlite = this median over SQLite's for the same cell; slowest # = the "
        "number of the slowest call in the run's order. "
        f"Verdict: DEGRADED when a call timed out or failed, when the slowest call is over "
        f"3 x the median and more than {NOISE_MS:.0f} ms above it (smaller spikes are this "
        f"2-core machine's noise), or when a PostgreSQL median is over "
        f"{SLOWER_THAN_SQLITE:.0f} x SQLite's for the same cell (a bad plan every time, as "
        "stale statistics make it); else ok.", "",
        "Run: `python -m benchmarks plans [--quick] [--calls N] [--timeout-s S] "
        "[--backends sqlite,postgresql] [--out FILE]` "
        f"(this run: {' '.join(args.argv) or 'defaults'}; {total / 60:.1f} min in all).", "",
        "## Calls per (operation, depth)", "",
        table(["backend", "operation", "depth", "nodes", "calls", "median ms", "p95 ms",
               "max ms", "max/median", "x sqlite", "slowest #", "timeouts", "errors",
               "verdict"], rows),
        "",
    ]
    for r in runs:
        out += [f"**{r.backend}**: {r.seconds:.0f}s of calls. " + " ".join(r.notes), ""]
        if r.backend == "postgresql":
            out += ["## PostgreSQL prepared statements of the store's connections", "",
                    "From `pg_prepared_statements` of each idle pooled connection (pid) "
                    "after the calls; 'used by' = the kinds of call that ran the statement.",
                    ""]
            out += [table(["pid", "statement (first 60 chars)", "used by", "generic_plans",
                           "custom_plans"], r.prepared) if r.prepared
                    else "(no prepared statements)", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks plans",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="deep conversations of 1,000 and 3,000 (not 10,000)")
    parser.add_argument("--calls", type=int, default=1_000)
    parser.add_argument("--backends", default="sqlite,postgresql",
                        type=lambda s: s.split(","))
    parser.add_argument("--timeout-s", type=float, default=30.0,
                        help="PostgreSQL statement_timeout of the store's connections")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"write the report here too (default: {RESULTS.name} for a "
                             "full run; a --quick run writes no file)")
    return parse_run_publish(parser, argv, run, RESULTS)


if __name__ == "__main__":
    sys.exit(main())
