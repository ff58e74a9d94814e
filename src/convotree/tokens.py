"""Token counting: which encoding a model uses, and what a chat message costs.

Everything here is pure and cheap to import: encodings are loaded lazily, on the
first count, and cached. convotree counts each message once, when it is stored
(``token_count`` for the content, ``overhead_tokens`` for what the chat format adds
around it); assembling a context only sums those stored integers.

The per-message rule is OpenAI's published one for chat models (the OpenAI Cookbook,
"How to count tokens with tiktoken", ``num_tokens_from_messages``): every message costs
3 tokens plus the tokens of each of its string fields (role, content, name, ...), a
``name`` costs 1 more, and every reply is primed with 3 tokens. Tool calls inside
assistant messages are not covered by that rule; convotree estimates them as documented
in :func:`tool_calls_tokens`.

User text is tokenized as plain text: a string such as ``<|endoftext|>`` typed by a
user is counted as the characters it is, never as a special token (tiktoken raises on
it by default).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "DEFAULT_ENCODING",
    "REPLY_PRIMING_TOKENS",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "count_text",
    "encoding_for_model",
    "message_overhead",
    "tool_calls_tokens",
]

DEFAULT_ENCODING = "o200k_base"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
#: Estimated framing of one tool call inside an assistant message (id, type, braces).
TOKENS_PER_TOOL_CALL = 3

# Older model families that use cl100k_base; everything newer (gpt-4o, gpt-4.1,
# o-series, gpt-5, and unknown future models) uses o200k_base.
_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada")
_CL100K_EXACT = ("gpt-4",)


def encoding_for_model(model: str | None) -> str:
    """Name of the tiktoken encoding a model uses; ``o200k_base`` when unknown.

    Fine-tuned ids (``ft:gpt-4o-mini:org::id``) resolve by their base model.
    """
    if not model:
        return DEFAULT_ENCODING
    name = model.removeprefix("ft:").split(":", 1)[0].lower()
    if name in _CL100K_EXACT or (
        name.startswith(_CL100K_PREFIXES) and not name.startswith(("gpt-4o", "gpt-4.1"))
    ):
        return "cl100k_base"
    return DEFAULT_ENCODING


@functools.cache
def _encoding(name: str) -> Any:
    import tiktoken

    return tiktoken.get_encoding(name)


def count_text(text: str, encoding: str) -> int:
    """Tokens of ``text`` under ``encoding``; special-token strings count as text."""
    if not text:
        return 0
    return len(_encoding(encoding).encode_ordinary(text))


def count_texts(texts: Sequence[str], encoding: str) -> list[int]:
    """Token counts of many texts at once (tiktoken batches them across threads)."""
    return [len(tokens) for tokens in _encoding(encoding).encode_ordinary_batch(list(texts))]


def tool_calls_tokens(tool_calls: Iterable[Mapping[str, Any]] | None, encoding: str) -> int:
    """Estimated tokens of an assistant message's ``tool_calls``.

    OpenAI publishes no exact rule for calls inside messages. The estimate is, per
    call, :data:`TOKENS_PER_TOOL_CALL` plus the tokens of the function name and of its
    arguments string (for ``custom`` tools: name and input). Compare it with the
    ``input_tokens`` the API reports to see its error for a model.
    """
    total = 0
    for call in tool_calls or ():
        body = call.get("function") or call.get("custom") or {}
        payload = body.get("arguments", body.get("input", ""))
        total += TOKENS_PER_TOOL_CALL + count_text(str(body.get("name", "")), encoding)
        total += count_text(payload if isinstance(payload, str) else str(payload), encoding)
    return total


def message_overhead(
    *,
    role: str,
    name: str | None,
    tool_calls: Sequence[Mapping[str, Any]] | None,
    tool_call_id: str | None,
    encoding: str,
) -> int:
    """Tokens a chat message costs beyond its content, by OpenAI's counting rule."""
    total = TOKENS_PER_MESSAGE + count_text(role, encoding)
    if name:
        total += TOKENS_PER_NAME + count_text(name, encoding)
    if tool_call_id:
        total += count_text(tool_call_id, encoding)
    return total + tool_calls_tokens(tool_calls, encoding)
