"""The example scripts run as written (offline: against convotree's local fake server)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_branching_chat_example_runs_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "branching_chat.py"), str(tmp_path / "x.db")],
        capture_output=True, text=True, env=env, timeout=120, check=True)
    out = result.stdout
    assert "OPENAI_API_KEY is not set" in out
    assert re.search(r": 10 nodes, 3 branches", out)
    counted = re.search(r"counted by convotree: (\d+) input tokens; billed by the API: (\d+)", out)
    assert counted and counted.group(1) == counted.group(2)
    assert '"content": "Make it five days"' in out and "Make it three days\"" not in out
