"""The schema revision this code needs, and the name of convotree's alembic table.

Kept apart from ``_schema`` (which builds SQLAlchemy tables) so that the command line
can name them without importing SQLAlchemy.
"""

from __future__ import annotations

__all__ = ["SCHEMA_REVISION", "VERSION_TABLE"]

#: The alembic revision this code expects; a test pins it to the migrations' head.
SCHEMA_REVISION = "0006"
#: Alembic's version table for convotree, never the application's ``alembic_version``.
VERSION_TABLE = "convotree_alembic_version"
