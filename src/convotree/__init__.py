"""convotree: durable, branching conversation memory in SQL for stateless LLM APIs.

A conversation is a tree of messages stored as rows (SQLite or PostgreSQL); a leaf
names a whole branch. See README.md for a tour and docs/ for the design.

Names are loaded on first use (PEP 562): ``import convotree`` costs almost nothing, so
the command line starts fast and an application that only needs the store never
imports alembic or openai. ``from convotree import Store`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors
from .errors import ConvotreeError

__version__ = "0.1.0"

#: Public name -> (module, attribute in it; None: the module itself).
_LAZY: dict[str, tuple[str, str | None]] = {
    "AsyncChat": (".chat_async", "AsyncChat"),
    "AsyncChatStream": (".chat_async", "AsyncChatStream"),
    "AsyncOpenAISummarizer": (".summaries", "AsyncOpenAISummarizer"),
    "AsyncStore": (".store_async", "AsyncStore"),
    "Candidate": (".context", "Candidate"),
    "Chat": (".chat", "Chat"),
    "ChatStream": (".chat", "ChatStream"),
    "Context": (".context", "Context"),
    "ContextReport": (".context", "ContextReport"),
    "Conversation": (".models", "Conversation"),
    "DefaultPolicy": (".context", "DefaultPolicy"),
    "DepthRange": (".context", "DepthRange"),
    "Distribution": ("._citus", "Distribution"),
    "ExtractiveSummarizer": (".summaries", "ExtractiveSummarizer"),
    "Node": (".models", "Node"),
    "OpenAISummarizer": (".summaries", "OpenAISummarizer"),
    "PruningPolicy": (".context", "PruningPolicy"),
    "Selection": (".context", "Selection"),
    "Store": (".store", "Store"),
    "Summarizer": (".summaries", "Summarizer"),
    "SummaryOptions": (".summaries", "SummaryOptions"),
    "SummaryRequest": (".summaries", "SummaryRequest"),
    "SummaryResult": (".summaries", "SummaryResult"),
    "Turn": (".chat", "Turn"),
    "Window": (".context", "Window"),
    "RowLevelSecurity": ("._rls", "RowLevelSecurity"),
    "disable_row_level_security": ("._rls", "disable_row_level_security"),
    "enable_row_level_security": ("._rls", "enable_row_level_security"),
    "install_slow_statement_log": ("._log", "install_slow_statement_log"),
    "safe_url": ("._log", "safe_url"),
    "check_schema": ("._migrate", "check"),
    "create_async_engine": ("._engine", "create_async_engine"),
    "create_engine": ("._engine", "create_engine"),
    "current_revision": ("._migrate", "current_revision"),
    "distribute": ("._citus", "distribute"),
    "downgrade": ("._migrate", "downgrade"),
    "migrate": ("._migrate", "migrate"),
    "tokens": (".tokens", None),
}

if TYPE_CHECKING:
    from . import tokens
    from ._citus import Distribution, distribute
    from ._engine import create_async_engine, create_engine
    from ._log import install_slow_statement_log, safe_url
    from ._migrate import check as check_schema
    from ._migrate import current_revision, downgrade, migrate
    from ._rls import RowLevelSecurity, disable_row_level_security, enable_row_level_security
    from .chat import Chat, ChatStream, Turn
    from .chat_async import AsyncChat, AsyncChatStream
    from .context import (
        Candidate,
        Context,
        ContextReport,
        DefaultPolicy,
        DepthRange,
        PruningPolicy,
        Selection,
        Window,
    )
    from .models import Conversation, Node
    from .store import Store
    from .store_async import AsyncStore
    from .summaries import (
        AsyncOpenAISummarizer,
        ExtractiveSummarizer,
        OpenAISummarizer,
        Summarizer,
        SummaryOptions,
        SummaryRequest,
        SummaryResult,
    )


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'convotree' has no attribute {name!r}") from None
    module = importlib.import_module(module_name, __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AsyncChat",
    "AsyncChatStream",
    "AsyncOpenAISummarizer",
    "AsyncStore",
    "Candidate",
    "Chat",
    "ChatStream",
    "Context",
    "ContextReport",
    "Conversation",
    "ConvotreeError",
    "DefaultPolicy",
    "DepthRange",
    "Distribution",
    "ExtractiveSummarizer",
    "Node",
    "OpenAISummarizer",
    "PruningPolicy",
    "RowLevelSecurity",
    "Selection",
    "Store",
    "Summarizer",
    "SummaryOptions",
    "SummaryRequest",
    "SummaryResult",
    "Turn",
    "Window",
    "__version__",
    "check_schema",
    "create_async_engine",
    "create_engine",
    "current_revision",
    "disable_row_level_security",
    "distribute",
    "downgrade",
    "enable_row_level_security",
    "errors",
    "install_slow_statement_log",
    "migrate",
    "safe_url",
    "tokens",
]
