"""The offline demo (``convotree demo``, ``make demo``) runs and shows what it claims."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from convotree import demo
from tests.test_cli_support import exempt_reporting, run_cli


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    exempt_reporting(monkeypatch)
    monkeypatch.delenv("CONVOTREE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("COLUMNS", "80")


def check_output(text: str) -> None:
    assert text.count("◀ current") == 1
    assert "Context for" in text and "summary made now" in text and "summary reused" in text
    assert "summarizer calls 1" in text and "summarizer calls 0" in text
    assert "Make it three days." in text and "Make it five days." in text
    assert "convotree show" in text and "convotree context" in text
    assert "\x1b" not in text
    # Paths are never broken (they are copied); everything else fits 80 columns.
    assert max(len(line.rstrip()) for line in text.splitlines()
               if not line.startswith(("Database:", "  export"))) <= 80


def test_demo_goes_to_the_default_database_and_the_printed_commands_work(
        tmp_path: Path) -> None:
    result = run_cli("demo")
    assert result.code == 0, result.err
    path = tmp_path / "xdg" / "convotree" / "convotree.db"
    assert f"Database: {path} (SQLite)" in result.out
    check_output(result.out)
    assert "CONVOTREE_URL" not in result.out  # the default database: no flag needed
    commands = [line[line.index("convotree "):].split()[1:] for line in result.out.splitlines()
                if "  convotree " in line and "--help" not in line]
    assert len(commands) == 6
    for argv in commands:
        ran = run_cli(*argv)
        assert ran.code == 0, (argv, ran.err)
        assert ran.out


def test_demo_twice_replaces_only_its_conversation(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    url = f"sqlite:///{db}"
    run_cli("db", "upgrade", "--url", url)
    run_cli("import", str(Path(__file__).parent / "fixtures" / "interchange" /
                          "openai_tools.json"), "--format", "openai", "--url", url)
    first = run_cli("demo", "--db", str(db))
    second = run_cli("demo", "--db", str(db))
    assert first.code == second.code == 0
    assert "replacing" not in first.out and "replacing the previous demo run" in second.out
    check_output(second.out)
    assert f"export CONVOTREE_URL=sqlite:///{db}" in second.out
    listing = run_cli("ls", "--url", url).lines
    assert len(listing) == 3  # header, the demo, the conversation imported before


def test_demo_on_any_backend(empty_db_url: str) -> None:
    result = run_cli("demo", "--url", empty_db_url)
    assert result.code == 0, result.err
    check_output(result.out)


def test_python_dash_m_demo_writes_the_given_file(tmp_path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert demo.main([str(tmp_path / "demo.db")]) == 0
    assert (tmp_path / "demo.db").is_file()
    check_output(out.getvalue())


def test_bundled_data_is_a_chatgpt_export_with_three_branches() -> None:
    (conversation,) = demo.demo_data()
    messages = [e for e in conversation["mapping"].values() if e["message"]]
    children = {e["id"]: len(e["children"]) for e in messages}
    assert sum(1 for count in children.values() if count == 0) == 3
    assert conversation["current_node"] in children


@pytest.mark.slow
def test_demos_running_at_once_all_succeed(empty_db_url: str, tmp_path: Path) -> None:
    """Several `convotree demo` processes on one database at the same moment: each one
    prints the whole demo, none a traceback, and one demo conversation remains."""
    import os
    import subprocess
    import sys

    import convotree
    from tests import sql_audit

    script = Path(sys.executable).parent / "convotree"
    env = {**os.environ, "COLUMNS": "80"}
    runs = [subprocess.Popen([str(script), "demo", "--url", empty_db_url], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    for code, out, err in results:
        assert code == 0 and "Traceback" not in err, err
        assert "Context for" in out and out.count("◀ current") == 1
    with sql_audit.unaudited(), convotree.Store(empty_db_url) as store:
        (only,) = store.list_conversations()
        assert only.title == "Lisbon trip for two"
        assert len([n for n in store.tree(only) if n.kind == "message"]) == 12
