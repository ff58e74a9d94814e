"""Run the benchmarks and print their tables: ``python -m benchmarks [--quick]``.

``python -m benchmarks peers`` measures convotree next to the OpenAI Agents SDK and
LangChain stores (needs the ``bench`` extra: ``pip install -e '.[bench]'``);
``python -m benchmarks plans`` runs 1,000 mixed calls on one long-lived store over
misleading statistics. Each writes its own table to ``benchmarks/results/``.

Writes the same tables to ``benchmarks/results/context.md``. PostgreSQL comes from
``CONVOTREE_BENCH_POSTGRES_URL`` (default: the local test server); a database
``convotree_bench`` is created there for the run and dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"
if "TIKTOKEN_CACHE_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_SHARED)

import convotree  # noqa: E402

from . import append_bench, chat_bench, context_bench, import_bench, summary_bench  # noqa: E402
from ._data import OASST, Pool, load_tree, texts  # noqa: E402
from ._timing import publish, table  # noqa: E402

PG_URL = os.environ.get("CONVOTREE_BENCH_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).resolve().parent / "results" / "context.md"


def postgres_database() -> tuple[str, sa.Engine] | None:
    admin_url = make_url(PG_URL)
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("DROP DATABASE IF EXISTS convotree_bench WITH (FORCE)"))
            conn.execute(sa.text("CREATE DATABASE convotree_bench"))
    except Exception as exc:
        print(f"PostgreSQL unavailable ({type(exc).__name__}); benchmarking SQLite only",
              file=sys.stderr)
        return None
    return admin_url.set(database="convotree_bench").render_as_string(False), admin


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def run(args: argparse.Namespace) -> str:
    pool = Pool.build()
    out: list[str] = [
        f"# convotree benchmarks ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, SQLAlchemy {sa.__version__}. Messages: real OASST2 "
        f"texts, mean {pool.mean_tokens():.0f} tokens each (with per-message overhead). "
        f"Model gpt-4o. Times are medians of up to {args.repeat} runs.",
        "",
    ]
    workdir = Path(tempfile.mkdtemp(prefix="convotree-bench-"))
    backends: list[tuple[str, str]] = [("sqlite", f"sqlite:///{workdir / 'bench.db'}")]
    pg = postgres_database() if "postgresql" in args.backends else None
    if pg:
        backends.append(("postgresql", pg[0]))
    backends = [b for b in backends if b[0] in args.backends]
    shapes = [(f"chain {d:,}", d, 0) for d in args.depths]
    shapes.append((f"bushy {args.bushy:,} spine x 9 side branches", args.bushy, 9))
    context_rows: list[list[str]] = []
    append_rows: list[list[str]] = []
    import_rows: list[list[str]] = []
    chat_rows: list[list[str]] = []
    import_file_path = workdir / "import.jsonl"
    chatgpt_path = workdir / "conversations.json"
    try:
        for backend, url in backends:
            with convotree.Store(url, create=True) as store:
                if backend == "postgresql":
                    with store.engine.begin() as conn:
                        conn.execute(sa.text("ANALYZE"))
                for label, spine, side in shapes:
                    started = time.perf_counter()
                    leaf, total = load_tree(store, pool, spine=spine, side_branches=side)
                    if backend == "postgresql":
                        with store.engine.begin() as conn:
                            conn.execute(sa.text("ANALYZE convotree_nodes"))
                    print(f"[{backend}] loaded {label} ({total:,} nodes) in "
                          f"{time.perf_counter() - started:.1f}s", file=sys.stderr)
                    for budget in args.budgets:
                        r = context_bench.measure(store, leaf, budget, args.repeat,
                                                  with_naive=not args.no_naive)
                        naive = r.get("naive")
                        context_rows.append([
                            backend, label, f"{budget // 1000}k", fmt(r["messages"], 0),
                            fmt(r["convotree"]), fmt(r["floor"]),
                            fmt(r["convotree"] / r["floor"]),
                            fmt(naive) if naive else "-",
                            fmt(naive / r["convotree"], 1) if naive else "-",
                        ])
                        print("  " + " | ".join(context_rows[-1]), file=sys.stderr)
                sample = texts()[:200]
                ours = append_bench.convotree_rate(store, sample, args.appends)
                raw = append_bench.raw_rate(store, sample, args.appends)
                append_rows.append([backend, fmt(ours, 0), fmt(raw, 0), fmt(raw / ours)])
                # Before the import: 100,000 fresh rows set autovacuum to work, which
                # would take the CPU from this measure on a two-core machine.
                turn = chat_bench.measure(url, history=100 if args.quick else 400,
                                          repeat=10 if args.quick else 50)
                chat_rows.append([backend, fmt(turn["context_tokens"], 0),
                                  fmt(turn["raw_ms"]), fmt(turn["turn_ms"]),
                                  fmt(turn["overhead_ms"])])
                if not import_file_path.exists():
                    import_bench.write_file(import_file_path, texts(), args.imports)
                    import_bench.write_chatgpt(chatgpt_path, texts(), args.imports)
                for label, path, kind in (
                        (f"OASST2, real ({OASST.name})", OASST, "oasst"),
                        (f"OASST flat rows, trees of {import_bench.TREE_SIZE}",
                         import_file_path, "oasst"),
                        ("ChatGPT export, 100-message conversations", chatgpt_path,
                         "chatgpt")):
                    count, rate = import_bench.measure(url, path, kind)
                    import_rows.append([backend, label, fmt(count, 0), fmt(rate, 0)])
                    print(f"[{backend}] {label}: {count:,} messages at {rate:,.0f}/s",
                          file=sys.stderr)
    finally:
        if pg:
            pg[1].dispose()
            with sa.create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT").connect() as c:
                c.execute(sa.text("DROP DATABASE IF EXISTS convotree_bench WITH (FORCE)"))

    out += ["## Assembling a context", "",
            "convotree = `Store.context()` end to end; floor = the bare bounded recursive CTE "
            "on the driver's cursor; naive = load the whole path, tokenize, prune.", "",
            table(["backend", "tree", "budget", "msgs", "convotree ms", "floor ms",
                   "convotree/floor", "naive ms", "naive/convotree"], context_rows), ""]
    depth_rows = []
    for backend, _ in backends:
        for budget in args.budgets:
            cells = {row[1]: row for row in context_rows
                     if row[0] == backend and row[2] == f"{budget // 1000}k"}
            chains = [cells[f"chain {d:,}"] for d in sorted(args.depths)
                      if f"chain {d:,}" in cells]
            if len(chains) < 2:
                continue
            deep = chains[-1]
            # The shallowest chain whose path overflows the budget: same window size.
            full = next((r for r in chains if int(r[3].replace(",", "")) < int(
                r[1].split()[1].replace(",", "")) + 1), deep)
            ms = [float(r[4].replace(",", "")) for r in (chains[0], full, deep)]
            depth_rows.append([backend, f"{budget // 1000}k", chains[0][1].split()[1], fmt(ms[0]),
                               full[1].split()[1], fmt(ms[1]), deep[1].split()[1], fmt(ms[2]),
                               fmt(ms[2] / ms[0]), fmt(ms[2] / ms[1])])
    out += ["## Depth independence", "",
            "convotree time at the deepest chain over the shallowest (the issue's measure; "
            "at 128k the shallow path is shorter than the budget, so it sends fewer "
            "messages) and over the shallowest chain whose path overflows the budget "
            "(the same window size).", "",
            table(["backend", "budget", "shallow", "ms", "first full", "ms", "deep", "ms",
                   "deep/shallow", "deep/first full"], depth_rows),
            "", "## Append throughput (one writer, a commit per message)", "",
            table(["backend", "convotree msg/s", "raw INSERT msg/s", "raw/convotree"],
                  append_rows), "",
            "## Import throughput", "",
            "`convotree.interchange.import_file`: validation, tokens counted once, each "
            "conversation all or nothing, written in batches (a few statements and one "
            "commit per batch). The tokenizer is loaded before the clock starts.", "",
            table(["backend", "file", "messages", "messages/s"], import_rows), "",
            "## A chat turn: what `Chat.send` adds to the HTTP call", "",
            "Same local fake OpenAI server (real HTTP) for both; `Chat.send` stores the "
            f"question, assembles the context (8k budget, {100 if args.quick else 400} "
            "prior turns), calls the API "
            "and stores the answer with its usage; raw is `chat.completions.create` with "
            "the same messages. Medians, alternating runs.", "",
            table(["backend", "context tokens", "raw call ms", "Chat.send ms",
                   "convotree ms/turn"], chat_rows), ""]
    if not args.no_summaries:
        out += summaries_section(args, workdir)
    return "\n".join(out)


def summaries_section(args: argparse.Namespace, workdir: Path) -> list[str]:
    turns = 200 if args.quick else 1_000
    r = summary_bench.simulate(f"sqlite:///{workdir / 'summaries.db'}", turns=turns)
    per_call = r["turns"] / max(r["summarizer_calls"], 1)
    target = r["budget"] / r["mean_turn_tokens"] / 2
    billed = r["convotree_input"] + r["summarizer_input"]
    rows = [
        ["turns (main branch)", fmt(r["turns"], 0)],
        ["mean tokens per turn (user + assistant)", fmt(r["mean_turn_tokens"], 0)],
        ["summarizer calls (main branch)", fmt(r["summarizer_calls"], 0)],
        ["turns per summarizer call", f"{per_call:.1f} (target >= {target:.1f})"],
        [f"summarizer calls on {r['branches']} branches x 3 turns", fmt(r["branch_calls"], 0)],
        ["input tokens sent to the summarizer", fmt(r["summarizer_input"], 0)],
        ["input tokens per turn: convotree contexts", fmt(r["convotree_input"] / turns, 0)],
        ["input tokens per turn: convotree incl. summarizer", fmt(billed / turns, 0)],
        ["input tokens per turn: (a) resend full history", fmt(r["full_input"] / turns, 0)],
        ["input tokens per turn: (b) previous_response_id chaining",
         fmt(r["full_input"] / turns, 0)],
        ["total billed input: convotree / full history", f"{billed / r['full_input']:.3f}"],
    ]
    return ["## Summaries over a long branching chat", "",
            f"{turns} turns, 8k budget, a 3-turn branch every 50 turns, OpenAISummarizer "
            "against a local fake OpenAI server (real HTTP) that counts calls and tokens. "
            "(b) bills the whole history as input every turn, like (a).", "",
            table(["measure", "value"], rows), ""]


#: ``python -m benchmarks <name> ...``: the benchmarks that have a command of their own.
SUBCOMMANDS = {"citus": "citus_bench", "peers": "peers_bench", "plans": "plans_bench",
               "reporting": "reporting_bench",
               "rls": "rls_bench"}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        import importlib

        module = importlib.import_module(f".{SUBCOMMANDS[sys.argv[1]]}", __package__)
        return int(module.main(sys.argv[2:]))
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--backends", default="sqlite,postgresql",
                        type=lambda s: s.split(","))
    parser.add_argument("--depths", default="100,1000,10000,100000",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--budgets", default="4000,16000,128000",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--bushy", type=int, default=2_000, help="spine length of the bushy tree")
    parser.add_argument("--repeat", type=int, default=101)
    parser.add_argument("--appends", type=int, default=2_000)
    parser.add_argument("--imports", type=int, default=100_000,
                        help="messages in the generated import file")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive assembler")
    parser.add_argument("--no-summaries", action="store_true",
                        help="skip the summary simulation")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, for checking the benchmark itself")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"write the tables here too (default: {RESULTS.name} in "
                             "benchmarks/results for full runs; --quick writes no file)")
    args = parser.parse_args()
    if args.quick:
        args.depths, args.budgets, args.bushy = [100, 1000], [4000, 16000], 200
        args.repeat, args.appends, args.imports = 5, 200, 2_000
    publish(run(args), args.out if args.out is not None else None if args.quick else RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
