"""Hooks for an application's own alembic: keep its autogenerate away from convotree.

convotree usually shares a database with the application that uses it. The
application's ``migrations/env.py`` says ``target_metadata = Base.metadata``, and
alembic's autogenerate then proposes to DROP every table it finds in the database but
not in that metadata: convotree's tables and its version table included (on SQLite the
generated upgrade runs and deletes every conversation). One keyword in the
application's ``context.configure(...)`` prevents it::

    from convotree.alembic import include_name

    context.configure(connection=connection, target_metadata=target_metadata,
                      include_name=include_name)

An application that already has an ``include_name`` or ``include_object`` hook wraps
it: ``include_name=convotree.alembic.excluding(my_include_name)``.

convotree's tables are named ``convotree_*`` (its version table is
``convotree_alembic_version``); they are migrated by convotree itself
(``convotree.migrate(url)`` or ``convotree db upgrade``), never by the application's
revisions. Importing this module costs nothing: it does not import alembic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._revision import VERSION_TABLE

__all__ = ["PREFIX", "excluding", "include_name", "include_object", "is_convotree_table"]

#: Every table (and view) convotree creates starts with this.
PREFIX = "convotree_"

IncludeName = Callable[[str | None, str, Mapping[str, str | None]], bool]
IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]


def is_convotree_table(name: str | None) -> bool:
    """Whether a table (or view) belongs to convotree."""
    return bool(name) and (name == VERSION_TABLE or str(name).startswith(PREFIX))


def include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]
                 ) -> bool:
    """alembic ``include_name`` hook: convotree's tables are not reflected, so nothing
    of theirs (columns, indexes, foreign keys) reaches the comparison."""
    if type_ == "table":
        return not is_convotree_table(name)
    return not is_convotree_table(parent_names.get("table_name"))


def include_object(obj: Any, name: str | None, type_: str, reflected: bool,
                   compare_to: Any) -> bool:
    """alembic ``include_object`` hook, for environments that filter objects rather
    than names (also catches a convotree table that ended up in the app's metadata)."""
    if type_ == "table":
        return not is_convotree_table(name)
    table = getattr(obj, "table", None)
    return not is_convotree_table(getattr(table, "name", None))


def excluding(hook: Callable[..., bool]) -> Callable[..., bool]:
    """Wrap an application's own ``include_name`` or ``include_object`` hook so that
    it also leaves convotree's tables out (the arity tells which hook it is)."""
    def combined(*args: Any) -> bool:
        ours = include_name(*args) if len(args) == 3 else include_object(*args)
        return ours and bool(hook(*args))

    return combined
