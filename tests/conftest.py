"""Shared fixtures: both backends, a throwaway PostgreSQL database per run, the SQL audit.

PostgreSQL comes from ``CONVOTREE_TEST_POSTGRES_URL`` (default: the local server). Each
test run creates its own database and drops it at the end, so runs never collide. If
PostgreSQL is unreachable its cases skip loudly, unless ``CONVOTREE_REQUIRE_POSTGRES=1``
(set by .ci/run) makes that a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_SHARED_TIKTOKEN = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"
if "TIKTOKEN_CACHE_DIR" not in os.environ and _SHARED_TIKTOKEN.is_dir():
    # No network on the build machines: use the checked-in encodings.
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_SHARED_TIKTOKEN)

import sqlalchemy as sa  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

pytest_plugins = ["tests.log_canary"]

import convotree  # noqa: E402
from convotree._engine import MIGRATION_OPTION  # noqa: E402
from tests import sql_audit, twins  # noqa: E402

PG_URL = os.environ.get(
    "CONVOTREE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_PG = os.environ.get("CONVOTREE_REQUIRE_POSTGRES") == "1"
BACKENDS = ["sqlite", "postgresql"]
#: The Citus mode (docs/scale-out.md, ``make test-citus``): ``host:port`` of each worker
#: of the Citus cluster whose coordinator ``CONVOTREE_TEST_POSTGRES_URL`` names. Every
#: throwaway database is then made on the coordinator and the workers, with the citus
#: extension and the workers added, and the shared migrated database is distributed.
CITUS_WORKERS = [w.strip() for w in os.environ.get("CONVOTREE_TEST_CITUS_WORKERS", "").split(",")
                 if w.strip()]
#: Shards of the distributed test databases (Citus's default is 32).
CITUS_SHARDS = int(os.environ.get("CONVOTREE_TEST_CITUS_SHARDS", "32"))


def examples(count: int) -> int:
    """Property-test examples: ``CONVOTREE_THOROUGH=1`` runs ten times as many."""
    return count * 10 if os.environ.get("CONVOTREE_THOROUGH") == "1" else count


@event.listens_for(sa.engine.Engine, "before_cursor_execute")
def _audit(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
    # A migration's backfill spans every conversation on purpose (one-time DDL work).
    if not conn.get_execution_options().get(MIGRATION_OPTION):
        sql_audit.record(statement)


class PostgresServer:
    """Creates and drops throwaway databases on the test server."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.error: str | None = None
        self.created: list[str] = []
        self.admin: sa.Engine | None = None
        try:
            self.admin = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
            with self.admin.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as exc:  # unreachable server, missing driver, bad URL
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.admin = None

        #: Citus mode: an administrative engine per worker, (host, port, engine).
        self.workers: list[tuple[str, int, sa.Engine]] = []
        if self.admin is not None:
            for worker in CITUS_WORKERS:
                host, _, port = worker.rpartition(":")
                self.workers.append((host, int(port), sa.create_engine(
                    self.url.set(host=host, port=int(port)), isolation_level="AUTOCOMMIT")))

    def create_database(self) -> str:
        assert self.admin is not None
        name = f"convotree_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.created.append(name)
        for engine in (self.admin, *(engine for _, _, engine in self.workers)):
            with engine.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = self.url.set(database=name)
        if self.workers:
            self._join_cluster(url)
        return url.render_as_string(hide_password=False)

    def _join_cluster(self, url: sa.URL) -> None:
        """The new database becomes a Citus database: the extension on every node, the
        coordinator told its own address, the workers added."""
        for host, port, _ in self.workers:
            worker = sa.create_engine(url.set(host=host, port=port), isolation_level="AUTOCOMMIT")
            with worker.connect() as conn:
                conn.execute(sa.text("CREATE EXTENSION citus"))
            worker.dispose()
        coordinator = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with sql_audit.unaudited(), coordinator.connect() as conn:
            conn.execute(sa.text("CREATE EXTENSION citus"))
            conn.execute(sa.text("SELECT citus_set_coordinator_host(:h, :p)"),
                         {"h": url.host, "p": url.port or 5432})
            for host, port, _ in self.workers:
                conn.execute(sa.text("SELECT citus_add_node(:h, :p)"), {"h": host, "p": port})
        coordinator.dispose()

    def drop_all(self) -> None:
        if self.admin is None:
            return
        for engine in (self.admin, *(engine for _, _, engine in self.workers)):
            with engine.connect() as conn:
                for name in self.created:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            engine.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(PG_URL)
    yield server
    server.drop_all()


def _require(postgres: PostgresServer) -> None:
    if postgres.admin is not None:
        return
    message = f"PostgreSQL at {PG_URL} is unreachable ({postgres.error})"
    if REQUIRE_PG:
        pytest.fail(message + " and CONVOTREE_REQUIRE_POSTGRES=1", pytrace=False)
    pytest.skip("SKIPPING POSTGRESQL CASES: " + message)


def pytest_report_header(config):  # type: ignore[no-untyped-def]
    if CITUS_WORKERS:
        return [f"CITUS MODE: coordinator {make_url(PG_URL).render_as_string()}, workers "
                f"{', '.join(CITUS_WORKERS)}, {CITUS_SHARDS} shards"]
    return []


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if CITUS_WORKERS:
        terminalreporter.write_line(
            f"CITUS MODE: the PostgreSQL cases ran on the Citus cluster (workers "
            f"{', '.join(CITUS_WORKERS)}), the shared database distributed", bold=True)
    skips = terminalreporter.stats.get("skipped", [])
    skipped = [r for r in skips if "SKIPPING POSTGRESQL" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"!!! {len(skipped)} PostgreSQL cases were SKIPPED: the server was unreachable. "
            "Set CONVOTREE_REQUIRE_POSTGRES=1 to make that a failure.", red=True, bold=True)
    if _UNEXPECTED_SKIPS:
        terminalreporter.write_line(
            f"!!! {len(_UNEXPECTED_SKIPS)} tests skipped for another reason (first: "
            f"{_UNEXPECTED_SKIPS[0]}): README says nothing else skips, so the run fails.",
            red=True, bold=True)


#: Skips other than the unreachable-PostgreSQL one: README promises there are none.
_UNEXPECTED_SKIPS: list[str] = []


def pytest_runtest_logreport(report):  # type: ignore[no-untyped-def]
    if report.skipped and "SKIPPING POSTGRESQL" not in str(report.longrepr):
        _UNEXPECTED_SKIPS.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):  # type: ignore[no-untyped-def]
    if _UNEXPECTED_SKIPS and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def new_database_url(kind: str, postgres: PostgresServer, tmp_path: Path) -> str:
    """A new, empty database of the given backend."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / f'convotree-{uuid.uuid4().hex[:8]}.db'}"
    _require(postgres)
    return postgres.create_database()


@pytest.fixture(scope="session")
def migrated_urls(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> dict[str, str]:
    """One migrated database per backend, shared by the tests of this run."""
    urls = {"sqlite": f"sqlite:///{tmp_path_factory.mktemp('db') / 'convotree.db'}"}
    if postgres.admin is not None:
        urls["postgresql"] = postgres.create_database()
    for url in urls.values():
        migrate_and_distribute(url)
    return urls


def migrate_and_distribute(url: str) -> None:
    """Migrate a test database; in the Citus mode, distribute a PostgreSQL one too."""
    convotree.migrate(url)
    if CITUS_WORKERS and make_url(url).get_backend_name() == "postgresql":
        convotree.distribute(url, shard_count=CITUS_SHARDS)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, migrated_urls: dict[str, str], postgres: PostgresServer) -> str:
    """URL of a migrated database of the current backend."""
    if backend == "postgresql":
        _require(postgres)
    return migrated_urls[backend]


@pytest.fixture
def empty_db_url(backend: str, postgres: PostgresServer, tmp_path: Path) -> str:
    """URL of a brand-new database with nothing in it."""
    return new_database_url(backend, postgres, tmp_path)


# --- the twins: Store/Chat and AsyncStore/AsyncChat from one test body -------------------

SHELLS = ["sync", "async"]


def pytest_generate_tests(metafunc):  # type: ignore[no-untyped-def]
    """Modules with ``TWINS = True`` run their store and chat tests on both shells."""
    if "shell" in metafunc.fixturenames:
        shells = SHELLS if getattr(metafunc.module, "TWINS", False) else ["sync"]
        metafunc.parametrize("shell", shells)


@pytest.fixture(scope="session")
def event_loop_thread() -> Iterator[twins.EventLoopThread]:
    loop = twins.EventLoopThread()
    yield loop
    loop.close()


@pytest.fixture
def open_store(shell: str, event_loop_thread: twins.EventLoopThread
               ) -> Iterator[Callable[..., Any]]:
    """``open_store(url, **options)``: a store of the test's shell (closed at the end)."""
    opened: list[Any] = []
    engines: list[sa.Engine] = []

    def open_(url: str, **options: Any) -> Any:
        if shell == "sync":
            store: Any = convotree.Store(url, **options)
        else:
            engine = convotree.create_engine(url)
            engines.append(engine)
            store = twins.Blocking(
                event_loop_thread.run(convotree.AsyncStore.open(url, **options)),
                event_loop_thread, engine=engine)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()
    for engine in engines:
        engine.dispose()


@pytest.fixture
def store(db_url: str, open_store: Callable[..., Any]) -> Any:
    """A store on the migrated database: ``Store``, or (twins) ``AsyncStore``."""
    return open_store(db_url)


@pytest.fixture(autouse=True)
def audit_sql() -> Iterator[None]:
    """Fail any test during which the store sent SQL not confined to one conversation."""
    with sql_audit.capture() as log:
        yield
    bad = [(statement, why) for statement in log for why in sql_audit.violations(statement)]
    if bad:
        statement, why = bad[0]
        pytest.fail(f"{len(bad)} statement(s) not confined to one conversation; first: "
                    f"{why}\n{statement}", pytrace=False)


def table_counts(store: convotree.Store) -> tuple[int, int, list[tuple[object, ...]]]:
    """Rows in both tables plus every conversation row: to prove nothing was written."""
    with sql_audit.unaudited(), store.engine.connect() as conn:
        conversations = conn.execute(sa.text("SELECT count(*) FROM convotree_conversations"))
        nodes = conn.execute(sa.text("SELECT count(*) FROM convotree_nodes"))
        rows = conn.execute(sa.text(
            "SELECT id, title, current_node_id, updated_at FROM convotree_conversations "
            "ORDER BY id"))
        return conversations.scalar_one(), nodes.scalar_one(), [tuple(r) for r in rows]
