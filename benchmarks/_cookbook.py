"""The SQL of docs/reporting.md's cookbook, read from the document itself.

Why here: the benchmark times these queries and the tests check their answers, so both
read them from the page users copy them from, and the documentation cannot drift from
what is measured and tested. A query is the ```sql block right after a marker comment
``<!-- cookbook: NAME -->`` (the same SQL on both backends) or
``<!-- cookbook: NAME postgresql -->`` / ``<!-- cookbook: NAME sqlite -->``.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["DOCUMENT", "BACKENDS", "queries"]

DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "reporting.md"
BACKENDS = ("sqlite", "postgresql")

_QUERY = re.compile(
    r"<!-- cookbook: (?P<name>[a-z_]+)(?: (?P<backend>sqlite|postgresql))? -->\n"
    r"```sql\n(?P<sql>.*?)```", re.DOTALL)


def queries(backend: str, document: Path = DOCUMENT) -> dict[str, str]:
    """Every cookbook query as ``backend`` runs it, in the document's order."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    found: dict[str, str] = {}
    for match in _QUERY.finditer(document.read_text(encoding="utf-8")):
        if match["backend"] in (None, backend):
            name = match["name"]
            if name in found:
                raise ValueError(f"{document.name}: query {name!r} appears twice for {backend}")
            found[name] = match["sql"].strip().rstrip(";")
    return found
