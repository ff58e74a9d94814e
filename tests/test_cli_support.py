"""Helpers for the command-line tests (no tests here).

``run_cli`` calls ``convotree.cli.main`` in-process with its output captured;
``exempt_reporting`` lets the cross-conversation reporting statements, and only them,
past the one-conversation SQL audit (see ``convotree/reporting.py`` for why).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

import convotree
from convotree import reporting
from convotree.cli import main
from tests import sql_audit


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.out.splitlines()]


def run_cli(*argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return Result(code, out.getvalue(), err.getvalue())


def exempt_reporting(monkeypatch: pytest.MonkeyPatch) -> None:
    original = reporting._execute

    def execute(conn: sa.Connection, statement: Any) -> Sequence[Any]:
        with sql_audit.cross_conversation():
            return original(conn, statement)

    monkeypatch.setattr(reporting, "_execute", execute)


LONG = ("Tell me everything about the tram lines of Lisbon, the history of tram 28, "
        "which stops are worth getting off at, and how crowded it gets in May. " * 3)


def build_lisbon(store: convotree.Store) -> dict[str, Any]:
    """A conversation with three branches and known usage, plus a one-message one."""
    conv = store.create_conversation(title="Lisbon [plan]")
    root = store.append(conv, role="system", content="Be brief.")
    ask = store.append(conv, parent=root, role="user", content="Plan a trip to Lisbon")
    long = store.append(conv, parent=ask, role="assistant", model="gpt-4o",
                        content="Three days: Alfama, Belém, Sintra.",
                        input_tokens=50, output_tokens=12)
    short = store.edit(long, "Two days: Alfama and Belém.", input_tokens=50,
                       output_tokens=9)
    tangent = store.append(conv, parent=short, role="user", content=LONG, set_current=False)
    more = store.append(conv, parent=long, role="user", content="Add a food tour")
    other = store.create_conversation(title="Other")
    single = store.append(other, role="user", content="Just one message")
    return {"conv": conv, "root": root, "ask": ask, "long": long, "short": short,
            "tangent": tangent, "more": more, "other": other, "single": single}
