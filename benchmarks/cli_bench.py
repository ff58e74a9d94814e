"""Command-line start-up: how long people wait for `convotree --help`, `ls`, `show`.

``python -m benchmarks.cli_bench [--repeat N] [--out FILE]`` fills a SQLite database with
the demo, then runs each command as a new process (what a person typing it gets) and
prints the median and slowest wall time, next to the import time of ``convotree.cli``
reported by ``python -X importtime``. Targets (the first-hour issue): ``--help`` and
``ls`` under 0.5 s on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._timing import publish, table

BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results" / "cli.md"
TARGET_S = 0.5


def _wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - started


def _import_ms(module: str) -> float:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                          capture_output=True, text=True, check=True)
    last = [line for line in done.stderr.splitlines() if re.search(rf"\| {module}$", line)]
    return int(last[-1].split("|")[1]) / 1000


def run(repeat: int) -> str:
    home = Path(tempfile.mkdtemp(prefix="convotree-cli-bench-"))
    env = {**os.environ, "XDG_DATA_HOME": str(home), "COLUMNS": "100"}
    env.pop("CONVOTREE_URL", None)
    script = str(BIN / "convotree")
    subprocess.run([script, "demo"], env=env, stdout=subprocess.DEVNULL, check=True)
    commands = [["--help"], ["ls"], ["show", "33d9ae4e"], ["show", "33d9ae4e", "--tree"],
                ["context", "33d9ae4e", "-m", "gpt-4o-mini", "-b", "120"], ["report"]]
    rows = []
    for argv in commands:
        _wall([script, *argv], env)   # warm the page cache once
        times = [_wall([script, *argv], env) for _ in range(repeat)]
        median = statistics.median(times)
        rows.append([" ".join(["convotree", *argv]), f"{median:.3f}", f"{max(times):.3f}",
                     "yes" if median < TARGET_S else "no"])
    bare = statistics.median(_wall([sys.executable, "-c", "pass"], env) for _ in range(repeat))
    imports = statistics.median(_import_ms("convotree.cli") for _ in range(5))
    return "\n".join([
        "# Command-line start-up", "",
        f"Each command is a new process, {repeat} runs after one warm-up, on a SQLite "
        f"database holding the demo conversation. A bare `python -c pass` takes "
        f"{bare:.3f} s here; `import convotree.cli` costs {imports:.0f} ms "
        "(`python -X importtime`).", "",
        table(["command", "median s", "slowest s", f"median < {TARGET_S} s"], rows), ""])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli_bench",
                                     description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    publish(run(args.repeat), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
