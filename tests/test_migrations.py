"""Migrations: up, down, up again, no drift from the models, and a guarded store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import convotree
from convotree import errors
from convotree._migrate import migrations_dir
from convotree._schema import SCHEMA_REVISION, VERSION_TABLE, metadata
from tests import sql_audit

ROOT = Path(__file__).resolve().parents[1]
TABLES = {"convotree_conversations", "convotree_nodes", VERSION_TABLE}


def _tables(url: str) -> set[str]:
    engine = convotree.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_one_linear_chain_whose_head_the_code_expects() -> None:
    script = ScriptDirectory(str(migrations_dir()))
    assert script.get_heads() == [SCHEMA_REVISION]
    for revision in script.walk_revisions():
        assert revision.doc and "Why:" in (revision.module.__doc__ or "")


def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    with sql_audit.unaudited():
        assert convotree.current_revision(empty_db_url) is None
        convotree.migrate(empty_db_url)
        assert _tables(empty_db_url) >= TABLES
        assert "alembic_version" not in _tables(empty_db_url)
        assert convotree.current_revision(empty_db_url) == SCHEMA_REVISION
        convotree.migrate(empty_db_url)            # already at head: nothing to do
        convotree.downgrade(empty_db_url, "base")
        assert not ({"convotree_conversations", "convotree_nodes"} & _tables(empty_db_url))
        convotree.migrate(empty_db_url)
        assert _tables(empty_db_url) >= TABLES


def test_models_match_migrations(empty_db_url: str) -> None:
    """``alembic check``: autogenerate finds nothing to change after upgrading."""
    with sql_audit.unaudited():
        convotree.migrate(empty_db_url)
        engine = convotree.create_engine(empty_db_url)
        try:
            with engine.connect() as conn:
                config = Config()
                config.set_main_option("script_location", str(migrations_dir()))
                config.attributes["connection"] = conn
                command.check(config)
        finally:
            engine.dispose()


def test_check_catches_drift(empty_db_url: str) -> None:
    """The comparison can fail: a column the migrations lack is reported."""
    drifted = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["convotree_nodes"].append_column(sa.Column("drift_probe", sa.Integer()))
    with sql_audit.unaudited():
        convotree.migrate(empty_db_url)
        engine = convotree.create_engine(empty_db_url)
        try:
            with engine.connect() as conn:
                diff = compare_metadata(
                    MigrationContext.configure(conn, opts={"compare_type": True}), drifted)
        finally:
            engine.dispose()
    assert [d[0] for d in diff if "drift_probe" in str(d)] == ["add_column"]


def test_store_refuses_missing_schema_and_create_true_upgrades(empty_db_url: str) -> None:
    with sql_audit.unaudited():
        with pytest.raises(errors.SchemaOutOfDate, match=r"convotree\.migrate\(url\)"):
            convotree.Store(empty_db_url)
        assert "convotree_nodes" not in _tables(empty_db_url)   # nothing created silently
        with convotree.Store(empty_db_url, create=True) as store:
            assert store.list_conversations() == []


def test_store_refuses_other_revision(empty_db_url: str) -> None:
    with sql_audit.unaudited():
        convotree.migrate(empty_db_url)
        engine = convotree.create_engine(empty_db_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = 'ffff'"))
        engine.dispose()
        with pytest.raises(errors.SchemaOutOfDate, match=r"'ffff'"):
            convotree.Store(empty_db_url)


def test_application_alembic_version_untouched(empty_db_url: str) -> None:
    with sql_audit.unaudited():
        engine = convotree.create_engine(empty_db_url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            conn.execute(sa.text("INSERT INTO alembic_version VALUES ('app_rev_42')"))
        convotree.migrate(engine)
        convotree.downgrade(engine, "base")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).all() == [
                ("app_rev_42",)]
        engine.dispose()


@pytest.mark.slow
def test_concurrent_migrations_serialize(empty_db_url: str) -> None:
    """Several processes upgrading one empty database at once all succeed."""
    code = "import sys, convotree; convotree.migrate(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, empty_db_url], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors_seen = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors_seen
    with sql_audit.unaudited():
        assert convotree.current_revision(empty_db_url) == SCHEMA_REVISION
        assert _tables(empty_db_url) >= TABLES


@pytest.mark.slow
@pytest.mark.parametrize("via", ["x-argument", "environment"])
def test_alembic_command_line_from_checkout(empty_db_url: str, via: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONVOTREE_URL"}
    args = [sys.executable, "-m", "alembic"]
    if via == "x-argument":
        args += ["-x", f"url={empty_db_url}"]
    else:
        env["CONVOTREE_URL"] = empty_db_url
    for step in (["upgrade", "head"], ["current"], ["downgrade", "base"], ["upgrade", "head"]):
        done = subprocess.run(args + step, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
    with sql_audit.unaudited():
        assert convotree.current_revision(empty_db_url) == SCHEMA_REVISION


def test_alembic_command_line_without_url_says_how(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONVOTREE_URL"}
    done = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "CONVOTREE_URL" in done.stderr + done.stdout
