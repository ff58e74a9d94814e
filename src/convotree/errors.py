"""The one exception tree of convotree.

Every error convotree raises on purpose is a ``ConvotreeError``; catching that one
class is enough to handle all of them. Errors that come from bad input are raised
*before* anything is written, or roll their transaction back, so the database is
always left exactly as it was.

::

    ConvotreeError
    ├── ConfigurationError            the store cannot be used as configured
    │   ├── SchemaOutOfDate           database missing or behind the migrations
    │   └── EncodingUnavailable       tiktoken could not load an encoding (offline)
    ├── NotFound (also LookupError)
    │   ├── ConversationNotFound      unknown id, or another tenant's
    │   └── NodeNotFound
    ├── InvalidInput (also ValueError)
    │   ├── InvalidArgument           an id, time, count or option of the wrong type
    │   │                             or out of range
    │   ├── ConversationExists        create_conversation(id=...) with an id in use
    │   ├── InvalidRole
    │   ├── InvalidKind
    │   ├── InvalidContent            NUL, lone surrogate, wrong shape
    │   ├── ContentTooLarge
    │   ├── InvalidParent             parent in another conversation, under a summary
    │   ├── ToolCallMismatch          tool result that answers no pending call, or a
    │   │                             turn that leaves calls unanswered
    │   ├── InvalidImport             an import file (or one record in it) cannot be read
    │   ├── UnknownFormat             an import/export format name convotree does not know
    │   ├── UnknownRevision           a schema revision the migrations do not have
    │   └── NotExportable             a conversation the chosen format cannot express
    ├── ContextError                  no valid context can be assembled
    │   ├── UnknownModel              no context window known: pass ``budget=``
    │   ├── BudgetExceeded            the kept-always messages or the leaf do not fit
    │   └── IncompleteToolCalls       the leaf is a tool call still missing results
    ├── ChatError                     the chat helper cannot go on as asked
    │   ├── ToolStepLimit             a tool loop reached its step limit
    │   ├── UnreadableAnswer          the API's answer (or a stream event) is not JSON
    │   │                             or not a completion: nothing of it stored
    │   └── IncompleteAnswer          a stream ended before its final event: what
    │                                 arrived is stored marked incomplete (answer_id)
    └── StoreError                    the database refused an operation (driver error
        │                             translated at one boundary, cause chained)
        ├── StoreBusy                 a lock or a pooled connection did not come in
        │                             time: nothing was written, retry later
        ├── StoreUnavailable          the connection was lost or the server is down:
        │                             nothing was written (or it committed wholly)
        └── MigrationError            a migration step failed; the run was rolled back

Errors of the OpenAI API itself (``openai.RateLimitError``, ``openai.APIStatusError``,
connection errors) are not wrapped: they reach the caller as the ``openai`` exceptions
users already handle, and the store is left consistent (see ``convotree.Chat``).

Leaves carry keyword-only context (``conversation_id=``, ``node_id=``) so callers can
react without parsing messages.
"""

from __future__ import annotations

import uuid
from typing import Any

__all__ = [
    "BudgetExceeded",
    "ConfigurationError",
    "ContentTooLarge",
    "ConversationExists",
    "ChatError",
    "ContextError",
    "EncodingUnavailable",
    "ConversationNotFound",
    "ConvotreeError",
    "IncompleteToolCalls",
    "InvalidArgument",
    "InvalidContent",
    "InvalidImport",
    "InvalidInput",
    "InvalidKind",
    "InvalidParent",
    "InvalidRole",
    "MigrationError",
    "NodeNotFound",
    "NotExportable",
    "NotFound",
    "SchemaOutOfDate",
    "StoreBusy",
    "StoreError",
    "StoreUnavailable",
    "ToolCallMismatch",
    "IncompleteAnswer",
    "ToolStepLimit",
    "UnreadableAnswer",
    "UnknownFormat",
    "UnknownModel",
    "UnknownRevision",
]


class ConvotreeError(Exception):
    """Root of every error convotree raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        conversation_id: uuid.UUID | None = None,
        node_id: uuid.UUID | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message)
        self.conversation_id = conversation_id
        self.node_id = node_id
        self.context = context


class ConfigurationError(ConvotreeError):
    """The store cannot work with the engine or options it was given."""


class SchemaOutOfDate(ConfigurationError):
    """The database has no convotree schema, or not the one this version expects.

    The message says the exact command that fixes it.
    """


class EncodingUnavailable(ConfigurationError):
    """tiktoken could not load an encoding: it downloads each one once, and this machine
    could not reach the download (set ``TIKTOKEN_CACHE_DIR`` to a folder holding it).

    The message gives the whole fix; ``__cause__`` is tiktoken's own error.
    """


class NotFound(ConvotreeError, LookupError):
    """Something that was asked for does not exist (for this tenant)."""


class ConversationNotFound(NotFound):
    """No conversation with that id for this store's tenant."""


class NodeNotFound(NotFound):
    """No node with that id in that conversation."""


class InvalidInput(ConvotreeError, ValueError):
    """The caller passed something convotree will not store."""


class InvalidArgument(InvalidInput):
    """An argument of a call has the wrong type or an out-of-range value: an id that is
    not a UUID, a naive or non-datetime timestamp, a count that is not a non-negative
    integer of 32 bits, a limit below 1, an option value the call does not know.

    Raised before any statement runs: the same input gets the same error on SQLite and
    PostgreSQL."""


class ConversationExists(InvalidInput):
    """``create_conversation(id=...)`` was given an id that is already in use.

    The same error, with the same message, whether the id belongs to this tenant or to
    another one, so that creating conversations reveals nothing about other tenants
    beyond "this id is taken"."""


class InvalidRole(InvalidInput):
    """Role is not one of system, developer, user, assistant, tool."""


class InvalidKind(InvalidInput):
    """Kind is not one of message, summary."""


class InvalidContent(InvalidInput):
    """Content (or a JSON field) has the wrong shape or characters no backend can hold."""


class ContentTooLarge(InvalidInput):
    """A message is larger than the store's ``max_message_bytes``."""


class InvalidParent(InvalidInput):
    """The parent is in another conversation, or cannot have children."""


class ToolCallMismatch(InvalidInput):
    """Tool results and tool calls do not pair up as the OpenAI APIs require.

    OpenAI rejects a ``tool`` message that does not follow the assistant message
    that made the call, and an assistant ``tool_calls`` message whose calls are not
    all answered before the next turn. convotree refuses to store either shape.
    """


class InvalidImport(InvalidInput):
    """An import file, or one record in it, is not what its format promises.

    Raised for the whole file when it is not JSON at all (nothing can be trusted, so
    nothing is written). A broken conversation inside a readable file (a cycle, a
    missing parent, a duplicate id, a bad field) does not raise: it becomes an
    ``ImportFailure`` in the ``ImportResult`` naming the record and why, and the
    other conversations of the file still import.
    """


class UnknownFormat(InvalidInput):
    """The format name is not one of ``convotree.interchange.FORMATS``.

    Refused before the file is opened, so a typo never half-imports anything.
    """


class UnknownRevision(InvalidInput):
    """``migrate``/``downgrade`` was given a revision that the migrations do not have."""


class NotExportable(InvalidInput):
    """The conversation cannot be written in the chosen format without losing its shape.

    For example an OpenAssistant tree has exactly one prompt and only prompter and
    assistant messages; a conversation with two roots or a system message is refused
    rather than silently cut (use the ``native`` format for a lossless copy).
    """


class ContextError(ConvotreeError):
    """No valid context can be assembled for the request."""


class UnknownModel(ContextError):
    """The model's context window is unknown; pass ``budget=`` or register the model."""


class BudgetExceeded(ContextError):
    """The messages that must always be sent do not fit in the budget."""


class IncompleteToolCalls(ContextError):
    """The leaf is a tool call whose results are not all stored yet.

    OpenAI rejects a request whose last assistant message calls tools without every
    result following it; append the results, then assemble from the last one.
    """


class ChatError(ConvotreeError):
    """The chat helper cannot go on as asked (its API errors stay ``openai``'s own)."""


class ToolStepLimit(ChatError):
    """A tool loop made ``max_steps`` rounds and the model still calls tools.

    The last answer (with its unanswered calls) is stored and available as ``node``;
    add its results and call ``Chat.reply``, or raise the limit.
    """

    def __init__(self, message: str, *, node: Any = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.node = node


class UnreadableAnswer(ChatError):
    """The API answered with something that is not an answer: not JSON (an HTML error
    page from a proxy), not a completion, or a stream event that is not JSON. Nothing
    of it was stored; the user's message was, and ``Chat.reply`` retries the turn."""


class IncompleteAnswer(ChatError):
    """A streamed answer ended before its last event (no finish reason, no
    ``response.completed``). What arrived is stored with ``metadata["incomplete"]``
    (``answer_id``, None when nothing arrived); ``Chat.reply`` on the user's message
    asks again."""

    def __init__(self, message: str, *, answer_id: Any = None, **context: Any) -> None:
        super().__init__(message, answer_id=answer_id, **context)
        self.answer_id = answer_id


class StoreError(ConvotreeError):
    """The database refused an operation; ``__cause__`` holds the driver error.

    ``retryable`` says whether the same call may succeed later unchanged (``StoreBusy``,
    ``StoreUnavailable``); a refusal of the data itself is not."""

    retryable = False


class StoreBusy(StoreError):
    """The database was busy: a lock held by another writer beyond the busy timeout
    (SQLite), a lock or statement timeout (PostgreSQL), or no pooled connection free
    within the pool's timeout. Nothing was written; the call can be retried as is."""

    retryable = True


class StoreUnavailable(StoreError):
    """The connection to the database was lost (server restarted, connection killed,
    network down). The transaction did not commit, unless the loss came after its
    COMMIT was sent: a retry of a write may then find it done. The store itself stays
    usable: the next call takes a fresh connection."""

    retryable = True


class MigrationError(StoreError):
    """A migration step failed. The run is one transaction, so the database is still at
    the revision it had before (``context["revision"]``); ``__cause__`` says why."""
