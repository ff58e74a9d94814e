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

import concurrent.futures
import functools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import _openai_models
from ._openai_models import ModelSpec
from .errors import EncodingUnavailable, InvalidInput

__all__ = [
    "DEFAULT_ENCODING",
    "ModelSpec",
    "unknown_model_reason",
    "count_messages",
    "image_tokens",
    "media_tokens",
    "model_spec",
    "register_model",
    "tools_tokens",
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
#: Framing of one tool call inside an assistant message, fitted to recorded API usage
#: (see :func:`tool_calls_tokens`).
TOKENS_PER_TOOL_CALL = 8

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
    if not isinstance(model, str):
        raise InvalidInput(f"a model name is a string, not {model!r}")
    spec = model_spec(model)
    if spec is not None:
        return spec.encoding
    name = model.removeprefix("ft:").split(":", 1)[0].lower()
    if name in _CL100K_EXACT or (
        name.startswith(_CL100K_PREFIXES) and not name.startswith(("gpt-4o", "gpt-4.1"))
    ):
        return "cl100k_base"
    return DEFAULT_ENCODING


#: Where tiktoken fetches each encoding the first time (then it caches the file).
ENCODING_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}


#: tiktoken's own encodings, known without importing it (a store opens fast).
_BUILTIN_ENCODINGS = frozenset({"gpt2", "r50k_base", "p50k_base", "p50k_edit", "cl100k_base",
                                "o200k_base", "o200k_harmony"})


def check_encoding_name(name: Any) -> str:
    """Refuse an encoding tiktoken does not have, when a store is made (not at its first
    message); the name is only looked up, nothing is loaded or downloaded."""
    from .errors import ConfigurationError

    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"encoding must be a tiktoken encoding name, not {name!r}")
    if name in _BUILTIN_ENCODINGS:
        return name
    import tiktoken

    if name not in tiktoken.list_encoding_names():
        raise ConfigurationError(
            f"unknown tiktoken encoding {name!r}; known: "
            f"{', '.join(sorted(tiktoken.list_encoding_names()))}")
    return name


@functools.cache
def _encoding(name: str) -> Any:
    import tiktoken

    if name not in tiktoken.list_encoding_names():
        raise InvalidInput(f"unknown tiktoken encoding {name!r}; known: "
                           f"{', '.join(sorted(tiktoken.list_encoding_names()))}")
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # network errors (requests', OSError), a bad cached file
        raise EncodingUnavailable(encoding_hint(name, exc), encoding=name) from exc


def encoding_hint(name: str, exc: BaseException) -> str:
    """Why an encoding could not be loaded, and the whole way to fix it."""
    cause = " ".join(str(exc).split()) or type(exc).__name__
    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    where = (f"TIKTOKEN_CACHE_DIR={cache} does not hold it" if cache
             else "TIKTOKEN_CACHE_DIR is not set")
    url = ENCODING_URLS.get(name, "its tiktoken download address")
    return (f"the tiktoken encoding {name!r} could not be loaded ({type(exc).__name__}: "
            f"{cause}). convotree needs it to count tokens; tiktoken downloads it once "
            f"from {url} and caches it. On a machine without internet access, put the "
            f"encoding files in a folder and set TIKTOKEN_CACHE_DIR to that folder "
            f"({where}).")


def count_text(text: str, encoding: str) -> int:
    """Tokens of ``text`` under ``encoding``; special-token strings count as text."""
    if not text:
        return 0
    if not isinstance(text, str):
        raise InvalidInput(f"count_text counts a string, not a {type(text).__name__}")
    try:
        text.encode("utf-8")   # C speed, next to tokenizing; tiktoken would accept it
    except UnicodeEncodeError as exc:   # a lone surrogate: no text the API can take
        raise InvalidInput("the text contains a lone surrogate and is not valid UTF-8"
                           ) from exc
    return len(_encoding(encoding).encode_ordinary(text))


@functools.lru_cache(maxsize=4096)
def _count_short(text: str, encoding: str) -> int:
    """``count_text`` for the few strings that recur in every message (roles)."""
    return count_text(text, encoding)


def count_texts(texts: Sequence[str], encoding: str) -> list[int]:
    """Token counts of many texts at once, split across threads.

    tiktoken releases the GIL while it encodes, so on several cores a batch is counted
    in parallel. One pool lives for the process (tiktoken's own ``encode_ordinary_batch``
    starts a new pool per call, which costs more than it saves on small batches), and
    small batches are counted inline.
    """
    enc = _encoding(encoding)
    workers = _pool_size()
    if workers < 2 or len(texts) < 16:
        return [len(enc.encode_ordinary(text)) for text in texts]
    step = -(-len(texts) // workers)
    chunks = [texts[i:i + step] for i in range(0, len(texts), step)]

    def count(chunk: Sequence[str]) -> list[int]:
        return [len(enc.encode_ordinary(text)) for text in chunk]

    return [n for counted in _pool().map(count, chunks) for n in counted]


def _pool_size() -> int:
    return min(os.cpu_count() or 1, 8)


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(_pool_size(),
                                                 thread_name_prefix="convotree-tokens")


# A forked child inherits the pool object but not its threads (gunicorn --preload,
# multiprocessing, Celery prefork): it must start its own, or counting would wait forever.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.cache_clear)


def tool_calls_tokens(tool_calls: Iterable[Mapping[str, Any]] | None, encoding: str) -> int:
    """Estimated tokens of an assistant message's ``tool_calls``.

    OpenAI publishes no exact rule for calls inside messages. The estimate is, per
    call, :data:`TOKENS_PER_TOOL_CALL` plus the tokens of the function name and of its
    arguments string (for ``custom`` tools: name and input). The constant was fitted
    on recorded Chat Completions traffic (gpt-4o, gpt-4o-mini, gpt-4.1-mini): every
    call-and-result pair was billed 5 tokens more than name + arguments + the two
    messages' base cost, whatever the length of the call id, so call ids are not
    counted (also not the ``tool_call_id`` of the result).
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
    """Tokens a chat message costs beyond its content, by OpenAI's counting rule.

    ``tool_call_id`` is accepted for completeness but costs nothing: recorded API
    usage shows results billed the same whatever the id's length.
    """
    total = TOKENS_PER_MESSAGE + _count_short(role, encoding)
    if name:
        total += TOKENS_PER_NAME + count_text(name, encoding)
    return total + tool_calls_tokens(tool_calls, encoding)


# --- models ------------------------------------------------------------------------


def register_model(name: str, spec: ModelSpec) -> None:
    """Teach convotree a model (or override one): dated and fine-tuned ids of ``name``
    (``name-2025-01-01``, ``ft:name:org::id``) resolve to it too."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"a model name is a non-empty string, not {name!r}")
    if not isinstance(spec, ModelSpec):
        raise InvalidInput("register_model takes a tokens.ModelSpec")
    for field in ("context_window", "max_input", "max_output"):
        value = getattr(spec, field)
        if (value is not None or field == "context_window") and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidInput(f"ModelSpec.{field} must be a positive integer, not {value!r}")
    if spec.encoding not in _BUILTIN_ENCODINGS:
        from .errors import ConfigurationError

        try:
            check_encoding_name(spec.encoding)
        except ConfigurationError as exc:
            raise InvalidInput(str(exc)) from exc
    _openai_models.MODELS[name.lower()] = spec
    _model_spec.cache_clear()


def model_spec(model: str) -> ModelSpec | None:
    """The spec of a model, by the documented resolution rule of
    :mod:`convotree._openai_models` (exact id, dated snapshot, newer version of a
    numbered family, ``name-`` prefix, fine-tunes by their base); None when unknown
    or excluded (:func:`unknown_model_reason` says why)."""
    if not isinstance(model, str):
        raise InvalidInput(f"a model name is a string, not {model!r}")
    return _model_spec(model)


@functools.lru_cache(maxsize=1024)
def _model_spec(model: str) -> ModelSpec | None:
    return _openai_models.resolve(model)


model_spec.cache_clear = _model_spec.cache_clear  # type: ignore[attr-defined]


def unknown_model_reason(model: str) -> str:
    """Why ``model_spec(model)`` is None: excluded (with the reason), or not known."""
    reason = _openai_models.excluded_reason(model)
    return reason if reason is not None else "convotree's model table does not know it"


# --- images, audio, files ----------------------------------------------------------

#: Largest image OpenAI's high-detail rule can produce (2048 square, short side 768).
_WORST_CASE_IMAGE = (768, 2048)
#: Documented estimates for parts OpenAI publishes no token rule for.
AUDIO_TOKENS_PER_SECOND = 10
FILE_BYTES_PER_TOKEN = 32
FILE_TOKENS_WHEN_UNKNOWN = 1_000


def image_tokens(width: int | None, height: int | None, detail: str, rule: tuple[str, float, float]
                 ) -> int:
    """Tokens of one image by OpenAI's published rule ("Images and vision: calculating costs").

    Tile models: ``low`` detail costs the base; otherwise the image is scaled to fit
    2048x2048, then its short side to 768, and each 512px tile costs ``tile`` on top of
    the base. Patch models: 32px patches (at most 1536, after scaling down), times the
    model's multiplier. An image of unknown size is priced at the worst case.
    """
    kind, a, b = rule
    if width is None or height is None:
        width, height = _WORST_CASE_IMAGE
    if kind == "patch":
        w, h = float(width), float(height)
        if math.ceil(w / 32) * math.ceil(h / 32) > 1536:
            shrink = math.sqrt(32 * 32 * 1536 / (w * h))
            w, h = w * shrink, h * shrink
            fit = math.floor(w / 32) / (w / 32)
            w, h = w * fit, h * fit
        patches = min(math.ceil(w / 32) * math.ceil(h / 32), 1536)
        return math.ceil(patches * a)
    if detail == "low":
        return int(a)
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return int(a + b * tiles)


def media_tokens(facts: Iterable[Mapping[str, Any]] | None, spec: ModelSpec | None
                 ) -> tuple[int, bool]:
    """Tokens of a message's images, audio and files; and whether any is an estimate.

    Images are priced by the published rule (an estimate only when their size is
    unknown); audio at :data:`AUDIO_TOKENS_PER_SECOND` and files at one token per
    :data:`FILE_BYTES_PER_TOKEN` bytes are estimates, always flagged. (A recorded
    request with a 13 KB one-page PDF was billed about 220 tokens for it; 32 bytes a
    token is about twice that, erring on the safe side of the budget.)
    """
    rule = spec.image_rule if spec else _openai_models.DEFAULT_IMAGE_RULE
    total, estimated = 0, False
    for fact in facts or ():
        if fact["type"] == "image":
            total += image_tokens(fact["width"], fact["height"], fact["detail"], rule)
            estimated |= fact["width"] is None
        elif fact["type"] == "audio":
            total += math.ceil(float(fact["seconds"]) * AUDIO_TOKENS_PER_SECOND)
            estimated = True
        else:
            size = fact.get("bytes")
            total += math.ceil(size / FILE_BYTES_PER_TOKEN) if size else FILE_TOKENS_WHEN_UNKNOWN
            estimated = True
    return total, estimated


# --- tool definitions --------------------------------------------------------------


def tools_tokens(tools: Sequence[Mapping[str, Any]] | None, encoding: str) -> int:
    """Tokens of the ``tools`` definitions sent with a request.

    The OpenAI Cookbook's rule (``num_tokens_for_tools``): per function 7 tokens (10
    for cl100k models) plus ``name:description``; 3 for a parameter block, and per
    property 3 plus ``name:type:description``, enums -3 plus 3 and the value per item;
    12 to close. Nested objects are counted by their top level only: an estimate there.
    Accepts Chat Completions (``{"type": "function", "function": {...}}``) and
    Responses (``{"type": "function", "name": ...}``) shapes.
    """
    if not tools:
        return 0
    func_init = 10 if encoding == "cl100k_base" else 7
    total = 0
    for tool in tools:
        function = tool.get("function", tool)
        description = str(function.get("description") or "").removesuffix(".")
        total += func_init + count_text(f"{function.get('name', '')}:{description}", encoding)
        properties = (function.get("parameters") or {}).get("properties") or {}
        if properties:
            total += 3
            for key, prop in properties.items():
                total += 3
                for item in prop.get("enum") or ():
                    total += 3 + count_text(str(item), encoding)
                if prop.get("enum"):
                    total -= 3
                prop_description = str(prop.get("description") or "").removesuffix(".")
                total += count_text(f"{key}:{prop.get('type', '')}:{prop_description}", encoding)
    return total + 12


# --- the reference count -----------------------------------------------------------


def count_messages(
    messages: Sequence[Mapping[str, Any]],
    *,
    model: str,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Prompt tokens of a Chat Completions request, counted from scratch.

    This re-tokenizes everything (use it to check, not on a hot path): the same rule
    convotree applies from the counts it stored at insert, so the two always agree.
    """
    from ._media import media_facts

    if not isinstance(model, str) or not model:
        raise InvalidInput(f"model must be a model name, not {model!r}")
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
        raise InvalidInput("messages must be a list of Chat Completions messages")
    if tools is not None and (isinstance(tools, str | bytes | Mapping) or not all(
            isinstance(tool, Mapping) for tool in tools)):
        raise InvalidInput("tools must be a list of tool definitions")
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidInput(f"message {index} must be an object with a string 'role'")
        if content is not None and not isinstance(content, str | list):
            raise InvalidInput(f"message {index}: content must be a string or a list of "
                               "parts")
    spec = model_spec(model)
    encoding = spec.encoding if spec else encoding_for_model(model)
    total = REPLY_PRIMING_TOKENS + tools_tokens(tools, encoding)
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else None
        texts = [content] if isinstance(content, str) else [
            str(p.get("text", p.get("refusal", ""))) for p in parts or ()
            if p.get("type") in ("text", "input_text", "output_text", "refusal")]
        total += sum(count_text(text, encoding) for text in texts)
        total += message_overhead(
            role=str(message["role"]), name=message.get("name"),
            tool_calls=message.get("tool_calls"), tool_call_id=message.get("tool_call_id"),
            encoding=encoding,
        )
        total += media_tokens(media_facts(parts), spec)[0]
    return total
