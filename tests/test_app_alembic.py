"""convotree beside an application's own alembic, in the same database.

A real application environment: ``alembic init`` (alembic's own template), an app model
with ``target_metadata = Base.metadata``, driven by the ``alembic`` command line. With
``include_name=convotree.alembic.include_name`` its autogenerate sees nothing of
convotree's, ``alembic check`` passes, and the app's own changes still migrate. Without
the hook the same autogenerate proposes to drop convotree's tables (the control that
shows this test can fail).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

import convotree
from convotree.alembic import excluding, include_name, include_object, is_convotree_table
from tests import sql_audit

pytestmark = pytest.mark.slow

MODELS = '''
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(200))
'''


README = Path(__file__).resolve().parents[1] / "README.md"


def apply_readme_diff(text: str) -> str:
    """Apply README's ``diff`` block (hunks separated by `` ...``) to an env.py."""
    (block,) = re.findall(r"```diff\n(.*?)```", README.read_text(), flags=re.DOTALL)
    for hunk in block.split(" ...\n"):
        lines = hunk.splitlines()
        old = "".join(line[1:] + "\n" for line in lines if line[:1] in (" ", "-"))
        new = "".join(line[1:] + "\n" for line in lines if line[:1] in (" ", "+"))
        assert text.count(old) == 1, f"README's diff does not apply here:\n{old}"
        text = text.replace(old, new)
    return text


def _alembic(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alembic", *args], cwd=app,
                          capture_output=True, text=True, timeout=120)


def _application(tmp_path: Path, url: str, *, hook: str | None) -> Path:
    """An application folder made by ``alembic init``, edited as its README says."""
    app = tmp_path / "app"
    app.mkdir()
    done = _alembic(app, "init", "migrations")
    assert done.returncode == 0, done.stderr
    (app / "app_models.py").write_text(MODELS)
    ini = app / "alembic.ini"
    ini.write_text(ini.read_text().replace("driver://user:pass@localhost/dbname", url))
    env = app / "migrations" / "env.py"
    text = env.read_text()
    text = text.replace("target_metadata = None",
                        "import sys\nsys.path.insert(0, str(__import__('pathlib').Path("
                        "__file__).resolve().parents[1]))\nfrom app_models import Base\n"
                        "target_metadata = Base.metadata")
    if hook == "include_name":
        text = apply_readme_diff(text)           # exactly what README tells users to do
    elif hook is not None:
        text = text.replace("from alembic import context",
                            f"from alembic import context\nfrom convotree.alembic import {hook}")
        marker = "connection=connection, target_metadata=target_metadata"
        assert marker in text
        text = text.replace(marker, f"{marker}, {hook}={hook}")
    env.write_text(text)
    return app


def _generated_ops(app: Path, message: str) -> str:
    done = _alembic(app, "revision", "--autogenerate", "-m", message)
    assert done.returncode == 0, done.stderr
    script = next((app / "migrations" / "versions").glob(f"*{message}*.py"))
    return script.read_text()


def _filled_store(url: str) -> tuple[convotree.Store, int]:
    store = convotree.Store(url, create=True)
    conv = store.create_conversation(title="kept")
    ask = store.append(conv, role="user", content="hi")
    store.append(conv, parent=ask, role="assistant", content="hello")
    return store, len(store.tree(conv))


@pytest.mark.parametrize("hook", ["include_name", "include_object"])
def test_application_autogenerate_leaves_convotree_alone(empty_db_url: str, tmp_path: Path,
                                                        hook: str) -> None:
    with sql_audit.unaudited():
        store, nodes = _filled_store(empty_db_url)
        app = _application(tmp_path, empty_db_url, hook=hook)

        first = _generated_ops(app, "accounts")
        assert "op.create_table('accounts'" in first
        assert "convotree" not in first
        assert _alembic(app, "upgrade", "head").returncode == 0
        checked = _alembic(app, "check")
        assert checked.returncode == 0, checked.stdout + checked.stderr

        # An application change still migrates, and still nothing of convotree's.
        models = app / "app_models.py"
        models.write_text(models.read_text() + "    name: Mapped[str | None] = "
                          "mapped_column(sa.String(80))\n")
        second = _generated_ops(app, "account_name")
        assert "op.add_column('accounts'" in second and "convotree" not in second
        upgraded = _alembic(app, "upgrade", "head")
        assert upgraded.returncode == 0, upgraded.stderr
        assert _alembic(app, "check").returncode == 0

        engine = sa.create_engine(empty_db_url)
        try:
            columns = {c["name"] for c in sa.inspect(engine).get_columns("accounts")}
            assert columns == {"id", "email", "name"}
        finally:
            engine.dispose()
        conv = store.list_conversations()[0]
        assert len(store.tree(conv)) == nodes       # convotree's data is all there
        convotree.check_schema(store.engine)        # and its schema is still current
        store.close()


def test_without_the_hook_autogenerate_would_drop_convotree(empty_db_url: str,
                                                            tmp_path: Path) -> None:
    """The control: the problem the hook solves is real in this very setup."""
    with sql_audit.unaudited():
        store, _ = _filled_store(empty_db_url)
        store.close()
        app = _application(tmp_path, empty_db_url, hook=None)
        generated = _generated_ops(app, "accounts")
    assert "op.drop_table('convotree_nodes')" in generated
    assert "op.drop_table('convotree_alembic_version')" in generated


def test_hooks_are_pure_functions() -> None:
    assert is_convotree_table("convotree_nodes") and is_convotree_table(
        "convotree_alembic_version")
    assert not is_convotree_table("accounts") and not is_convotree_table(None)
    assert not include_name("convotree_conversations", "table", {})
    assert not include_name("ix_convotree_nodes_x", "index",
                            {"table_name": "convotree_nodes"})
    assert include_name("accounts", "table", {}) and include_name("public", "schema", {})
    table = sa.Table("convotree_nodes", sa.MetaData(), sa.Column("id", sa.Integer))
    assert not include_object(table, "convotree_nodes", "table", True, None)
    assert not include_object(table.c.id, "id", "column", True, None)

    def apps_own(name: object, type_: str, parents: object) -> bool:
        return name != "legacy"

    combined = excluding(apps_own)
    assert not combined("legacy", "table", {}) and not combined("convotree_nodes", "table", {})
    assert combined("accounts", "table", {})
