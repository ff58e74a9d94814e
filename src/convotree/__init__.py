"""convotree: durable, branching conversation memory in SQL for stateless LLM APIs.

A conversation is a tree of messages stored as rows (SQLite or PostgreSQL); a leaf
names a whole branch. See README.md for a tour and docs/ for the design.
"""

from __future__ import annotations

from . import errors, tokens
from ._engine import create_engine
from ._migrate import check as check_schema
from ._migrate import current_revision, downgrade, migrate
from .chat import Chat, ChatStream, Turn
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
from .errors import ConvotreeError
from .models import Conversation, Node
from .store import Store
from .summaries import (
    ExtractiveSummarizer,
    OpenAISummarizer,
    Summarizer,
    SummaryOptions,
    SummaryRequest,
    SummaryResult,
)

__version__ = "0.1.0"

__all__ = [
    "Candidate",
    "Chat",
    "ChatStream",
    "Context",
    "ContextReport",
    "Conversation",
    "ConvotreeError",
    "DefaultPolicy",
    "DepthRange",
    "ExtractiveSummarizer",
    "Node",
    "OpenAISummarizer",
    "PruningPolicy",
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
    "create_engine",
    "current_revision",
    "downgrade",
    "errors",
    "migrate",
    "tokens",
]
