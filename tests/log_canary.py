"""pytest plugin: no planted secret appears in any log record of the whole suite.

Tests plant fixed canary strings as message content, metadata values, API keys and
database passwords (``CANARY_*`` below). This plugin puts a handler on the root logger
for the whole session that sees every record of every logger at every level, and
fails:

* a test during which (setup, call or teardown) a record at INFO or above holds any
  canary, or a record at any level holds the password canary (``CANARY_PASSWORD``:
  a password is never logged, not even at DEBUG);
* the session, if such a record is emitted outside any test (collection, session
  fixtures), listing them in the summary.

A record is searched in its formatted message, its ``args`` (``repr``), its exception
(the formatted traceback and ``exc_text``), its stack, and every extra attribute
(structured fields passed with ``extra=``): where a handler might write it.

"Every level" needs records to exist: the root logger is lowered to level 1 for the
session, so that loggers left at NOTSET (convotree's among them) create their DEBUG
records. Loggers given a level of their own (SQLAlchemy sets ``sqlalchemy`` to
WARNING) keep it. So that other tests see exactly what they saw before, pytest's own
handlers (``caplog``, the captured-log report, the log file, live logging) get a
filter that passes a record only if its logger would have been enabled for it at the
root's previous level: ``caplog.records`` holds no extra DEBUG/INFO noise, and
``caplog.set_level`` and ``caplog.at_level`` work as documented (what they set is
honoured by the filter). A test that replaces the root's handlers (``basicConfig(
force=True)``, ``fileConfig``) has the canary handler put back at the next test.

Registered from ``tests/conftest.py`` (``pytest_plugins = ["tests.log_canary"]``);
``tests/test_logging.py`` proves it fails when a canary is logged (nested pytest runs)
and uses ``find_leaks`` directly.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

#: Message content (``content=``, parts, tool arguments, titles).
CANARY_CONTENT = "zq-canary-content-7f3a"
#: A metadata value (``metadata={"key": CANARY_METADATA}``).
CANARY_METADATA = "zq-canary-metadata-7f3a"
#: An API key (``openai.OpenAI(api_key=CANARY_SECRET)``).
CANARY_SECRET = "sk-canary-7f3a-5d1e9b0c4a7f3a2e"
#: A database password (PostgreSQL's trust auth ignores it).
CANARY_PASSWORD = "pw-canary-7f3a"

#: Never in a record at INFO or above.
SECRET_AT_INFO = (CANARY_CONTENT, CANARY_METADATA, CANARY_SECRET, CANARY_PASSWORD)
#: Never in any record, whatever its level.
SECRET_AT_ANY_LEVEL = (CANARY_PASSWORD,)

#: The root logger's level during the session: below DEBUG, so every standard level is
#: created; also how the filter knows the root was not changed by a test since.
SESSION_ROOT_LEVEL = 1

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName"}


@dataclass(frozen=True)
class Leak:
    """A canary found in a log record."""

    logger: str
    level: str
    canary: str
    field: str
    excerpt: str
    where: str = "<outside any test>"

    def __str__(self) -> str:
        return (f"{self.where}: {self.level} record of {self.logger!r} holds "
                f"{self.canary!r} in its {self.field}: {self.excerpt}")


def record_texts(record: logging.LogRecord) -> Iterator[tuple[str, str]]:
    """Every text of a record a handler might write: (field, text)."""
    try:
        yield "message", record.getMessage()
    except Exception:  # a bad format string: the raw parts are still there
        yield "message", str(record.msg)
    if record.args:
        yield "args", repr(record.args)
    if record.exc_info and isinstance(record.exc_info, tuple) and record.exc_info[1]:
        yield "exception", "".join(traceback.format_exception(*record.exc_info))
    if record.exc_text:
        yield "exc_text", record.exc_text
    if record.stack_info:
        yield "stack", record.stack_info
    for name, value in record.__dict__.items():
        if name not in _STANDARD:
            yield f"extra {name!r}", repr(value)


def find_leaks(record: logging.LogRecord, where: str = "<outside any test>") -> list[Leak]:
    """The canaries ``record`` may not hold at its level, with where it holds them."""
    canaries = SECRET_AT_INFO if record.levelno >= logging.INFO else SECRET_AT_ANY_LEVEL
    leaks = []
    for field, text in record_texts(record):
        for canary in canaries:
            at = text.find(canary)
            if at >= 0:
                excerpt = text[max(0, at - 60): at + len(canary) + 60].replace("\n", "\\n")
                leaks.append(Leak(record.name, record.levelname, canary, field, excerpt,
                                  where))
    return leaks


def leaks_in(records: Iterable[logging.LogRecord]) -> list[Leak]:
    return [leak for record in records for leak in find_leaks(record)]


class CanaryHandler(logging.Handler):
    """Checks each record as it is emitted; keeps only the leaks (not the records)."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.leaks: list[Leak] = []
        self.where = "<outside any test>"
        self.records_seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        # (Handler.handle holds this handler's lock around emit: threads are safe.)
        self.records_seen += 1
        try:
            self.leaks.extend(find_leaks(record, self.where))
        except Exception:  # a record this check cannot read is not a reason to crash
            return


class AsBefore(logging.Filter):
    """Passes a record only if its logger would have been enabled for it with the root
    at ``root_level`` (its level before the session lowered it): pytest's handlers
    then see what they would have seen without this plugin."""

    def __init__(self, root_level: int) -> None:
        super().__init__()
        self.root_level = root_level

    def filter(self, record: logging.LogRecord) -> bool:
        found = logging.root.manager.loggerDict.get(record.name)
        node = found if isinstance(found, logging.Logger) else None
        while node is not None and node is not logging.root:
            if node.level:
                return record.levelno >= node.level
            node = node.parent
        root = logging.root.level
        return record.levelno >= (self.root_level if root == SESSION_ROOT_LEVEL else root)


_handler = CanaryHandler()
#: Leaks before this index were reported by a test, or moved to ``_outside``.
_reported = 0
#: Leaks emitted between tests' windows (collection, session fixtures, threads).
_outside: list[Leak] = []


def _install() -> None:
    root = logging.getLogger()
    if _handler not in root.handlers:
        root.addHandler(_handler)
    if root.level != SESSION_ROOT_LEVEL:
        root.setLevel(SESSION_ROOT_LEVEL)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    previous = logging.getLogger().level
    if previous == SESSION_ROOT_LEVEL:  # configured twice (a nested in-process run)
        previous = logging.WARNING
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    if plugin is not None:
        # Without this plugin, pytest lowers the root to each level it was given
        # (--log-level, --log-cli-level, --log-file-level) while it captures.
        given = [level for level in (getattr(plugin, name, None) for name in (
            "log_level", "log_file_level", "log_cli_level")) if isinstance(level, int)]
        keep_as_before = AsBefore(min([previous, *given]))
        for name in ("caplog_handler", "report_handler", "log_file_handler",
                     "log_cli_handler"):
            handler = getattr(plugin, name, None)
            if isinstance(handler, logging.Handler):
                handler.addFilter(keep_as_before)
    _install()


@pytest.fixture(autouse=True)
def _log_canary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if a record emitted during it holds a canary it may not."""
    global _reported
    _install()
    start = len(_handler.leaks)
    _outside.extend(_handler.leaks[_reported:start])
    _handler.where = request.node.nodeid
    yield
    _install()
    new = _handler.leaks[start:]
    _handler.where = "<outside any test>"
    _reported = len(_handler.leaks)
    if new:
        shown = "\n".join(f"  {leak}" for leak in new[:5])
        pytest.fail(f"{len(new)} log record(s) hold a planted secret (tests/log_canary.py):"
                    f"\n{shown}", pytrace=False)


def unreported() -> list[Leak]:
    """Leaks outside any test's window (collection, session fixtures)."""
    return [*_outside, *_handler.leaks[_reported:]]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if unreported() and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config
                            ) -> None:
    outside = unreported()
    if outside:
        terminalreporter.write_line(
            f"!!! {len(outside)} log record(s) outside any test hold a planted secret "
            f"(tests/log_canary.py); first: {outside[0]}", red=True, bold=True)
