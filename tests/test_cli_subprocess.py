"""The installed ``convotree`` console script, as a user runs it: a real process, its
exit status, and plain text (no ANSI codes) when its output is a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import convotree
from convotree.cli._resolve import short
from tests.test_cli_support import build_lisbon

pytestmark = pytest.mark.slow

SCRIPT = Path(sys.executable).parent / "convotree"


def convotree_cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *argv], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    variables = {k: v for k, v in os.environ.items()
                 if k not in ("FORCE_COLOR", "NO_COLOR", "COLUMNS")}
    variables.update(CONVOTREE_URL=db_url, XDG_DATA_HOME=str(tmp_path / "xdg"))
    return variables


@pytest.fixture
def lisbon(db_url: str) -> dict[str, Any]:
    tenant = f"proc-{uuid.uuid4().hex}"
    with convotree.Store(db_url, tenant=tenant) as store:
        return {**build_lisbon(store), "tenant": tenant}


def test_script_is_installed() -> None:
    assert SCRIPT.is_file(), "pip install -e . installs the console script"


def test_browse_through_a_pipe(env: dict[str, str], lisbon: dict[str, Any]) -> None:
    tenant = ["--tenant", lisbon["tenant"]]
    listing = convotree_cli("ls", *tenant, env=env)
    assert listing.returncode == 0, listing.stderr
    assert "Lisbon [plan]" in listing.stdout and "\x1b" not in listing.stdout
    tree = convotree_cli("show", short(lisbon["conv"].id), "--tree", *tenant, env=env)
    assert tree.returncode == 0 and "◀ current" in tree.stdout and "\x1b" not in tree.stdout
    assert max(len(line) for line in tree.stdout.splitlines()) <= 80  # rich's pipe width
    context = convotree_cli("context", short(lisbon["conv"].id), "-m", "gpt-4o", "--json",
                            *tenant, env=env)
    assert json.loads(context.stdout)["messages"][-1]["content"] == "Add a food tour"
    report = convotree_cli("report", "--json", *tenant, env=env)
    assert json.loads(report.stdout)["totals"]["messages"] == 7


def test_errors_are_one_line_with_status_1(env: dict[str, str], tmp_path: Path) -> None:
    missing = convotree_cli("show", str(uuid.uuid4()), env=env)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("convotree: error: ") and missing.stderr.count("\n") == 1
    bad = convotree_cli("ls", "--url", "nonsense", env=env)
    assert bad.returncode == 1 and "not a database URL" in bad.stderr
    down = convotree_cli("ls", "--url", "postgresql://nobody@127.0.0.1:1/x", env=env)
    assert down.returncode == 1 and "Traceback" not in down.stderr


def test_usage_error_status_2(env: dict[str, str]) -> None:
    result = convotree_cli("context", "abcd", env=env)
    assert result.returncode == 2 and "--model" in result.stderr


def test_demo_then_default_database(env: dict[str, str], tmp_path: Path) -> None:
    del env["CONVOTREE_URL"]
    demo = convotree_cli("demo", env=env)
    assert demo.returncode == 0, demo.stderr
    assert str(tmp_path / "xdg" / "convotree" / "convotree.db") in demo.stdout
    assert "Lisbon trip for two" in convotree_cli("ls", env=env).stdout


def test_python_dash_m_convotree_demo(tmp_path: Path, env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "convotree.demo", "demo.db"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo.db").is_file()


def test_import_convotree_stays_cheap() -> None:
    code = ("import sys, convotree; "
            "print(sorted(m for m in sys.modules if m.startswith(('rich', 'convotree.cli', "
            "'convotree.interchange', 'convotree.reporting'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_import_and_export_as_a_process(env: dict[str, str], tmp_path: Path) -> None:
    """A real export of another tool, imported and exported back by the console script."""
    tenant = ["--tenant", f"proc-{uuid.uuid4().hex}"]
    source = Path(__file__).parent / "fixtures" / "interchange" / "openwebui_branching.json"
    imported = convotree_cli("import", str(source), "-f", "openwebui", "--json", *tenant,
                             env=env)
    assert imported.returncode == 0, imported.stderr
    result = json.loads(imported.stdout)
    assert result["imported"] == 1 and result["failed"] == 0
    out = tmp_path / "backup.json"
    exported = convotree_cli("export", result["conversation_ids"][0], "-f", "native", "-o",
                             str(out), *tenant, env=env)
    assert exported.returncode == 0, exported.stderr
    assert len(json.loads(out.read_text())["nodes"]) == result["nodes"]
    again = convotree_cli("import", str(out), "-f", "native", *tenant, env=env)
    assert again.returncode == 0
    assert again.stdout.startswith("0 conversations imported, 1 skipped, 0 failed")


def test_a_reader_leaving_the_pipe_is_not_an_error(env: dict[str, str], tmp_path: Path) -> None:
    """`convotree show ID | head -1`: status 0 and no traceback when head stops reading."""
    url = f"sqlite:///{tmp_path / 'big.db'}"
    with convotree.Store(url, create=True) as store:
        conv = store.create_conversation(title="long transcript")
        root = store.append(conv, role="system", content="Be brief.")
        store.append_chain(root, [{"role": "user" if i % 2 == 0 else "assistant",
                                   "content": f"message {i} " * 30} for i in range(2000)])
    shell = f"{SCRIPT} show {conv.id} --url {url} | head -1; echo status ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env,
                          timeout=120, check=True)
    assert done.stdout.splitlines() == ["long transcript", "status 0"]
    assert "Traceback" not in done.stderr


def test_an_encoding_that_cannot_load_prints_the_whole_fix(tmp_path: Path) -> None:
    """Offline and without TIKTOKEN_CACHE_DIR holding the encoding: one line that says
    which encoding, why, where tiktoken fetches it and what to set; no traceback."""
    empty = tmp_path / "cache"
    empty.mkdir()
    variables = {k: v for k, v in os.environ.items() if k != "CONVOTREE_URL"}
    # A proxy that refuses at once: no lookup, no wait, whatever the machine's network.
    variables.update(TIKTOKEN_CACHE_DIR=str(empty), HTTPS_PROXY="http://127.0.0.1:9",
                     HTTP_PROXY="http://127.0.0.1:9", XDG_DATA_HOME=str(tmp_path / "xdg"))
    done = convotree_cli("demo", "--db", str(tmp_path / "demo.db"), env=variables)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert message.count("\n") == 0
    assert "'o200k_base' could not be loaded" in message
    assert ("https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken "
            "and caches it") in message
    assert (f"set TIKTOKEN_CACHE_DIR to that folder (TIKTOKEN_CACHE_DIR={empty} does not "
            "hold it).") in message
    assert message.endswith("does not hold it).")
