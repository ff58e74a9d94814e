"""Repeat-and-take-the-median timing, bounded in time for slow contenders."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path


def median_ms(run: Callable[[], object], *, repeat: int, max_seconds: float = 5.0,
              warmup: int = 1) -> float:
    """Median wall time of ``run`` in milliseconds: ``repeat`` runs, at least 3, fewer
    if they take more than ``max_seconds`` together."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeat:
        begin = time.perf_counter()
        run()
        times.append((time.perf_counter() - begin) * 1000)
        if len(times) >= 3 and time.perf_counter() - started > max_seconds:
            break
    return statistics.median(times)


def paired_median_ms(first: Callable[[], object], second: Callable[[], object], *,
                     repeat: int, max_seconds: float = 5.0) -> tuple[float, float]:
    """Medians of two contenders run alternately, so machine noise hits both alike."""
    first(), second()
    a: list[float] = []
    b: list[float] = []
    started = time.perf_counter()
    while len(a) < repeat:
        for run, times in ((first, a), (second, b)):
            begin = time.perf_counter()
            run()
            times.append((time.perf_counter() - begin) * 1000)
        if len(a) >= 5 and time.perf_counter() - started > max_seconds:
            break
    return statistics.median(a), statistics.median(b)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (it also reads well in a terminal)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in rows]
    return "\n".join([line, rule, *body])


def publish(report: str, out: Path | None) -> None:
    """Print a benchmark's tables and, unless ``out`` is None, write them to ``out``."""
    print(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"\n(written to {out})", file=sys.stderr)


def parse_run_publish(parser: argparse.ArgumentParser, argv: list[str] | None,
                      run: Callable[[argparse.Namespace], str], results: Path) -> int:
    """The end of a benchmark command with ``--quick`` and ``--out``: run it, print its
    tables, and write them to ``results`` for a full run (``--out`` elsewhere; a quick
    run writes nothing unless ``--out`` says where). ``args.argv`` is the command line,
    for the report's heading."""
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    publish(run(args), args.out if args.out is not None or args.quick else results)
    return 0
