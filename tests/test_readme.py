"""README.md is executable: the quickstart prints what it shows, the SQL runs on both backends."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

import convotree
from tests import sql_audit

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.DOTALL)


PYTHON = [(index, code, BLOCKS[index + 1][1] if index + 1 < len(BLOCKS)
           and BLOCKS[index + 1][0] == "text" else "")
          for index, (lang, code) in enumerate(BLOCKS) if lang == "python"]


def test_readme_has_python_blocks_with_their_output() -> None:
    assert len(PYTHON) >= 3 and all(expected for _, _, expected in PYTHON)


@pytest.mark.parametrize(("index", "code", "expected"), PYTHON,
                         ids=[f"block{i}" for i, _, _ in PYTHON])
def test_every_python_block_runs_as_written_and_prints_what_it_shows(
        tmp_path: Path, index: int, code: str, expected: str) -> None:
    """Each block on its own, in an empty folder, as a reader would paste it."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"README.md block {index}", "exec"), {})
    finally:
        os.chdir(cwd)
    assert out.getvalue() == expected


@pytest.mark.parametrize("query", [code for lang, code in BLOCKS if lang == "sql"])
def test_reporting_sql_runs(store: convotree.Store, query: str) -> None:
    conv = store.create_conversation(title="report")
    ask = store.append(conv, role="user", content="hi")
    answer = store.append(conv, parent=ask, role="assistant", content="hello", model="gpt-4o",
                          input_tokens=10, output_tokens=2, counted_input_tokens=9)
    statement = sa.text(query)
    params = {}
    for name in ("conversation_id", "node_id"):
        if f":{name}" in query:
            statement = statement.bindparams(sa.bindparam(name, type_=sa.Uuid()))
            params[name] = conv.id if name == "conversation_id" else answer.id
    with sql_audit.unaudited(), store.engine.connect() as conn:
        rows = conn.execute(statement, params).all()
    assert rows
    if ":node_id" in query:
        assert [tuple(r) for r in rows] == [(0, "user", "hi"), (1, "assistant", "hello")]
