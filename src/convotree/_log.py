"""convotree's logging: its logger names, the slow-statement log, URLs without passwords.

Everything convotree logs goes through the standard ``logging`` module under the
``convotree`` logger (``convotree.migrations``, ``convotree.sql``, ``convotree.chat``,
``convotree.summaries``...), which carries a ``NullHandler`` as the library convention
asks: an application that configures no logging sees nothing (not even Python's
"last resort" printing of warnings), and one that does decides levels and handlers.
Every module that logs takes its logger from here (``get_logger``), so the
``NullHandler`` is attached before the first record can exist.

What may be logged, whatever the level, is part of the interface (docs/logging.md):
message content, metadata values and API keys never appear at INFO or above, and a
database URL is only ever logged or printed through ``safe_url`` (password and
password-like query values hidden). Statements are logged without their parameters,
which hold message content. ``tests/log_canary.py`` checks every record of the test
suite for planted secrets.

This module imports only the standard library at its top: ``import convotree`` and
``convotree --help`` must stay cheap (tests/test_cli_startup.py); SQLAlchemy is loaded
by the functions that need it, which are only called with SQLAlchemy objects anyway.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy import URL, Engine

__all__ = [
    "DEFAULT_SLOW_STATEMENT_MS",
    "SLOW_STATEMENT_ENV",
    "get_logger",
    "install_slow_statement_log",
    "is_secret_query_key",
    "logger",
    "redact_urls",
    "safe_url",
    "safe_revision",
    "slow_statement_threshold_ms",
    "statement_summary",
]

#: The root of everything convotree logs.
logger = logging.getLogger("convotree")
# The library convention (logging HOWTO, "Configuring Logging for a Library"): no
# handler of convotree's own beyond this one; the application configures the rest.
if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
    logger.addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """``convotree.<name>``: the logger a convotree module logs under. Taking it from
    here guarantees the ``NullHandler`` above is attached first."""
    return logger.getChild(name)


# --- URLs -------------------------------------------------------------------------------

#: Query keys whose values are secrets, in the sense of "never print them": libpq
#: takes ``password``/``sslpassword`` from the query string, and drivers and proxies
#: have their own names for tokens and keys.
_SECRET_QUERY_KEY = re.compile(r"pass|pwd|secret|token|api_?key|credential", re.IGNORECASE)
_HIDDEN = "***"
# scheme://user:PASSWORD@host in free text: the password is everything between the
# user's colon and the last @ before the host (passwords may contain @ and :, user
# names may not).
_TEXT_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*:)([^\s/]*)(@)")
_TEXT_QUERY_SECRET = re.compile(
    r"([?&][^=&\s]*(?:pass|pwd|secret|token|api_?key|credential)[^=&\s]*=)([^&\s]*)",
    re.IGNORECASE)


def is_secret_query_key(name: str) -> bool:
    """Whether a URL query parameter's value is a secret (``password``, ``sslpassword``,
    tokens, keys)."""
    return bool(_SECRET_QUERY_KEY.search(name))


def safe_url(url: str | URL | Engine) -> str:
    """A database URL as convotree logs or prints it: the password hidden by
    SQLAlchemy's ``URL.render_as_string(hide_password=True)``, and the values of
    password-like query parameters (``?password=``, ``?sslpassword=``, tokens) hidden
    too, which ``render_as_string`` leaves in clear.

    A string with nothing to hide comes back as it was given (a SQLite path is not
    re-encoded); a string that is not a URL at all is never echoed, since a mistyped
    URL may still hold a password.
    """
    from sqlalchemy import Engine
    from sqlalchemy.engine import make_url

    if isinstance(url, Engine):
        url = url.url
    try:
        parsed = make_url(url)
    except Exception:  # ArgumentError, ValueError, TypeError: not a URL
        return "<not a database URL>"
    secret_keys = [key for key in parsed.query if _SECRET_QUERY_KEY.search(key)]
    if parsed.password is None and not secret_keys and isinstance(url, str):
        return url
    if parsed.host and "@" in parsed.host:
        # A raw "@" in the password ("u:p@ss@host"): SQLAlchemy ends the password at
        # the first @ and keeps the rest in the host. That rest is password too.
        parsed = parsed.set(host=parsed.host.rsplit("@", 1)[1])
    if secret_keys:
        query = {key: (_HIDDEN if key in secret_keys else value)
                 for key, value in parsed.query.items()}
        parsed = parsed.set(query=query)
    rendered = parsed.render_as_string(hide_password=True)
    # render_as_string percent-encodes query values: show the mask as the mask.
    return rendered.replace("%2A%2A%2A", _HIDDEN)


def redact_urls(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (and the value
    of every password-like query parameter). A pattern over free text, so a last line
    of defence for messages that quote a URL: a password holding a raw ``/`` or space
    escapes it. Where the URL itself is at hand, use ``safe_url``."""
    text = _TEXT_URL_PASSWORD.sub(lambda m: f"{m.group(1)}{_HIDDEN}{m.group(3)}", text)
    return _TEXT_QUERY_SECRET.sub(lambda m: f"{m.group(1)}{_HIDDEN}", text)


#: What a revision argument may look like to be logged as given (ids, head, base,
#: relative steps, branch@rev): anything else (a URL given by mistake...) is not echoed.
_REVISION = re.compile(r"[\w@+\-.,]{1,64}")


def safe_revision(revision: str) -> str:
    """A revision argument as it may be logged: ``repr`` of it if it looks like one,
    else a placeholder (someone typing a URL where the revision goes must not see
    its password logged)."""
    if isinstance(revision, str) and _REVISION.fullmatch(revision):
        return repr(revision)
    return "<not a revision id>"


# --- slow statements --------------------------------------------------------------------

#: Environment variable: the slow-statement threshold in milliseconds.
SLOW_STATEMENT_ENV = "CONVOTREE_SLOW_STATEMENT_MS"
#: The threshold when the variable is unset, empty or 0.
DEFAULT_SLOW_STATEMENT_MS = 1000.0
_OFF = ("off", "none", "false", "no")
_STATE = "_convotree_slow_statement_log"
_STARTED = "_convotree_statement_started"

_sql_log = get_logger("sql")

# String literals and dollar-quoted bodies are masked in the statement text that is
# logged: convotree binds every value, but an application's statement on a shared
# engine might inline one.
_LITERAL = re.compile(r"'(?:[^']|'')*'?|\$(\w*)\$.*?(?:\$\1\$|$)", re.DOTALL)
_SUMMARY_CHARS = 200


def slow_statement_threshold_ms(value: str | None = None) -> float | None:
    """The threshold ``CONVOTREE_SLOW_STATEMENT_MS`` asks for (``value`` instead of
    the environment, when given): unset, empty or ``0`` is the default, 1000 ms; a
    positive number of milliseconds is that threshold; ``off`` turns the log off
    (None). Anything else is a warning and the default: a typo in a diagnostics
    setting should not stop an application from opening its database."""
    raw = (os.environ.get(SLOW_STATEMENT_ENV, "") if value is None else value).strip()
    if raw.lower() in _OFF:
        return None
    if raw == "":
        return DEFAULT_SLOW_STATEMENT_MS
    try:
        number = float(raw)
    except ValueError:
        number = -1.0
    if number == 0:
        return DEFAULT_SLOW_STATEMENT_MS
    if not number > 0 or number == float("inf"):
        _sql_log.warning("%s=%r is not a number of milliseconds (nor 0 or off); using "
                         "%.0f ms", SLOW_STATEMENT_ENV, raw, DEFAULT_SLOW_STATEMENT_MS)
        return DEFAULT_SLOW_STATEMENT_MS
    return number


def statement_summary(statement: str) -> str:
    """What the slow-statement log shows of a statement: its first non-blank line,
    string literals masked, at most 200 characters. Never its parameters."""
    text = statement.strip()
    first = text.split("\n", 1)[0].strip()
    masked = _LITERAL.sub("'?'", first)
    more = len(text) > len(first)
    if len(masked) > _SUMMARY_CHARS:
        masked, more = masked[:_SUMMARY_CHARS], True
    return masked + (" ..." if more else "")


class _SlowLog:
    """One engine's threshold (seconds); a later install changes it in place."""

    __slots__ = ("threshold_s",)

    def __init__(self, threshold_s: float) -> None:
        self.threshold_s = threshold_s


def install_slow_statement_log(engine: Engine, threshold_ms: float | None = None
                               ) -> float | None:
    """Log every statement of ``engine`` that runs longer than ``threshold_ms`` as a
    WARNING under ``convotree.sql``: its duration, the database (``safe_url``) and
    the first line of its SQL, never its parameters (they hold message content).

    ``threshold_ms`` None reads ``CONVOTREE_SLOW_STATEMENT_MS`` (see
    ``slow_statement_threshold_ms``; ``off`` installs nothing). Returns the threshold
    in effect, or None when off. Installing again changes the threshold; it never
    adds a second pair of listeners.

    It times the driver's ``execute`` with SQLAlchemy's ``before_cursor_execute`` and
    ``after_cursor_execute`` events, which ``exec_driver_sql`` (the hot paths,
    ``_driver``) fires too. SQLAlchemy decides at a ``Connection``'s creation whether
    its engine has listeners, so this belongs right after the engine is made (for an
    ``AsyncEngine``: on its ``sync_engine``). A statement that fails is not timed: its
    error says enough. On SQLite a SELECT's later rows are computed while they are
    fetched, after ``execute`` returned, so only the time to the first row counts.
    Cost when a statement is not slow: two listener calls and two clock reads
    (about a microsecond, docs/logging.md has the measurement).
    """
    from sqlalchemy import event

    if threshold_ms is None:
        threshold_ms = slow_statement_threshold_ms()
        if threshold_ms is None:
            return None
    elif isinstance(threshold_ms, bool) or not isinstance(threshold_ms, int | float) or (
            not threshold_ms > 0 or threshold_ms == float("inf")):
        raise ConfigurationError(
            f"threshold_ms must be a positive number of milliseconds, not {threshold_ms!r}")
    state: _SlowLog | None = getattr(engine, _STATE, None)
    if state is not None:
        state.threshold_s = threshold_ms / 1000
        return float(threshold_ms)
    state = _SlowLog(threshold_ms / 1000)
    clock = time.perf_counter

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        # The start goes on the execution context (one per execution, so nothing is
        # left behind when a statement fails); SQLAlchemy's few context-less
        # executions use the connection's info dictionary instead.
        if context is not None:
            setattr(context, _STARTED, clock())
        else:
            conn.info[_STARTED] = clock()

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
              executemany: bool) -> None:
        end = clock()
        started = (getattr(context, _STARTED, None) if context is not None
                   else conn.info.pop(_STARTED, None))
        if started is not None and end - started >= state.threshold_s:
            _report(conn, statement, (end - started) * 1000, state.threshold_s * 1000,
                    executemany)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    setattr(engine, _STATE, state)
    return float(threshold_ms)


def _report(conn: Any, statement: str, elapsed_ms: float, threshold_ms: float,
            executemany: bool) -> None:
    """The slow path: only here is anything formatted. Parameters never reach it."""
    if not _sql_log.isEnabledFor(logging.WARNING):
        return
    summary = statement_summary(statement)
    operation = summary.split(" ", 1)[0].upper() if summary else ""
    try:
        where = safe_url(conn.engine.url)
    except Exception:  # a connection being torn down: the statement still counts
        where = "?"
    _sql_log.warning(
        "slow statement: %.1f ms (threshold %.0f ms)%s on %s: %s",
        elapsed_ms, threshold_ms, " (executemany)" if executemany else "", where, summary,
        extra={"convotree_duration_ms": elapsed_ms, "convotree_operation": operation})
