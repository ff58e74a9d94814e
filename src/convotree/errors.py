"""The one exception tree of convotree.

Every error convotree raises on purpose is a ``ConvotreeError``; catching that one
class is enough to handle all of them. Errors that come from bad input are raised
*before* anything is written, or roll their transaction back, so the database is
always left exactly as it was.

::

    ConvotreeError
    ├── ConfigurationError            the store cannot be used as configured
    │   └── SchemaOutOfDate           database missing or behind the migrations
    ├── NotFound (also LookupError)
    │   ├── ConversationNotFound      unknown id, or another tenant's
    │   └── NodeNotFound
    ├── InvalidInput (also ValueError)
    │   ├── InvalidRole
    │   ├── InvalidKind
    │   ├── InvalidContent            NUL, lone surrogate, wrong shape
    │   ├── ContentTooLarge
    │   ├── InvalidParent             parent in another conversation, under a summary
    │   └── ToolCallMismatch          tool result that answers no pending call, or a
    │                                 turn that leaves calls unanswered
    ├── ContextError                  no valid context can be assembled
    │   ├── UnknownModel              no context window known: pass ``budget=``
    │   ├── BudgetExceeded            the kept-always messages or the leaf do not fit
    │   └── IncompleteToolCalls       the leaf is a tool call still missing results
    └── StoreError                    the database refused an operation (driver error
                                      translated at one boundary, cause chained)

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
    "ContextError",
    "ConversationNotFound",
    "ConvotreeError",
    "IncompleteToolCalls",
    "InvalidContent",
    "InvalidInput",
    "InvalidKind",
    "InvalidParent",
    "InvalidRole",
    "NodeNotFound",
    "NotFound",
    "SchemaOutOfDate",
    "StoreError",
    "ToolCallMismatch",
    "UnknownModel",
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


class NotFound(ConvotreeError, LookupError):
    """Something that was asked for does not exist (for this tenant)."""


class ConversationNotFound(NotFound):
    """No conversation with that id for this store's tenant."""


class NodeNotFound(NotFound):
    """No node with that id in that conversation."""


class InvalidInput(ConvotreeError, ValueError):
    """The caller passed something convotree will not store."""


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


class StoreError(ConvotreeError):
    """The database refused an operation; ``__cause__`` holds the driver error."""
