"""Every command the docs and the error messages print is run here, as printed.

Commands are collected from README.md, docs/*.md, alembic.ini's comments and the string
literals of src/convotree (error messages and hints): shell lines in ``sh`` blocks, ``$``
lines in ``text`` blocks, and inline code spans that start with ``convotree``,
``alembic``, ``python -m``, ``make``, ``pip install`` or ``.venv/bin/``.

- A synopsis (it has ``[`` or ``|``) is checked against the real parser: the command
  exists and every option it names is one of that command's options.
- Every other command runs in a shell, on a fresh copy of a database the demo filled
  (the demo's ids are derived from its bundled file, so the ids the docs print are the
  ids a reader gets), with placeholders (``ID``, ``FILE``, ``URL``...) replaced by real
  values. It must exit 0. A bare command name that needs arguments (``convotree
  import`` in "`convotree import` brings yours") is a reference to the command and is
  checked with ``--help``.
- A few commands cannot run inside the test suite; ``ELSEWHERE`` says which test or CI
  step runs each, and the Makefile recipes are checked to be the commands run here.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from convotree._migrate import UPGRADE_HINT
from convotree.cli import build_parser
from convotree.testing import FakeOpenAI
from tests import sql_audit

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIXTURE = ROOT / "tests" / "fixtures" / "interchange" / "chatgpt_branching.json"
STARTS = ("convotree ", "alembic ", "python -m ", "make ", "pip install", ".venv/bin/")

#: Commands that cannot run inside pytest, and what runs them instead.
ELSEWHERE = {
    "make test": ".ci/run runs it (it is the command that runs this test)",
    "make bench": "its recipe is `python -m benchmarks`, run here with --quick",
    "make demo": "its recipe is `convotree demo`, run here",
    "pip install": "tests/test_wheel.py installs the built wheel into a fresh venv",
    "python -m build --wheel": "tests/test_wheel.py builds the wheel with it",
    # Citus is in no package registry, so CI has no cluster (docs/scale-out.md).
    "convotree db distribute": "tests/test_citus.py runs it on a Citus coordinator in the "
                               "suite's Citus mode, and its refusals everywhere",
    "make test-citus": "needs Citus installed; run by hand (docs/scale-out.md), its recipe "
                       "checked below",
    "python -m benchmarks citus": "needs a Citus cluster (scripts/citus-cluster start)",
}


def _doc_sources() -> Iterator[tuple[str, str]]:
    """(where, text) of every place that prints commands for people."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        yield path.name, path.read_text()
    ini = (ROOT / "alembic.ini").read_text()
    # Its comment lines that are commands, as a shell block (a note after two spaces).
    commands = [re.split(r"\s{2,}", line.lstrip("# "))[0] for line in ini.splitlines()
                if line.lstrip("# ").startswith(STARTS)]
    yield "alembic.ini", "```sh\n" + "\n".join(commands) + "\n```\n"


def _messages() -> Iterator[tuple[str, str]]:
    """String literals of the package (f-strings with their holes left empty)."""
    for path in sorted((ROOT / "src" / "convotree").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield path.name, node.value
            elif isinstance(node, ast.JoinedStr):
                yield path.name, "".join(v.value for v in node.values
                                         if isinstance(v, ast.Constant) and isinstance(
                                             v.value, str))


def _commands() -> list[tuple[str, str]]:
    found: dict[str, str] = {}
    for where, text in _doc_sources():
        for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.DOTALL):
            for line in body.splitlines():
                line = line.strip()
                if lang == "text" and line.startswith("$ "):
                    line = line[2:]
                elif lang not in ("sh", "bash", "shell"):
                    continue
                command = line.split(" #")[0].strip()
                if command.startswith(STARTS):
                    found.setdefault(command, where)
        prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
        for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", prose):
            if span.startswith(STARTS):
                found.setdefault(span.replace("\\|", "|"), where)
    for where, text in _messages():
        for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", text):
            if span.startswith(("convotree ", "alembic ")):
                found.setdefault(span, where)
    return sorted((command, where) for command, where in found.items())


COMMANDS = _commands()


def _is_synopsis(command: str) -> bool:
    pipe = "|" in command and not re.search(r"\| (tail|head)\b", command)
    return command.startswith("convotree ") and ("[" in command or pipe)


def _elsewhere(command: str) -> str | None:
    return next((why for start, why in ELSEWHERE.items() if command.startswith(start)), None)


def test_the_collection_finds_the_commands_people_read() -> None:
    commands = {command for command, _ in COMMANDS}
    assert "alembic -x url=sqlite:///chat.db upgrade head" in commands   # README, ini
    assert "alembic upgrade head" in commands                           # alembic.ini
    assert "convotree db upgrade --url URL" in commands                 # SchemaOutOfDate
    assert "convotree db upgrade" in commands                           # CLI hints
    assert any(c.startswith("convotree context CONV [NODE]") for c in commands)  # synopsis
    assert len(commands) > 30


# --- synopses -------------------------------------------------------------------------------


def _subparsers(parser: object) -> dict[str, object]:
    actions = getattr(parser, "_actions", [])
    for action in actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            return choices
    return {}


@pytest.mark.parametrize("synopsis", [c for c, _ in COMMANDS if _is_synopsis(c)])
def test_synopsis_matches_the_parser(synopsis: str) -> None:
    words = synopsis.split()
    assert words[0] == "convotree"
    parser: object = build_parser()
    command = _subparsers(parser).get(words[1])
    assert command is not None, f"no command {words[1]!r}"
    options: set[str] = set()
    for alternative in " ".join(words[2:]).split("|"):
        for action in getattr(command, "_actions", []):
            options.update(action.option_strings)
        sub = _subparsers(command)
        first = alternative.split()[0] if alternative.split() else ""
        if sub and first in sub:   # `db upgrade [REV] | downgrade REV | ...`
            for action in getattr(sub[first], "_actions", []):
                options.update(action.option_strings)
        elif sub and first and not first.startswith(("[", "-")) and first.isalpha():
            assert first.upper() == first or first in sub, f"{first!r} is no action"
    named = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", synopsis))
    assert named <= options, f"{sorted(named - options)} are not options of {words[1]}"


# --- runnable commands -------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "XDG_DATA_HOME": str(home)}
    env.pop("CONVOTREE_URL", None)
    done = subprocess.run([str(BIN / "convotree"), "demo"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return home / "convotree" / "convotree.db"


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def _prepare(command: str, work: Path, demo: Path) -> tuple[str, Path]:
    """The command with its placeholders filled, and the folder to run it in."""
    url = f"sqlite:///{work / 'chat.db'}"
    fills = [
        (r"^\.venv/bin/", f"{BIN}/"),
        (r"^python ", f"{shlex.quote(sys.executable)} "),
        (r"sqlite:///chat\.db", url),
        (r"--url URL", f"--url {url}"),
        (r"url=URL", f"url={url}"),
        (r"(?<=\s)(ID|CONV)(?=\s|$)", "33d9ae4e"),
        (r"(?<=\s)NODE(?=\s|$)", "4661326e"),
        (r"(?<=\s)FILE(?=\s|$)", str(FIXTURE)),
        (r"conversations\.json", str(FIXTURE)),
        (r"backup\.json", str(work / "backup.json")),
        (r"(?<=\s)\[?PATH\]?(?=\s|$)", str(work / "demo.db")),
        (r"(?<=-m )MODEL(?=\s|$)", "gpt-4o-mini"),
        (r"(?<=--format )F(?=\s|$)", "native"),
        (r"(?<=\s)tests/fixtures/", f"{ROOT}/tests/fixtures/"),
        (r" \.\.\.$", " --help"),
        (r"^(\S*python\S* -m benchmarks)$", r"\1 --quick --backends sqlite"),
        # The full plans and peers runs take many minutes and publish their tables: here
        # each runs its smallest form, which writes no file.
        (r"^(\S*python\S* -m benchmarks plans)$", r"\1 --quick --calls 60 --backends sqlite"),
        (r"^(\S*python\S* -m benchmarks peers)$",
         r"\1 --quick --backends sqlite --depths 100 --repeat 1"),
        (r"^(\S*python\S* -m benchmarks reporting)$",
         r"\1 --quick --messages 3000 --conversations 30 --repeat 1"),
        (r"^(\S*python\S* -m benchmarks\.concurrency_bench)$",
         rf"\1 --appends 30 --out {work / 'concurrency.md'}"),
        (r"examples/", f"{ROOT}/examples/"),
    ]
    for pattern, value in fills:
        command = re.sub(pattern, value, command)
    # alembic's commands for convotree run from the checkout; `alembic init` makes an
    # application's folder, so it runs in an empty one.
    from_checkout = re.search(r"(^|/)alembic |-m benchmarks", command) and "init" not in command
    cwd = ROOT if from_checkout else work
    return command, cwd


def _published_results() -> dict[str, bytes]:
    """The benchmark tables in the checkout: a test run must never replace them."""
    return {p.name: p.read_bytes() for p in sorted((ROOT / "benchmarks" / "results").iterdir())}


@pytest.mark.parametrize(("command", "where"), [(c, w) for c, w in COMMANDS
                                                if not _is_synopsis(c) and not _elsewhere(c)])
def test_command_runs_as_printed(command: str, where: str, tmp_path: Path, demo_database: Path,
                                 fake_openai: FakeOpenAI) -> None:
    home = tmp_path / "home"
    (home / "convotree").mkdir(parents=True)
    shutil.copy(demo_database, home / "convotree" / "convotree.db")
    work = tmp_path / "work"
    work.mkdir()
    line, cwd = _prepare(command, work, demo_database)
    env = {**os.environ, "XDG_DATA_HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}",
           "OPENAI_BASE_URL": fake_openai.base_url, "OPENAI_API_KEY": "sk-test"}
    env.pop("CONVOTREE_URL", None)
    if "alembic" in line and "url=" not in line:
        env["CONVOTREE_URL"] = f"sqlite:///{work / 'chat.db'}"
    if line.startswith("alembic check") or ("downgrade" in line and "alembic" in line):
        subprocess.run([sys.executable, "-c", "import convotree, sys; convotree.migrate("
                        "sys.argv[1])", env.get("CONVOTREE_URL", f"sqlite:///{work}/chat.db")],
                       check=True, timeout=120)
    published = _published_results()
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {line}"], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=300)
    assert _published_results() == published, f"{line!r} rewrote benchmarks/results/"
    if done.returncode == 2 and "required" in done.stderr and len(command.split()) <= 3:
        # A reference to a command by name ("`convotree import` brings yours").
        done = subprocess.run(["bash", "-c", f"{line} --help"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{where}: {command!r} -> {line!r}\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr


def test_commands_that_run_elsewhere_are_the_ones_named() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo: .*\n\t\$\(VENV\)/bin/convotree demo$", makefile, flags=re.M)
    assert re.search(r"^bench: .*\n\t\$\(PY\) -m benchmarks$", makefile, flags=re.M)
    assert re.search(r"^test: test-newest test-oldest$", makefile, flags=re.M)
    assert re.search(r"^test-newest: lint\n\t\$\(VENV\)/bin/pytest$", makefile, flags=re.M)
    assert re.search(r"^\t\$\(OLDEST\)/bin/pytest \$\(OLDEST_TESTS\)$", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    wheel_test = (ROOT / "tests" / "test_wheel.py").read_text()
    assert '"-m", "build", "--wheel"' in wheel_test and '"pip", "install"' in wheel_test
    assert re.search(r"^test-citus: .*\n\tscripts/citus-cluster start\n\tenv \$\$\(scripts/"
                     r"citus-cluster env\) CONVOTREE_REQUIRE_POSTGRES=1 \$\(VENV\)/bin/pytest",
                     makefile, flags=re.M)
    elsewhere = [c for c, _ in COMMANDS if _elsewhere(c)]
    assert {c.split()[0] for c in elsewhere} <= {"make", "pip", "python", "convotree"}
    assert {c for c in elsewhere if c.startswith("convotree ") and not _is_synopsis(c)} <= {
        "convotree db distribute", "convotree db distribute --url URL"}


# --- the hints in error messages ----------------------------------------------------------


def test_every_way_the_schema_hint_offers_works(tmp_path: Path) -> None:
    """SchemaOutOfDate names four fixes; each makes a missing schema current."""
    import convotree

    spans = re.findall(r"`([^`]+)`", UPGRADE_HINT)
    assert len(spans) == 4
    for index, span in enumerate(spans):
        url = f"sqlite:///{tmp_path / f'hint{index}.db'}"
        with sql_audit.unaudited():
            with pytest.raises(convotree.errors.SchemaOutOfDate):
                convotree.Store(url)
            if span.startswith(("convotree ", "alembic ")):
                line = span.replace("URL", url)
                args = shlex.split(line)
                args = [str(BIN / args[0]), *args[1:]]
                done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                                      timeout=120)
                assert done.returncode == 0, (span, done.stderr)
            else:
                namespace = {"convotree": convotree, "Store": convotree.Store, "url": url}
                result = eval(span, namespace)
                if isinstance(result, convotree.Store):
                    result.close()
            assert convotree.current_revision(url) == convotree._migrate.SCHEMA_REVISION, span
            convotree.Store(url).close()
