"""The SQL of docs/reporting.md's cookbook, read from the document itself.

Why here: the benchmark times these queries and the tests check their answers, so both
read them from the page users copy them from, and the documentation cannot drift from
what is measured and tested. A query is the ```sql block right after a marker comment
``<!-- cookbook: NAME -->`` (the same SQL on both backends) or
``<!-- cookbook: NAME postgresql -->`` / ``<!-- cookbook: NAME sqlite -->``. A marker
may name several backends (``<!-- cookbook: NAME sqlite citus -->``). ``citus`` is
PostgreSQL with distributed tables (docs/scale-out.md): it runs the PostgreSQL form of a
query unless a block is marked for it.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["DOCUMENT", "BACKENDS", "queries"]

DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "reporting.md"
BACKENDS = ("sqlite", "postgresql", "citus")

_QUERY = re.compile(
    r"<!-- cookbook: (?P<name>[a-z_]+)(?P<backends>(?: (?:sqlite|postgresql|citus))*) -->\n"
    r"```sql\n(?P<sql>.*?)```", re.DOTALL)


def queries(backend: str, document: Path = DOCUMENT) -> dict[str, str]:
    """Every cookbook query as ``backend`` runs it, in the document's order."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    own: dict[str, str] = {}
    postgresql: dict[str, str] = {}       # what citus falls back to
    order: dict[str, None] = {}
    for match in _QUERY.finditer(document.read_text(encoding="utf-8")):
        marked = set(match["backends"].split()) or set(BACKENDS)   # unmarked: every one
        name, sql = match["name"], match["sql"].strip().rstrip(";")
        if backend in marked:
            if name in own:
                raise ValueError(f"{document.name}: query {name!r} appears twice for {backend}")
            own[name] = sql
            order[name] = None
        elif backend == "citus" and "postgresql" in marked:
            postgresql[name] = sql
            order[name] = None
    return {name: own[name] if name in own else postgresql[name] for name in order}
