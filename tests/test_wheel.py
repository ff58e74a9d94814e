"""The migrations ship inside the wheel and run from an installed package.

Builds the real wheel, installs it into a fresh virtual environment (its dependencies
borrowed from this environment, so no network is needed), and upgrades an empty
SQLite file and an empty PostgreSQL database from there.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import sqlalchemy as sa
import convotree
from convotree._migrate import migrations_dir
url = sys.argv[1]
convotree.migrate(url)
engine = convotree.create_engine(url)
tables = sorted(sa.inspect(engine).get_table_names())
store = convotree.Store(engine)
conv = store.create_conversation(title="from the wheel")
node = store.append(conv, role="user", content="hello")
print(json.dumps({"package": convotree.__file__, "migrations": str(migrations_dir()),
                  "tables": tables, "path": [n.content for n in store.path(node)]}))
"""


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(work)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )
    wheel = next(work.glob("convotree-*.whl"))
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    target = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True).stdout.strip())
    # Dependencies come from this environment's site-packages (no network needed);
    # a plain path in a .pth file does not run that folder's own .pth files, so the
    # editable checkout of convotree stays invisible to the new environment.
    (target / "borrowed_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return python


@pytest.mark.slow
def test_installed_wheel_migrates_an_empty_database(wheel_python: Path,
                                                     empty_db_url: str) -> None:
    done = subprocess.run([str(wheel_python), "-c", PROBE, empty_db_url], cwd="/",
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "site-packages" in result["package"] and str(ROOT / "src") not in result["package"]
    assert result["migrations"].endswith("convotree/_migrations")
    assert {"convotree_conversations", "convotree_nodes", "convotree_alembic_version"} <= set(
        result["tables"])
    assert result["path"] == ["hello"]


@pytest.mark.slow
def test_installed_console_script_runs_the_demo(wheel_python: Path, tmp_path: Path) -> None:
    """The console script and the bundled demo data are in the wheel, not only the checkout."""
    script = wheel_python.parent / "convotree"
    done = subprocess.run([str(script), "demo", "--db", str(tmp_path / "demo.db")], cwd="/",
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Lisbon trip for two" in done.stdout and "summary reused" in done.stdout
    listed = subprocess.run([str(script), "ls", "--url", f"sqlite:///{tmp_path / 'demo.db'}",
                             "--json"], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(listed.stdout)[0]["title"] == "Lisbon trip for two"
