"""What a command loads: start-up time is part of the command line's interface.

``convotree --help`` builds the parser from every command module, so those modules may
import only the standard library; each command then loads what it uses and nothing
more (no alembic, openai or tiktoken to list conversations). Times themselves are
measured by ``python -m benchmarks.cli_bench``, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROBE = """
import json, sys, contextlib, io
from convotree.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""
HEAVY = ("sqlalchemy", "rich", "alembic", "openai", "httpx", "tiktoken", "psycopg")


def _loaded(tmp_path: Path, *argv: str) -> tuple[int, set[str]]:
    out = tmp_path / "modules.json"
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    env.pop("CONVOTREE_URL", None)
    subprocess.run([sys.executable, "-c", PROBE, str(out), *argv], env=env, check=True,
                   timeout=120, capture_output=True)
    data = json.loads(out.read_text())
    return data["code"], set(data["modules"])


def _roots(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize("argv", [["--help"], ["db", "--help"], ["context", "--help"],
                                  ["--version"]])
def test_help_loads_nothing_heavy(tmp_path: Path, argv: list[str]) -> None:
    code, modules = _loaded(tmp_path, *argv)
    assert code == 0
    assert not _roots(modules) & set(HEAVY)
    assert "convotree.store" not in modules


def test_listing_loads_neither_alembic_nor_openai_nor_tiktoken(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    subprocess.run([str(Path(sys.executable).parent / "convotree"), "demo"], env=env,
                   check=True, capture_output=True, timeout=120)
    for argv in (["ls"], ["show", "33d9ae4e", "--tree"], ["report"]):
        code, modules = _loaded(tmp_path, *argv)
        assert code == 0, argv
        assert not _roots(modules) & {"alembic", "openai", "httpx", "tiktoken", "psycopg"}, argv
        assert "convotree._assemble" not in modules and "convotree.chat" not in modules


def test_importing_the_package_loads_nothing_heavy(tmp_path: Path) -> None:
    code = ("import json, sys, convotree, convotree.alembic; "
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert not _roots(set(json.loads(done.stdout))) & set(HEAVY)
