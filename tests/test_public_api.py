"""The public surface is explicit and pinned: changing it is a decision, not an accident."""

from __future__ import annotations

import subprocess
import sys

import convotree
from convotree import errors

PUBLIC = {
    "AsyncChat", "AsyncChatStream", "AsyncOpenAISummarizer", "AsyncStore",
    "Candidate", "Chat", "ChatStream", "Turn",
    "Context", "ContextReport", "Conversation", "ConvotreeError",
    "DefaultPolicy", "DepthRange", "ExtractiveSummarizer", "Node", "OpenAISummarizer",
    "Summarizer", "SummaryOptions", "SummaryRequest", "SummaryResult", "PruningPolicy",
    "Selection", "Store", "Window",
    "__version__", "check_schema", "create_async_engine", "create_engine", "current_revision",
    "downgrade",
    "errors", "migrate", "tokens",
    # Reliability and security (issue 15): row-level security, secret-safe URLs, the
    # slow-statement log.
    "RowLevelSecurity", "enable_row_level_security", "disable_row_level_security",
    "safe_url", "install_slow_statement_log",
    # Scale-out (issue 18): distributing the tables on a Citus coordinator.
    "Distribution", "distribute",
}


def test_all_is_pinned() -> None:
    assert set(convotree.__all__) == PUBLIC
    for name in convotree.__all__:
        assert hasattr(convotree, name)


def test_every_error_is_a_convotree_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.ConvotreeError)
    assert issubclass(errors.NotFound, LookupError)
    assert issubclass(errors.InvalidInput, ValueError)


def test_import_does_no_heavy_work() -> None:
    """Importing convotree loads no tiktoken encoding and opens no connection."""
    code = ("import sys, convotree; "
            "print('tiktoken' in sys.modules, 'psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]
