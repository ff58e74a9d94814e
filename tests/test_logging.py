"""Logging: convotree's logger names, what it logs, and that no secret reaches a log.

The guarantee (docs/logging.md): message content, metadata values and API keys never
appear in a record at INFO or above, and a database password appears nowhere, at no
level, in no log and in nothing the command line prints. These tests plant the
canaries of ``tests/log_canary.py`` in every place a secret can enter (content, parts,
titles, metadata, an API key, a PostgreSQL password, plain and percent-encoded, in the
user info and in ``?password=``), run the store, contexts with summaries, a chat with
retries, migrations that succeed and fail, and the command line in-process and as a
subprocess, capture every record of every logger at every level, and search them. The
slow-statement log runs at a threshold that logs every statement, so that a statement's
parameters (which hold the content) would be caught if they were ever logged.
``log_canary`` itself is proven to fail a run that logs a canary (nested pytest runs).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import convotree
from convotree import _log, _migrate
from convotree.errors import ConfigurationError, ConvotreeError, MigrationError
from convotree.testing import FakeOpenAI
from tests import sql_audit
from tests.conftest import PostgresServer, _require, new_database_url
from tests.log_canary import (
    CANARY_CONTENT,
    CANARY_METADATA,
    CANARY_PASSWORD,
    CANARY_SECRET,
    Leak,
    find_leaks,
    leaks_in,
)
from tests.test_cli_support import exempt_reporting, run_cli

pytest_plugins = ["pytester"]

#: Store tests run on Store and AsyncStore (tests/conftest.py, the twins).
TWINS = True
REPO = Path(__file__).resolve().parents[1]
#: Logs every statement: whatever a statement carries would be in a record.
EVERY_STATEMENT_MS = 1e-6


# --- capture ----------------------------------------------------------------------------

class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record of every logger at every level during the test (the root lowered
    to level 1; loggers with a level of their own keep it, as in an application)."""
    root = logging.getLogger()
    handler, level = _Everything(), root.level
    root.addHandler(handler)
    root.setLevel(1)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _of(records: list[logging.LogRecord], name: str) -> list[logging.LogRecord]:
    return [r for r in records if r.name == name or r.name.startswith(name + ".")]


def _no_secret(records: list[logging.LogRecord], *texts: str) -> None:
    """No leak in the records (log_canary's rule), and no password canary in ``texts``
    (what a command printed)."""
    leaks = leaks_in(records)
    assert not leaks, "\n".join(map(str, leaks[:5]))
    for text in texts:
        assert CANARY_PASSWORD not in text, text


def _secret_pg_url(postgres: PostgresServer, password: str = CANARY_PASSWORD) -> str:
    """A new PostgreSQL database, its URL carrying ``password`` (trust auth ignores it)."""
    _require(postgres)
    return make_url(postgres.create_database()).set(password=password).render_as_string(
        hide_password=False)


# --- the logger -------------------------------------------------------------------------

def test_logger_names_and_the_null_handler() -> None:
    assert _log.logger.name == "convotree"
    assert any(isinstance(h, logging.NullHandler) for h in _log.logger.handlers)
    assert _log.get_logger("migrations").name == "convotree.migrations"
    assert _log.get_logger("sql").parent is _log.logger


def test_a_library_without_logging_configured_prints_nothing(tmp_path: Path) -> None:
    """The NullHandler keeps Python's last-resort handler from printing convotree's
    warnings on stderr of an application that configured no logging."""
    code = textwrap.dedent(f"""
        import convotree, sqlalchemy as sa
        from convotree import _log
        engine = convotree.create_engine("sqlite:///{tmp_path / 'quiet.db'}")
        _log.install_slow_statement_log(engine, threshold_ms={EVERY_STATEMENT_MS})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        try:
            convotree.migrate(engine, "nope")
        except convotree.errors.UnknownRevision:
            print("raised")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "raised"
    assert done.stderr == ""


def _modules_that_log() -> list[str]:
    src = REPO / "src" / "convotree"
    found = []
    for path in sorted(src.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if path.name != "_log.py" and ("getLogger(" in text or "get_logger(" in text):
            found.append(".".join(("convotree", *path.relative_to(src).with_suffix("").parts)))
    return found


@pytest.mark.slow
def test_every_module_that_logs_attaches_the_null_handler_first() -> None:
    """Imported alone, a module that logs leaves ``convotree`` with its NullHandler:
    its first record can never reach Python's last-resort handler."""
    modules = _modules_that_log()
    assert "convotree._migrate" in modules
    code = ("import importlib, logging, sys; importlib.import_module(sys.argv[1]); "
            "print(any(isinstance(h, logging.NullHandler) "
            "for h in logging.getLogger('convotree').handlers))")
    for module in modules:
        done = subprocess.run([sys.executable, "-c", code, module], capture_output=True,
                              text=True, timeout=120, check=True)
        assert done.stdout.strip() == "True", module


# --- safe_url ---------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "shown"), [
    (f"postgresql+psycopg://u:{CANARY_PASSWORD}@h:5432/d", "postgresql+psycopg://u:***@h:5432/d"),
    (f"postgresql://u:a/{CANARY_PASSWORD}@h/d", "postgresql://u:***@h/d"),        # raw /
    (f"postgresql://u:a {CANARY_PASSWORD}@h/d", "postgresql://u:***@h/d"),        # raw space
    (f"postgresql://u:a%2F{CANARY_PASSWORD}@h/d", "postgresql://u:***@h/d"),      # encoded
    (f"postgresql://u:a:{CANARY_PASSWORD}@h/d", "postgresql://u:***@h/d"),        # raw :
    (f"postgresql://u:a@{CANARY_PASSWORD}@h/d", "postgresql://u:***@h/d"),        # raw @
    (f"postgresql://u:a@b:{CANARY_PASSWORD}@h/d", "<not a database URL>"),        # @ and :
    (f"postgresql://u@h/d?password={CANARY_PASSWORD}&sslmode=require",
     "postgresql://u@h/d?password=***&sslmode=require"),
    (f"postgresql://u@h/d?sslpassword={CANARY_PASSWORD}", "postgresql://u@h/d?sslpassword=***"),
    ("sqlite:////tmp/a b%.db", "sqlite:////tmp/a b%.db"),                          # as given
    ("postgresql://u@h/d", "postgresql://u@h/d"),
    (f"not a url {CANARY_PASSWORD}", "<not a database URL>"),
])
def test_safe_url(url: str, shown: str) -> None:
    assert _log.safe_url(url) == shown
    if not shown.startswith("<"):   # the same URL as an object
        assert CANARY_PASSWORD not in _log.safe_url(make_url(url))


def test_safe_url_of_an_engine_and_a_url_object() -> None:
    url = sa.URL.create("postgresql+psycopg", "u", CANARY_PASSWORD, "h", 5432, "d")
    assert _log.safe_url(url) == "postgresql+psycopg://u:***@h:5432/d"
    engine = sa.create_engine(url)
    assert _log.safe_url(engine) == "postgresql+psycopg://u:***@h:5432/d"
    engine.dispose()


# --- the slow-statement log -------------------------------------------------------------

@pytest.mark.parametrize(("value", "threshold"), [
    (None, 1000.0), ("", 1000.0), ("0", 1000.0), ("250", 250.0), ("0.5", 0.5),
    ("off", None), ("OFF", None),
])
def test_threshold_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                        threshold: float | None) -> None:
    if value is None:
        monkeypatch.delenv(_log.SLOW_STATEMENT_ENV, raising=False)
    else:
        monkeypatch.setenv(_log.SLOW_STATEMENT_ENV, value)
    assert _log.slow_statement_threshold_ms() == threshold


@pytest.mark.parametrize("value", ["abc", "-5", "inf", "nan"])
def test_a_bad_threshold_is_a_warning_and_the_default(
        value: str, records: list[logging.LogRecord]) -> None:
    assert _log.slow_statement_threshold_ms(value) == _log.DEFAULT_SLOW_STATEMENT_MS
    [warning] = _of(records, "convotree.sql")
    assert warning.levelno == logging.WARNING and _log.SLOW_STATEMENT_ENV in warning.getMessage()


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), True, "5"])
def test_a_bad_threshold_argument_is_refused(bad: Any) -> None:
    engine = sa.create_engine("sqlite://")
    with pytest.raises(ConfigurationError, match="threshold_ms"):
        _log.install_slow_statement_log(engine, threshold_ms=bad)


def test_statement_summary() -> None:
    assert _log.statement_summary("SELECT a, b \nFROM t\nWHERE x = ?") == "SELECT a, b ..."
    assert _log.statement_summary(
        f"INSERT INTO t VALUES ('{CANARY_CONTENT}', 'it''s', $$ {CANARY_CONTENT} $$, $1)"
    ) == "INSERT INTO t VALUES ('?', '?', '?', $1)"
    assert _log.statement_summary(f"SELECT '{CANARY_CONTENT}\nmore'") == "SELECT '?' ..."
    long = _log.statement_summary("SELECT " + "x, " * 200)
    assert len(long) == 204 and long.endswith(" ...")


def test_installing_twice_changes_the_threshold(records: list[logging.LogRecord]) -> None:
    engine = sa.create_engine("sqlite://")
    assert _log.install_slow_statement_log(engine, threshold_ms=1e9) == 1e9
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert not _of(records, "convotree.sql")          # not slow: nothing
    assert _log.install_slow_statement_log(engine, threshold_ms=EVERY_STATEMENT_MS)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 2")
    [slow] = _of(records, "convotree.sql")             # one pair of listeners, not two
    assert slow.levelno == logging.WARNING and "SELECT 2" in slow.getMessage()
    engine.dispose()


def test_off_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_log.SLOW_STATEMENT_ENV, "off")
    engine = sa.create_engine("sqlite://")
    assert _log.install_slow_statement_log(engine) is None
    assert getattr(engine, "_convotree_slow_statement_log", None) is None
    engine.dispose()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_engines_made_by_convotree_log_slow_statements(
        kind: str, backend: str, db_url: str, monkeypatch: pytest.MonkeyPatch,
        records: list[logging.LogRecord], event_loop_thread: Any) -> None:
    """``convotree.create_engine`` and ``create_async_engine`` (what every Store and
    AsyncStore opened by URL uses) install the log, at $CONVOTREE_SLOW_STATEMENT_MS."""
    monkeypatch.setenv(_log.SLOW_STATEMENT_ENV, str(EVERY_STATEMENT_MS))
    if kind == "sync":
        engine = convotree.create_engine(db_url)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    else:
        async_engine = convotree.create_async_engine(db_url)

        async def run() -> None:
            async with async_engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
            await async_engine.dispose()

        event_loop_thread.run(run())
    assert [r.getMessage().rsplit(": ", 1)[-1] for r in _of(records, "convotree.sql")] == [
        "SELECT 1"]


def test_slow_statements_are_logged_without_their_parameters(
        db_url: str, records: list[logging.LogRecord]) -> None:
    store = convotree.Store(db_url)
    try:
        _log.install_slow_statement_log(store.engine, threshold_ms=EVERY_STATEMENT_MS)
        conv = store.create_conversation(title=CANARY_CONTENT, metadata={"k": CANARY_METADATA})
        root = store.append(conv, role="system", content=CANARY_CONTENT)
        ask = store.append(conv, parent=root, role="user", content=f"ask {CANARY_CONTENT}",
                           metadata={"user": CANARY_METADATA})
        store.edit(ask, f"edited {CANARY_CONTENT}")
        store.context(ask, model="gpt-4o-mini")
        store.path(ask)
        store.redact(ask, "[gone]")
        with sql_audit.unaudited(), store.engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT '{CANARY_CONTENT}'")   # an inlined literal
    finally:
        store.close()
    slow = _of(records, "convotree.sql")
    assert len(slow) >= 8
    for record in slow:
        assert record.levelno == logging.WARNING
        assert record.getMessage().startswith("slow statement: ")
        assert record.convotree_duration_ms >= 0          # type: ignore[attr-defined]
        assert record.convotree_operation in ("SELECT", "INSERT", "UPDATE", "DELETE",  # type: ignore[attr-defined]
                                              "WITH", "BEGIN", "COMMIT", "SAVEPOINT",
                                              "RELEASE", "ROLLBACK", "PRAGMA")
    assert any("INSERT" in r.getMessage() for r in slow)
    _no_secret(records)


# --- the store, summaries, chat ---------------------------------------------------------

def test_store_calls_log_no_secret(backend: str, postgres: PostgresServer, tmp_path: Path,
                                   open_store: Callable[..., Any],
                                   records: list[logging.LogRecord]) -> None:
    url = new_database_url(backend, postgres, tmp_path)
    if backend == "postgresql":
        url = make_url(url).set(password=CANARY_PASSWORD).render_as_string(
            hide_password=False)
    store = open_store(url, create=True)
    conv = store.create_conversation(title=f"t {CANARY_CONTENT}",
                                     metadata={"k": CANARY_METADATA, "n": [CANARY_METADATA]})
    leaf = store.append(conv, role="system", content=CANARY_CONTENT)
    for turn in range(16):
        leaf = store.append(conv, parent=leaf, role=("user", "assistant")[turn % 2],
                            content=f"turn {turn}: {CANARY_CONTENT} " * 8,
                            metadata={"m": CANARY_METADATA})
    parts = store.append(conv, parent=leaf, role="user", content=[
        {"type": "text", "text": CANARY_CONTENT}])
    ctx = store.context(parts, model="gpt-4o-mini", budget=200,
                        summarizer=convotree.ExtractiveSummarizer())
    assert ctx.report.summary_created
    store.context(parts, model="gpt-4o-mini", format="responses")
    for bad in ({"content": f"{CANARY_CONTENT}\x00"}, {"content": CANARY_CONTENT, "role": "x"},
                {"content": "x", "metadata": {"k": f"{CANARY_METADATA}\x00"}}):
        with pytest.raises(ConvotreeError):
            store.append(conv, parent=parts, **{"role": "user", **bad})
    store.update_conversation(conv, metadata={"k2": CANARY_METADATA})
    store.redact(parts, "[redacted]")
    store.delete_subtree(parts)
    store.delete_conversation(conv)
    _no_secret(records)


def test_a_chat_with_retries_logs_no_secret(db_url: str,
                                            records: list[logging.LogRecord]) -> None:
    import openai

    with FakeOpenAI() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=CANARY_SECRET,
                               max_retries=2, timeout=5.0)
        store = convotree.Store(db_url)
        try:
            chat = convotree.Chat(store, client, model="gpt-4o-mini")
            conv = store.create_conversation(metadata={"k": CANARY_METADATA})
            server.fail_next("500", "429")                 # two retries, logged by openai
            answer = chat.send(conv, f"hello {CANARY_CONTENT}")
            with chat.stream(answer, f"more {CANARY_CONTENT}") as stream:
                "".join(stream)
            server.fail_next("500", "500", "500")
            with pytest.raises(openai.APIError):
                chat.send(answer, f"again {CANARY_CONTENT}")
        finally:
            store.close()
    assert any(r.name.startswith(("openai", "httpx")) for r in records)  # they were heard
    _no_secret(records)


# --- migrations -------------------------------------------------------------------------

def _database(backend: str, postgres: PostgresServer, tmp_path: Path) -> str:
    if backend == "postgresql":
        return _secret_pg_url(postgres)
    return new_database_url(backend, postgres, tmp_path)


def test_migrations_log_each_step_without_the_password(
        backend: str, postgres: PostgresServer, tmp_path: Path,
        records: list[logging.LogRecord]) -> None:
    url = _database(backend, postgres, tmp_path)
    convotree.migrate(url)
    logged = _of(records, "convotree.migrations")
    messages = [r.getMessage() for r in logged]
    assert all(r.levelno == logging.INFO for r in logged), messages
    where = _log.safe_url(url)
    assert messages[0] == f"upgrade of {where} from base to 'head': starting"
    steps = [m for m in messages if m.startswith("upgrade step ")]
    assert [m.split(" (")[0] for m in steps] == [
        "upgrade step base -> 0001", "upgrade step 0001 -> 0002",
        "upgrade step 0002 -> 0003", "upgrade step 0003 -> 0004",
        "upgrade step 0004 -> 0005", "upgrade step 0005 -> 0006"], messages
    assert all(where in m and m.endswith(" ms") for m in steps)
    assert messages[-1].startswith(f"upgrade of {where} from base to 0006: 6 step(s) in ")
    if backend == "postgresql":
        assert ":***@" in where

    records.clear()
    convotree.migrate(url)                                  # nothing to do: DEBUG only
    assert [r.levelno for r in _of(records, "convotree.migrations")] == [logging.DEBUG] * 2

    records.clear()
    convotree.downgrade(url, "0002")
    messages = [r.getMessage() for r in _of(records, "convotree.migrations")]
    assert [m.split(" (")[0] for m in messages if " step " in m] == [
        "downgrade step 0006 -> 0005", "downgrade step 0005 -> 0004",
        "downgrade step 0004 -> 0003", "downgrade step 0003 -> 0002"]
    assert messages[-1].startswith(f"downgrade of {where} from 0006 to 0002: 4 step(s)")
    convotree.migrate(url)
    _no_secret(records)


def test_a_failed_migration_is_a_warning_without_the_password(
        backend: str, postgres: PostgresServer, tmp_path: Path,
        records: list[logging.LogRecord]) -> None:
    url = _database(backend, postgres, tmp_path)
    engine = convotree.create_engine(url)
    with engine.begin() as conn:          # in the way of revision 0001's first table
        conn.execute(sa.text(f"CREATE TABLE convotree_conversations (x TEXT DEFAULT "
                             f"'{CANARY_CONTENT}')"))
        conn.execute(sa.text("INSERT INTO convotree_conversations VALUES (:x)"),
                     {"x": CANARY_CONTENT})
    engine.dispose()
    with pytest.raises(MigrationError, match="rolled back"):
        convotree.migrate(url)
    [warning] = [r for r in _of(records, "convotree.migrations")
                 if r.levelno >= logging.WARNING]
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert message.startswith(f"upgrade of {_log.safe_url(url)} to 'head' failed after ")
    assert "rolled back; the schema is still at base" in message
    assert _migrate.current_revision(url) is None
    _no_secret(records)


# --- the command line -------------------------------------------------------------------

#: URLs whose password the old pattern-based masking showed (a raw "/" or space, a
#: query password), and servers that refuse the connection.
def _cli_urls(postgres: PostgresServer) -> list[str]:
    plain = make_url(postgres.create_database())
    return [
        plain.set(password=CANARY_PASSWORD).render_as_string(hide_password=False),
        str(plain).replace("postgres@", f"postgres:x/{CANARY_PASSWORD}@"),
        str(plain).replace("postgres@", f"postgres:x {CANARY_PASSWORD}@"),
        f"{plain}?password={CANARY_PASSWORD}",
    ]


BROKEN = [
    f"postgresql+psycopg://someone:{CANARY_PASSWORD}@127.0.0.1:1/nothing",           # refused
    f"postgresql+psycopg://postgres:x/{CANARY_PASSWORD}@127.0.0.1:1/nothing",
    f"postgresql+psycopg://postgres:{CANARY_PASSWORD}@127.0.0.1:5432/no_such_db_x",  # no db
    f"postgresql+psycopg://postgres@127.0.0.1:5432/no_such_db_x?password={CANARY_PASSWORD}",
    f"mysql://root:x/{CANARY_PASSWORD}@127.0.0.1/x",                                 # no driver
    f"not a url {CANARY_PASSWORD}",
]


def test_the_command_line_never_shows_the_password(
        postgres: PostgresServer, tmp_path: Path, records: list[logging.LogRecord],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _require(postgres)
    exempt_reporting(monkeypatch)          # `ls` counts across conversations
    printed = []
    for url in _cli_urls(postgres):
        for argv in (["db", "upgrade"], ["db", "check"], ["db", "current"], ["ls"],
                     ["db", "downgrade", "0003"], ["db", "upgrade"]):
            result = run_cli(*argv, "--url", url)
            assert result.code == 0, (argv, result.err)
            printed.append(result.out + result.err)
        assert "***" in printed[0]
    demo = run_cli("demo", "--url", _cli_urls(postgres)[1])
    assert demo.code == 0, demo.err
    assert "export CONVOTREE_URL=" in demo.out
    printed.append(demo.out + demo.err)
    for url in BROKEN:
        for argv in (["ls"], ["db", "upgrade"], ["db", "check"], ["demo"]):
            result = run_cli(*argv, "--url", url)
            assert result.code == 1 and "Traceback" not in result.err, (argv, result.err)
            printed.append(result.out + result.err)
    # A URL where a revision goes, and one as an argparse choice: both echoed in errors.
    sqlite_url = f"sqlite:///{tmp_path / 'cli.db'}"
    misplaced = run_cli("db", "upgrade", BROKEN[1], "--url", sqlite_url)
    assert misplaced.code == 1 and "cannot upgrade to" in misplaced.err
    usage = run_cli("chat", "--api", BROKEN[1])
    assert usage.code == 2 and "invalid choice" in usage.err
    printed += [misplaced.err, usage.err]
    _no_secret(records, *printed)


@pytest.mark.slow
def test_the_command_as_a_subprocess_never_shows_the_password(
        postgres: PostgresServer, tmp_path: Path) -> None:
    _require(postgres)
    url = _cli_urls(postgres)[1]
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    env.pop("CONVOTREE_URL", None)
    command = str(Path(sys.executable).parent / "convotree")
    outputs = []
    for argv in (["db", "upgrade", "--url", url], ["db", "check", "--url", url],
                 ["ls", "--url", BROKEN[1]], ["db", "upgrade", "--url", BROKEN[2]]):
        done = subprocess.run([command, *argv], capture_output=True, text=True, env=env,
                              timeout=120)
        outputs.append(done.stdout + done.stderr)
    # The same commands with every logger on at every level, written to stderr.
    logged = ("import logging, sys; logging.basicConfig(level=1, stream=sys.stderr, "
              "format='LOG %(levelno)s %(name)s %(message)s'); "
              "from convotree.cli import main; sys.exit(main(sys.argv[1:]))")
    new = _cli_urls(postgres)[3]
    for argv in (["db", "upgrade", "--url", new], ["db", "upgrade", "--url", BROKEN[2]]):
        done = subprocess.run([sys.executable, "-c", logged, *argv], capture_output=True,
                              text=True, env=env, timeout=120)
        outputs.append(done.stdout + done.stderr)
    assert "LOG 20 convotree.migrations upgrade of postgresql+psycopg://postgres@" in outputs[-2]
    assert "?password=***" in outputs[-2]
    assert any(line.startswith("LOG 10 ") for line in outputs[-2].splitlines())
    for output in outputs:
        assert CANARY_PASSWORD not in output, output
        for line in output.splitlines():
            if line.startswith("LOG ") and int(line.split()[1]) >= logging.INFO:
                assert CANARY_CONTENT not in line and CANARY_SECRET not in line, line


def test_scrub_removes_the_secrets_of_this_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from convotree.cli import _common

    monkeypatch.setenv("OPENAI_API_KEY", CANARY_SECRET)
    monkeypatch.setenv("CONVOTREE_URL", f"postgresql://u@h/d?password=env-{CANARY_PASSWORD}")
    _common.set_argv(["ls", f"--url=postgresql://u:x/{CANARY_PASSWORD}@h/d"])
    try:
        text = _common.scrub(f"a x/{CANARY_PASSWORD} b x%2F{CANARY_PASSWORD} c "
                             f"env-{CANARY_PASSWORD} d {CANARY_SECRET} e")
    finally:
        _common.set_argv([])
    assert text == "a *** b *** c *** d *** e"


# --- the canary plugin itself -------------------------------------------------------------

def _record(level: int, msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    return logging.getLogger("convotree.probe").makeRecord(
        "convotree.probe", level, __file__, 1, msg, args, None, extra=extra or None)


def test_find_leaks_searches_every_field() -> None:
    assert find_leaks(_record(logging.DEBUG, "c %s", CANARY_CONTENT)) == []
    assert find_leaks(_record(logging.DEBUG, "p %s", CANARY_PASSWORD))[0].canary == (
        CANARY_PASSWORD)
    [leak] = find_leaks(_record(logging.INFO, f"hello {CANARY_CONTENT}"), where="t")
    assert isinstance(leak, Leak) and leak.field == "message" and leak.where == "t"
    assert {leak.field for leak in find_leaks(_record(logging.INFO, "x %s", CANARY_SECRET))} == {
        "message", "args"}
    assert "holds 'zq-canary-content-7f3a' in its message" in str(leak)
    assert find_leaks(_record(logging.WARNING, "x", body=CANARY_METADATA))[0].field == (
        "extra 'body'")
    try:
        raise ValueError(CANARY_CONTENT)
    except ValueError:
        failed = logging.getLogger("p").makeRecord("p", logging.ERROR, "f", 1, "failed", (),
                                                   sys.exc_info())
    assert [leak.field for leak in find_leaks(failed)] == ["exception"]
    broken = _record(logging.INFO, f"{CANARY_CONTENT} %s %s", "only one")   # bad format
    assert find_leaks(broken)[0].field == "message"


NESTED = f'''
import logging
import pytest

log = logging.getLogger("convotree.nested")


def test_info_leak():
    log.info("hello %s", "{CANARY_CONTENT}")


def test_debug_content_is_allowed():
    log.debug("hello %s", "{CANARY_CONTENT}")


def test_debug_password_is_not():
    log.debug("url %s", "postgresql://u:{CANARY_PASSWORD}@h/d")


def test_exception_leak():
    try:
        raise ValueError("{CANARY_SECRET}")
    except ValueError:
        log.warning("failed", exc_info=True)


def test_extra_leak():
    log.warning("x", extra={{"body": "{CANARY_METADATA}"}})


def test_leak_in_a_thread():
    import threading
    thread = threading.Thread(target=lambda: log.error("%s", "{CANARY_CONTENT}"))
    thread.start()
    thread.join()


def test_caplog_sees_what_it_saw_without_the_plugin(caplog):
    logging.getLogger("other").info("not captured: the root is at WARNING")
    caplog.set_level(logging.INFO, logger="app")
    logging.getLogger("app").info("mine")
    logging.getLogger("app.child").debug("below INFO")
    logging.getLogger("other").info("still not captured")
    logging.getLogger("other").warning("captured")
    assert [r.getMessage() for r in caplog.records] == ["mine", "captured"]


def test_caplog_at_level_on_the_root(caplog):
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("other").debug("dbg")
    logging.getLogger("other").debug("after")
    assert [r.getMessage() for r in caplog.records] == ["dbg"]


def test_caplog_does_not_hide_a_leak(caplog):
    caplog.set_level(logging.INFO)
    log.info("{CANARY_CONTENT}")
    assert caplog.records
'''

LEAKY = ("test_info_leak", "test_debug_password_is_not", "test_exception_leak",
         "test_extra_leak", "test_leak_in_a_thread", "test_caplog_does_not_hide_a_leak")


@pytest.fixture
def nested(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
           ) -> Callable[..., pytest.RunResult]:
    """Runs pytest in pytester's folder, in a subprocess, ``tests.log_canary``
    importable there."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return lambda *args: _nested(pytester, *args)


def _nested(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *args)


@pytest.mark.slow
def test_the_plugin_fails_each_test_that_logs_a_canary(
        pytester: pytest.Pytester, nested: Callable[..., pytest.RunResult]) -> None:
    pytester.makepyfile(test_nested=NESTED)
    plain = nested()                          # without the plugin: every test passes
    plain.assert_outcomes(passed=9)
    result = nested("-p", "tests.log_canary")
    # Each call passed; the check fails the leaky ones at their teardown.
    result.assert_outcomes(passed=9, errors=len(LEAKY))
    for name in LEAKY:
        result.stdout.fnmatch_lines([f"ERROR test_nested.py::{name} - Failed: *"])
    result.stdout.fnmatch_lines(["*INFO record of 'convotree.nested' holds "
                                 f"'{CANARY_CONTENT}' in its message*"])


@pytest.mark.slow
def test_the_plugin_fails_the_session_for_a_leak_outside_tests(
        pytester: pytest.Pytester, nested: Callable[..., pytest.RunResult]) -> None:
    pytester.makepyfile(test_outside=f'''
import logging
logging.getLogger("convotree.import").warning("{CANARY_CONTENT}")

def test_nothing():
    pass
''')
    result = nested("-p", "tests.log_canary")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*1 log record(s) outside any test hold a planted secret*"])
