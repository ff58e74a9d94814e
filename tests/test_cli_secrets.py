"""No command prints a password: not in its output, its hints, or its errors.

Every command runs with a PostgreSQL URL holding a canary password (the test server
trusts local connections, so the password is accepted and ignored), and against
servers that refuse it; the canary must never appear in what the command writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from convotree.cli._common import redact_urls
from tests.conftest import PostgresServer, _require
from tests.test_cli_support import exempt_reporting, run_cli

CANARY = "Canary-Pa55word"
FIXTURE = Path(__file__).parent / "fixtures" / "interchange" / "chatgpt_branching.json"


@pytest.fixture(autouse=True)
def _reporting(monkeypatch: pytest.MonkeyPatch) -> None:
    exempt_reporting(monkeypatch)


@pytest.fixture
def secret_url(postgres: PostgresServer) -> str:
    _require(postgres)
    plain = make_url(postgres.create_database())
    return plain.set(password=CANARY).render_as_string(hide_password=False)


def test_no_command_prints_the_password(secret_url: str, tmp_path: Path) -> None:
    db = ["--url", secret_url]
    outputs = [run_cli("ls", *db)]                      # before the schema: the hint
    outputs.append(run_cli("db", "check", *db))
    outputs.append(run_cli("db", "upgrade", *db))
    demo = run_cli("demo", *db)
    assert demo.code == 0, demo.err
    assert "export CONVOTREE_URL=" in demo.out and "***" in demo.out
    outputs.append(demo)
    for argv in (["ls"], ["show", "33d9ae4e", "--tree"], ["path", "33d9ae4e"],
                 ["context", "33d9ae4e", "-m", "gpt-4o-mini", "-b", "120"], ["report"],
                 ["db", "current"], ["db", "check"],
                 ["import", str(FIXTURE), "-f", "chatgpt"],
                 ["export", "33d9ae4e", "-f", "native", "-o", str(tmp_path / "x.json")],
                 ["show", "nope"]):
        outputs.append(run_cli(*argv, *db))
    for result in outputs:
        assert CANARY not in result.out + result.err, result


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://someone:{CANARY}@127.0.0.1:1/nothing",          # refused
    f"postgresql+psycopg://postgres:{CANARY}@127.0.0.1:5432/no_such_db_x",  # no database
    f"mysql://root:{CANARY}@127.0.0.1/x",                                   # no driver
    f"not a url {CANARY}",
])
def test_errors_never_print_the_password(url: str) -> None:
    for argv in (["ls"], ["db", "upgrade"], ["demo"]):
        result = run_cli(*argv, "--url", url)
        assert result.code != 0
        assert CANARY not in result.out + result.err, (argv, result.err)
        assert "Traceback" not in result.err


def test_redact_urls() -> None:
    assert redact_urls("postgresql+psycopg://u:p%40ss@h:5432/d and sqlite:///x.db") == (
        "postgresql+psycopg://u:***@h:5432/d and sqlite:///x.db")
    assert redact_urls("see postgresql://u@h/d") == "see postgresql://u@h/d"
    assert redact_urls("x postgresql://u:a@b@h/d y") == "x postgresql://u:***@h/d y"
