"""The schema revision this code needs, the name of convotree's alembic table, and the
lock that serializes every change of the schema.

Kept apart from ``_schema`` (which builds SQLAlchemy tables) so that the command line
can name them without importing SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["MIGRATION_LOCK_KEY", "OWNER_LOCK_TIMEOUT", "SCHEMA_REVISION", "VERSION_TABLE",
           "lock_schema"]

#: The alembic revision this code expects; a test pins it to the migrations' head.
SCHEMA_REVISION = "0006"
#: Alembic's version table for convotree, never the application's ``alembic_version``.
VERSION_TABLE = "convotree_alembic_version"
#: migrations/env.py's advisory lock key ("convotree migrate"): migrating, switching
#: row-level security and distributing on Citus never overlap.
MIGRATION_LOCK_KEY = 0x636F6E766F747265
#: How long an owner's change of the schema waits for a table lock before it gives up,
#: rather than queue behind a long transaction (a queued ACCESS EXCLUSIVE request blocks
#: every later query on the table).
OWNER_LOCK_TIMEOUT = "10s"


def lock_schema(conn: Connection, timeout: str = OWNER_LOCK_TIMEOUT) -> None:
    """In the caller's PostgreSQL transaction: wait at most ``timeout`` for each table
    lock, and take the migrations' lock until the transaction ends."""
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{timeout}'")
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
