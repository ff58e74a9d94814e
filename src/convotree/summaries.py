"""Summary nodes: what a summarizer is, the two that ship, and where to cut.

A summary is a node (``kind='summary'``) hanging under the last node it covers. It
covers everything from the root down to that node: it extends its base summary (the
previous one on the path, ``summary_base_id``) with the messages after it, so a
summarizer never reads the whole history again. Every branch below the covered node
reuses it. The assembler sends it as a ``system`` message, after the system, developer
and pinned messages and before the recent messages: ``system`` because every chat
model accepts it (``developer`` is refused by older models) and because a summary is
context the application supplies, not something the user said.

Pure, apart from ``OpenAISummarizer`` calling the caller's own ``openai`` client, and
the log: ``convotree.summaries`` gets an INFO record when a summary is made or a
summarizer fails (ids, token counts, the summarizer's name, the error's type and HTTP
status), DEBUG for sizes; never the text of a message or summary.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from . import tokens
from ._log import get_logger
from .context import Candidate, Context
from .errors import ChatError, InvalidArgument

__all__ = [
    "SUMMARY_HEADER",
    "AsyncOpenAISummarizer",
    "ExtractiveSummarizer",
    "OpenAISummarizer",
    "SummaryOptions",
    "SummaryRequest",
    "SummaryResult",
    "Summarizer",
]

logger = get_logger("summaries")

#: Opens every summary's text: the model reads it as what it is.
SUMMARY_HEADER = "Summary of the earlier conversation:\n"

DEFAULT_PROMPT = (
    "You maintain the running summary of a conversation between a user and an AI "
    "assistant. You get the previous summary (if any) and the messages that came after "
    "it. Write the new summary so that the conversation can continue from it alone. "
    "Keep: the user's goals and preferences, decisions made, facts, names, numbers, "
    "dates, code identifiers, tool results that matter, and open questions. Drop "
    "greetings and repetition. Do not invent anything. Write in the conversation's "
    "language, as compact notes. Output only the summary."
)


@dataclass(frozen=True, slots=True)
class SummaryOptions:
    """When and how far to summarize.

    A new summary is made only when the messages after the deepest summary no longer
    fit. It then covers all but the newest ``keep_recent`` fraction of the budget left
    for messages, so many more turns fit before the next one (hysteresis: with 0.5, a
    summary every ~budget/2 tokens of conversation, never one per turn).
    ``max_summary_tokens`` caps a summary (default: 1,000 or a fifth of the budget,
    whichever is smaller).
    """

    keep_recent: float = 0.5
    max_summary_tokens: int | None = None

    def __post_init__(self) -> None:
        # Checked when made, so a bad option fails where it is written (not as a
        # comparison error deep in the assembler, and only once a summary is due).
        from . import _args

        recent = self.keep_recent
        if isinstance(recent, bool) or not isinstance(recent, int | float) or not (
                0 <= recent <= 1):
            raise InvalidArgument(f"keep_recent must be a fraction from 0 to 1, not "
                                  f"{recent!r}")
        _args.count(self.max_summary_tokens, "max_summary_tokens", minimum=1,
                    optional=True)

    def summary_cap(self, budget: int) -> int:
        if self.max_summary_tokens is not None:
            return self.max_summary_tokens
        return max(16, min(1_000, budget // 5))


@dataclass(frozen=True, slots=True)
class SummaryRequest:
    """What a summarizer is asked to fold together."""

    previous: str | None
    messages: Sequence[dict[str, Any]]
    max_tokens: int
    encoding: str


@dataclass(frozen=True, slots=True)
class SummaryResult:
    """A summarizer's answer, with the usage it cost (for reporting)."""

    text: str
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


@runtime_checkable
class Summarizer(Protocol):
    """Anything with a ``name`` and ``summarize(request) -> SummaryResult``.

    ``summarize`` may be a coroutine function (``async def``): ``AsyncStore`` awaits it
    (the sync ``Store`` refuses it with ``ConfigurationError``). Raise to signal
    failure: the assembler then prunes without a new summary, says so in the report,
    and stores nothing.
    """

    name: str

    def summarize(self, request: SummaryRequest) -> SummaryResult | Awaitable[SummaryResult]:
        ...


def transcript(messages: Sequence[dict[str, Any]]) -> str:
    """Messages as plain ``role: text`` lines, tool calls and results included."""
    lines = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", f"[{p.get('type')}]")) for p in content)
        label = message["role"] + (f" ({message['name']})" if message.get("name") else "")
        if content:
            lines.append(f"{label}: {content}")
        for call in message.get("tool_calls") or ():
            body = call.get("function") or call.get("custom") or {}
            arguments = body.get("arguments", body.get("input", ""))
            lines.append(f"{label} called {body.get('name')}({arguments})")
    return "\n".join(lines)


def _user_prompt(request: SummaryRequest) -> str:
    previous = request.previous.removeprefix(SUMMARY_HEADER) if request.previous else "(none)"
    return (f"Previous summary:\n{previous}\n\nMessages since then:\n"
            f"{transcript(request.messages)}\n\nWrite the new summary in at most "
            f"{request.max_tokens * 3 // 4} words.")


class ExtractiveSummarizer:
    """An offline summarizer: no model, no network, deterministic.

    Keeps the previous summary's notes and, per new message, its first sentence (which
    in chat is usually the point), then drops the oldest notes until the summary fits
    ``max_tokens``. Good for the demo, tests and as a fallback; an LLM summarizer
    keeps far more meaning per token.
    """

    name = "extractive"

    def summarize(self, request: SummaryRequest) -> SummaryResult:
        notes = []
        if request.previous:
            notes = request.previous.removeprefix(SUMMARY_HEADER).splitlines()
        for line in transcript(request.messages).splitlines():
            role, _, text = line.partition(": ")
            first = text.replace("\n", " ").split(". ")[0].strip()
            words = first.split()
            if len(words) > 40:
                first = " ".join(words[:40]) + " …"
            if first:
                notes.append(f"- {role}: {first}")
        text = "\n".join(notes)
        while notes and tokens.count_text(SUMMARY_HEADER + text, request.encoding) > (
                request.max_tokens):
            notes.pop(0)
            text = "\n".join(notes)
        return SummaryResult(text=text or "(nothing to keep)", model=self.name)


class OpenAISummarizer:
    """Summarizes with the caller's ``openai.OpenAI`` client (Chat Completions by
    default, or ``api="responses"``, which is called with ``store=False``).

    Errors (HTTP 500, 429, timeouts, ...) propagate as the ``openai`` exceptions; the
    assembler catches them, prunes without a new summary and reports the error. The
    client's own retry settings apply. An answer that is not a completion (a body that
    is not JSON, no choices, no text) is a ``ChatError``, handled the same way: an empty
    summary would hide the history it claims to cover. Each failure is logged at INFO
    (type and HTTP status only). ``AsyncOpenAISummarizer`` is the same with an
    ``openai.AsyncOpenAI`` client, for ``AsyncStore`` / ``AsyncChat``.
    """

    def __init__(self, client: Any, model: str = "gpt-4o-mini", *,
                 prompt: str = DEFAULT_PROMPT, api: str = "chat",
                 **create_kwargs: Any) -> None:
        if api not in ("chat", "responses"):
            raise InvalidArgument(f"api must be 'chat' or 'responses', not {api!r}")
        if not isinstance(model, str) or not model:
            raise InvalidArgument(f"model must be a model name, not {model!r}")
        if not isinstance(prompt, str):
            raise InvalidArgument("prompt must be a string")
        self.client = client
        self.model = model
        self.prompt = prompt
        self.api = api
        self.create_kwargs = create_kwargs
        self.name = f"openai:{model}"

    def _call(self, request: SummaryRequest) -> Any:
        """The client call for one summary (its result, or a coroutine for async
        clients): the request shape lives here, once for both summarizers."""
        user = _user_prompt(request)
        if self.api == "responses":
            return self.client.responses.create(
                model=self.model, instructions=self.prompt, input=user,
                max_output_tokens=request.max_tokens, store=False, **self.create_kwargs)
        return self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": self.prompt},
                      {"role": "user", "content": user}],
            max_completion_tokens=request.max_tokens, **self.create_kwargs)

    def _result(self, response: Any) -> SummaryResult:
        if isinstance(response, str | bytes):   # the client's answer to a non-JSON body
            raise ChatError("the summarizer's API answer is text, not JSON")
        usage = getattr(response, "usage", None)
        if self.api == "responses":
            text = getattr(response, "output_text", None)
            input_tokens = getattr(usage, "input_tokens", None)
            output_tokens = getattr(usage, "output_tokens", None)
        else:
            choices = getattr(response, "choices", None) or []
            message = getattr(choices[0], "message", None) if choices else None
            text = getattr(message, "content", None)
            input_tokens = getattr(usage, "prompt_tokens", None)
            output_tokens = getattr(usage, "completion_tokens", None)
        if not isinstance(text, str) or not text.strip():
            raise ChatError("the summarizer's API answer holds no summary text")
        return SummaryResult(text=text, model=getattr(response, "model", None),
                             input_tokens=input_tokens, output_tokens=output_tokens)

    def _log_request(self, request: SummaryRequest) -> None:
        logger.debug("summarizer %s: folding %d messages (previous summary: %s), at most "
                     "%d tokens", self.name, len(request.messages),
                     request.previous is not None, request.max_tokens)

    def _failed(self, exc: Exception) -> None:
        status = getattr(exc, "status_code", None)
        logger.info("summarizer %s failed: %s%s; the context is pruned without a new "
                    "summary", self.name, type(exc).__name__,
                    f" (HTTP {status})" if status else "")

    def summarize(self, request: SummaryRequest) -> SummaryResult:
        self._log_request(request)
        try:
            return self._result(self._call(request))
        except json.JSONDecodeError as exc:   # a 200 whose body is broken JSON
            self._failed(exc)
            raise ChatError("the summarizer's API answer is not valid JSON") from exc
        except Exception as exc:
            self._failed(exc)
            raise


class AsyncOpenAISummarizer(OpenAISummarizer):
    """``OpenAISummarizer`` with the caller's ``openai.AsyncOpenAI`` client: its
    ``summarize`` is a coroutine, which ``AsyncStore.context`` awaits (the same request
    and the same reading of the answer as the sync one)."""

    async def summarize(self, request: SummaryRequest) -> SummaryResult:  # type: ignore[override]
        self._log_request(request)
        try:
            return self._result(await self._call(request))
        except json.JSONDecodeError as exc:
            self._failed(exc)
            raise ChatError("the summarizer's API answer is not valid JSON") from exc
        except Exception as exc:
            self._failed(exc)
            raise


def log_outcome(context: Context, *, conversation_id: uuid.UUID, node_id: uuid.UUID,
                summarizer: str) -> None:
    """Log what ``Store.context`` did with a summarizer: a summary made (INFO), one
    reused (DEBUG), or a failure and the fallback (INFO: pruned, nothing written).

    Ids, token counts and the summarizer's name only: a summary's text is the
    conversation's content. The error is named by its type (the part of
    ``report.summary_error`` before the colon), never its message."""
    report = context.report
    if report.summary_error is not None:
        kind = report.summary_error.split(":", 1)[0]
        logger.info("no new summary for conversation %s at node %s: summarizer %s failed "
                    "(%s); pruned instead (%d of %d tokens, %d nodes dropped), nothing "
                    "written", conversation_id, node_id, summarizer, kind, context.tokens,
                    context.budget, report.dropped_count)
    elif report.summary_created:
        logger.info("summary %s made for conversation %s at node %s by %s: context %d of "
                    "%d tokens, %d nodes kept, %d covered or dropped", report.summary_id,
                    conversation_id, node_id, summarizer, context.tokens, context.budget,
                    report.kept_count, report.dropped_count)
    elif report.summary_id is not None:
        logger.debug("summary %s reused for conversation %s at node %s: context %d of %d "
                     "tokens", report.summary_id, conversation_id, node_id, context.tokens,
                     context.budget)


def plan_cut(suffix: Sequence[Candidate], room: int, keep_recent: float) -> int | None:
    """Depth of the last node a new summary should cover, or None if nothing to cover.

    Keeps, from the leaf up, whole units (a tool call with its results is one) while
    they fit in ``keep_recent`` of ``room``; the leaf's unit always stays. The cut is
    the node right above the kept run, so a summary never separates a tool call from
    its results.
    """
    budget = room * keep_recent
    index = len(suffix) - 1
    used, first = 0, True
    while index >= 0:
        start = index
        while start > 0 and suffix[start].role == "tool":
            start -= 1
        unit = suffix[start:index + 1]
        cost = sum(n.tokens for n in unit if not n.always_kept)
        if not first and used + cost > budget:
            break
        used += cost
        first = False
        index = start - 1
    if index < 0:
        return None
    return suffix[index].depth
