"""Schema migrations from code: the same alembic scripts as ``migrations/``.

In a wheel the scripts live at ``convotree/_migrations`` (the build copies the
top-level ``migrations/`` there); in a checkout or an editable install they are found
beside the source tree. The caller's engine reaches alembic through
``config.attributes`` so no URL is ever written into a config file.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from ._engine import WRITE_OPTION, check_engine, create_engine
from ._schema import SCHEMA_REVISION, VERSION_TABLE
from .errors import ConfigurationError, SchemaOutOfDate

__all__ = ["check", "current_revision", "downgrade", "migrate", "migrations_dir"]

UPGRADE_HINT = (
    "run `convotree.migrate(url)` in Python, `alembic upgrade head -x url=...` from a "
    "checkout, or open the store with Store(url, create=True)"
)


def migrations_dir() -> Path:
    """Folder of the alembic scripts, inside the installed package or the checkout."""
    packaged = Path(str(resources.files("convotree"))) / "_migrations"
    if (packaged / "env.py").is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    raise ConfigurationError("convotree's migration scripts are missing from this install")


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


@contextlib.contextmanager
def _engine_for(url_or_engine: str | Engine) -> Iterator[Engine]:
    if isinstance(url_or_engine, Engine):
        check_engine(url_or_engine)
        yield url_or_engine
        return
    engine = create_engine(url_or_engine)
    try:
        yield engine
    finally:
        engine.dispose()


# Alembic keeps its running context in module globals, so two migrations in one
# process must not overlap; across processes the database lock in env.py serializes.
_ALEMBIC_LOCK = threading.Lock()


def _run(url_or_engine: str | Engine, action: str, revision: str) -> None:
    with (
        _ALEMBIC_LOCK,
        _engine_for(url_or_engine) as engine,
        engine.connect().execution_options(**{WRITE_OPTION: True}) as connection,
    ):
        config = _config()
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)
        connection.commit()


def migrate(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Upgrade a database to ``revision`` (default: the newest schema).

    Safe to call at every start-up and from several processes at once: upgrades are
    serialized by a lock, and a database already at the revision is left untouched.
    """
    _run(url_or_engine, "upgrade", revision)


def downgrade(url_or_engine: str | Engine, revision: str = "base") -> None:
    """Downgrade a database (``base`` removes convotree's tables and their data)."""
    _run(url_or_engine, "downgrade", revision)


def current_revision(url_or_engine: str | Engine) -> str | None:
    """The schema revision a database is at, or None when convotree was never installed."""
    with _engine_for(url_or_engine) as engine, engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def check(url_or_engine: str | Engine) -> None:
    """Raise ``SchemaOutOfDate``, with the fixing command, unless the schema is current."""
    revision = current_revision(url_or_engine)
    if revision == SCHEMA_REVISION:
        return
    if revision is None:
        raise SchemaOutOfDate(f"the database has no convotree schema; {UPGRADE_HINT}")
    raise SchemaOutOfDate(
        f"the database's convotree schema is at revision {revision!r}, this version of "
        f"convotree needs {SCHEMA_REVISION!r}; {UPGRADE_HINT} (if the database is newer, "
        "upgrade convotree instead)",
        revision=revision,
        expected=SCHEMA_REVISION,
    )
