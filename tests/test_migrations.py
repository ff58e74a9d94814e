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
from convotree import _views as _views_module
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


# --- every step on a database with data ---------------------------------------------------


def _fill(url: str) -> dict[str, object]:
    """Conversations with branches, a summary, tool calls and API facts (at head)."""
    from tests.helpers import call

    with convotree.Store(url) as store:
        conv = store.create_conversation(title="data", metadata={"k": [1, 2]})
        system = store.append(conv, role="system", content="Be brief.")
        ask = store.append(conv, parent=system, role="user", content="Weather in Lisbon?")
        calls = store.append(conv, parent=ask, role="assistant",
                             tool_calls=[call("c1", "weather", '{"city": "Lisbon"}')])
        result = store.append(conv, parent=calls, role="tool", tool_call_id="c1",
                              content="sunny")
        answer = store.append(conv, parent=result, role="assistant", content="Sunny.",
                              model="gpt-4o", input_tokens=40, output_tokens=3,
                              response_id="resp_1", finish_reason="stop", cached_tokens=0,
                              reasoning_tokens=0, counted_input_tokens=39)
        store.edit(answer, "It is sunny in Lisbon.")              # a branch
        store.edit(ask, "Weather in Porto?")                      # another branch
        store.add_summary(result, "Summary of the earlier conversation:\n- weather")
        compacted = store.append(conv, parent=answer, role="assistant", content="Later.",
                                 api_items=[{"type": "compaction", "id": "cmp_1",
                                             "encrypted_content": "x"},
                                            {"type": "message", "role": "assistant",
                                             "content": [{"type": "output_text",
                                                          "text": "Later."}]}])
        assert compacted.compacted
        other = store.create_conversation(title="second")
        store.append(other, role="user", content="hi")
        return {"conversation": conv.id, "leaf": answer.id, "compacted": compacted.id}


def _snapshot(url: str) -> list[tuple[object, ...]]:
    """The 0001 columns of every row: what every step must keep."""
    engine = convotree.create_engine(url)
    try:
        with engine.connect() as conn:
            conversations = conn.execute(sa.text(
                "SELECT id, title, current_node_id FROM convotree_conversations ORDER BY id"))
            nodes = conn.execute(sa.text(
                "SELECT conversation_id, id, parent_id, depth, kind, role, content, "
                "token_count, pinned_ancestor_id, summary_base_id "
                "FROM convotree_nodes ORDER BY conversation_id, id"))
            return [tuple(r) for r in conversations] + [tuple(r) for r in nodes]
    finally:
        engine.dispose()


def _tampered(url: str, statement: str) -> tuple[list[tuple[object, ...]], set[str]]:
    """Migrate and fill a database, change it by hand with ``statement`` (what makes the
    next migration fail), and return the snapshot and columns to compare with after."""
    convotree.migrate(url)
    _fill(url)
    before = _snapshot(url), _columns(url)
    engine = convotree.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()
    return before


def _indexes(url: str) -> set[str]:
    engine = convotree.create_engine(url)
    try:
        return {str(i["name"]) for i in sa.inspect(engine).get_indexes("convotree_nodes")}
    finally:
        engine.dispose()


def _columns(url: str) -> set[str]:
    engine = convotree.create_engine(url)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns("convotree_nodes")}
    finally:
        engine.dispose()


def test_every_step_up_and_down_keeps_the_data(empty_db_url: str) -> None:
    with sql_audit.unaudited():
        convotree.migrate(empty_db_url)
        made = _fill(empty_db_url)
        before = _snapshot(empty_db_url)
        assert len(before) == 2 + 10   # two conversations, ten nodes

        assert "ix_convotree_nodes_parent_id_conversation_id" in _indexes(empty_db_url)
        convotree.downgrade(empty_db_url, "0003")          # 0004 -> 0003 with data
        assert _indexes(empty_db_url) >= {"ix_convotree_nodes_conversation_id_parent_id"}
        assert "ix_convotree_nodes_parent_id_conversation_id" not in _indexes(empty_db_url)
        assert _snapshot(empty_db_url) == before
        convotree.downgrade(empty_db_url, "0002")          # 0003 -> 0002 with data
        assert "compacted" not in _columns(empty_db_url)
        assert _snapshot(empty_db_url) == before
        convotree.migrate(empty_db_url)                    # 0002 -> 0003 (filled in) -> 0004
        with convotree.Store(empty_db_url) as store:
            node = store.node(made["conversation"], made["compacted"])  # type: ignore[arg-type]
            assert node.compacted
            assert not store.node(made["conversation"], made["leaf"]).compacted  # type: ignore[arg-type]

        convotree.downgrade(empty_db_url, "0001")          # 0004 -> 0003 -> 0002 -> 0001
        assert convotree.current_revision(empty_db_url) == "0001"
        assert _snapshot(empty_db_url) == before
        assert "response_id" not in _columns(empty_db_url)

        convotree.migrate(empty_db_url)                    # 0001 -> ... -> 0004
        assert _snapshot(empty_db_url) == before
        with convotree.Store(empty_db_url) as store:       # and the store works on it
            leaf = store.node(made["conversation"], made["leaf"])  # type: ignore[arg-type]
            assert leaf.response_id is None                # the dropped facts stay dropped
            more = store.append(leaf.conversation_id, parent=leaf, role="user",
                                content="Thanks")
            assert [n.role for n in store.path(more)][-3:] == ["tool", "assistant", "user"]
            assert store.context(more, model="gpt-4o").report.summary_id is not None

        convotree.downgrade(empty_db_url, "base")          # 0001 -> base with data
        assert not ({"convotree_conversations", "convotree_nodes"} & _tables(empty_db_url))
        assert convotree.current_revision(empty_db_url) is None
        convotree.migrate(empty_db_url)                    # and back up, empty
        assert convotree.current_revision(empty_db_url) == SCHEMA_REVISION


def _views(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every reporting view's rows (ordered), or an empty dict when there are none."""
    engine = convotree.create_engine(url)
    try:
        present = set(sa.inspect(engine).get_view_names())
        with engine.connect() as conn:
            return {view.name: sorted(
                (tuple(r) for r in conn.execute(sa.select(view))), key=repr)
                for view in _views_module.VIEWS if view.name in present}
    finally:
        engine.dispose()


def _day_index(url: str) -> bool:
    """Whether revision 0006's index on the UTC day is there (SQLAlchemy does not reflect
    an expression index on SQLite, so ask the catalog)."""
    engine = convotree.create_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                found = conn.execute(sa.text(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' "
                    "AND name = 'ix_convotree_nodes_utc_day'")).scalar()
                return found is not None and "date(created_at)" in found
            found = conn.execute(sa.text(
                "SELECT pg_get_indexdef('ix_convotree_nodes_utc_day'::regclass)")).scalar() \
                if conn.execute(sa.text("SELECT to_regclass('ix_convotree_nodes_utc_day')")
                                ).scalar() else None
            return found is not None and "AT TIME ZONE 'UTC'" in found
    finally:
        engine.dispose()


def test_the_reporting_views_come_and_go_with_0006_and_the_data_stays(
        empty_db_url: str) -> None:
    with sql_audit.unaudited():
        convotree.migrate(empty_db_url)
        made = _fill(empty_db_url)
        before, seen = _snapshot(empty_db_url), _views(empty_db_url)
        assert set(seen) == {view.name for view in _views_module.VIEWS}
        stats = {row[0]: row for row in seen["convotree_conversation_stats"]}
        conversation = stats[made["conversation"]]
        # 8 messages and a summary; 3 leaves (the two edits and the compacted answer).
        assert conversation[6:9] == (8, 1, 3)
        assert _day_index(empty_db_url)

        convotree.downgrade(empty_db_url, "0005")
        assert _views(empty_db_url) == {}
        assert not _day_index(empty_db_url)
        assert _snapshot(empty_db_url) == before

        convotree.migrate(empty_db_url)
        assert _views(empty_db_url) == seen                # the same answers, nothing stored
        assert _day_index(empty_db_url)


def test_a_failed_downgrade_leaves_the_database_where_it_was(empty_db_url: str) -> None:
    """A view on a 0002 column makes the 0002 downgrade fail half way (after 0003's
    step and other columns went): the whole run rolls back, on both backends."""
    with sql_audit.unaudited():
        before, columns = _tampered(
            empty_db_url, "CREATE VIEW probe AS SELECT finish_reason FROM convotree_nodes")
        with pytest.raises(errors.MigrationError,
                           match=rf"rolled back.*still at {SCHEMA_REVISION}") as info:
            convotree.downgrade(empty_db_url, "base")
        assert info.value.context["revision"] == SCHEMA_REVISION
        assert convotree.current_revision(empty_db_url) == SCHEMA_REVISION
        assert _columns(empty_db_url) == columns
        assert _snapshot(empty_db_url) == before


def test_a_downgrade_failing_in_its_second_step_undoes_the_first(empty_db_url: str) -> None:
    """``downgrade base`` runs the steps down to 0001; with an index of 0001 already
    gone, the 0001 step fails after the later ones succeeded. One transaction: their
    columns and indexes come back. (Alembic alone commits each SQLite step, which left
    such databases at 0001.)"""
    with sql_audit.unaudited():
        before, columns = _tampered(
            empty_db_url, "DROP INDEX ix_convotree_conversations_tenant_id_updated_at")
        with pytest.raises(errors.MigrationError, match=f"still at {SCHEMA_REVISION}"):
            convotree.downgrade(empty_db_url, "base")
        assert convotree.current_revision(empty_db_url) == SCHEMA_REVISION
        assert _columns(empty_db_url) == columns and {"api_items", "compacted"} <= columns
        assert "ix_convotree_nodes_parent_id_conversation_id" in _indexes(empty_db_url)
        assert _snapshot(empty_db_url) == before


def test_a_failed_upgrade_leaves_the_database_where_it_was(empty_db_url: str) -> None:
    with sql_audit.unaudited():
        convotree.migrate(empty_db_url, "0001")
        engine = convotree.create_engine(empty_db_url)
        with engine.begin() as conn:   # a column 0002 will try to add, added by hand
            conn.execute(sa.text("ALTER TABLE convotree_nodes ADD COLUMN api_items TEXT"))
        engine.dispose()
        with pytest.raises(errors.MigrationError, match="still at 0001"):
            convotree.migrate(empty_db_url)
        assert convotree.current_revision(empty_db_url) == "0001"
        assert not {"response_id", "finish_reason"} & _columns(empty_db_url)


def test_unknown_revision_is_a_typed_error(empty_db_url: str) -> None:
    with sql_audit.unaudited():
        with pytest.raises(errors.UnknownRevision, match="0001, 0002, 0003, 0004"):
            convotree.migrate(empty_db_url, "9999")
        with pytest.raises(errors.UnknownRevision):
            convotree.downgrade(empty_db_url, "")
        assert convotree.current_revision(empty_db_url) is None


def test_opening_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    url = f"sqlite:///{path}"
    with pytest.raises(errors.SchemaOutOfDate, match="no SQLite database at"):
        convotree.Store(url)
    assert convotree.current_revision(url) is None
    with pytest.raises(errors.SchemaOutOfDate):
        convotree.check_schema(url)
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(errors.ConfigurationError, match=r"folder .* does not exist"):
        convotree.Store(f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.db'}", create=True)
    assert list(tmp_path.iterdir()) == []
    with convotree.Store(url, create=True) as store:   # create=True makes it
        assert store.list_conversations() == []
    assert path.exists()
