"""Alembic environment for convotree, used from a checkout and from the wheel.

The connection comes, in this order, from ``config.attributes["connection"]`` (how
``convotree.migrate()`` runs it: the caller's engine, never a URL in an ini file),
from ``-x url=...`` on the alembic command line, or from ``CONVOTREE_URL``.

Alembic's bookkeeping goes to ``convotree_alembic_version`` so convotree can live in
an application database that has its own ``alembic_version``. Concurrent upgrades are
serialized: a PostgreSQL advisory lock, or SQLite's write lock (BEGIN IMMEDIATE),
is taken before alembic reads the current version.

One run is one transaction, on both backends: every step of ``upgrade head`` or
``downgrade base`` commits together or not at all, so a step that fails leaves the
database at the revision the run started from. Alembic assumes SQLite cannot roll back
DDL and would commit after each step; it can (convotree's engine hands transaction
control to SQLAlchemy and sends its own BEGIN), so ``transactional_ddl`` is forced on.
Rule for future migrations: nothing that cannot run inside a transaction (no
``CREATE INDEX CONCURRENTLY``, no SQLite ``batch_alter_table`` "move and copy", which
needs foreign keys off and cannot switch them inside a transaction).
"""

from __future__ import annotations

import os
import warnings

from alembic import context
from sqlalchemy import Connection, text

from convotree._engine import MIGRATION_OPTION, WRITE_OPTION, create_engine
from convotree._revision import MIGRATION_LOCK_KEY  # enable-rls and distribute take it too
from convotree._schema import VERSION_TABLE, metadata

# SQLite cannot reflect an index on an expression, so comparing the schema there skips
# convotree's one (the UTC day of created_at, made by revision 0006) with a warning each
# time; that index is expected, and the warning says nothing to act on.
warnings.filterwarnings("ignore", message=r".*expression-based index '?ix_convotree_nodes_utc_day")

config = context.config


def include_object(obj: object, name: str | None, type_: str, reflected: bool,
                   compare_to: object) -> bool:
    """Compare only convotree's own tables: the database may hold the app's too."""
    if type_ == "table":
        return bool(name and name.startswith("convotree_")) and name != VERSION_TABLE
    return True


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
        compare_type=True,
        compare_server_default=True,
        # convotree's per-step log (convotree.migrate passes it; absent from the
        # alembic command line, where alembic ignores None).
        on_version_apply=config.attributes.get("on_version_apply"),
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK_KEY})
            # Under row-level security (convotree db enable-rls) a data migration run
            # by a role the policies apply to would silently touch no rows: make that
            # an error instead (superusers and table owners without FORCE bypass it).
            connection.execute(text("SET LOCAL row_security = off"))
        context.run_migrations()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("CONVOTREE_URL")
    if not url:
        raise SystemExit("no database URL: pass -x url=... or set CONVOTREE_URL")
    engine = create_engine(url)
    try:
        with engine.connect().execution_options(
                **{WRITE_OPTION: True, MIGRATION_OPTION: True}) as conn:
            run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("convotree migrations run online only (they take a lock first)")
main()
