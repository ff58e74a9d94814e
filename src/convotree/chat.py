"""``Chat``: a stateful, branching chat on top of the stateless OpenAI APIs.

The helper only moves data: the user's message goes to the store (committed first,
so a failed call never loses what was typed), the store assembles the context for
the branch, the user's own ``openai`` client is called, and the answer is stored as
a node under the message it answers. Every operation is an append at the right
parent: regenerating, editing and forking copy no history.

What the wire looks like lives in ``_wire`` (pure, shared with the async helper).

Failures (see docs/chat.md, "Failures"): the ``openai`` client's own exceptions pass
through unwrapped, after its own retries (``max_retries``, ``retry-after``), which
this module never adds to or cuts short; what convotree detects itself (an answer that
is not JSON, not a completion, or a stream that ends before its final event) is a
``ChatError``. Either way the user's message stays stored, and an answer is stored
only whole, or (a stream that broke after some text) marked ``incomplete``.

Logging goes to ``convotree.chat``: INFO for a failed request (the error's type and
HTTP status, and what was kept: node ids), DEBUG for sizes. Never content, metadata
values, keys or request bodies: a record is something an operator may ship anywhere.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Required, TypedDict, Unpack

from . import _args, _io, _wire
from ._log import get_logger
from ._validate import Content, check_tool_definition
from .context import Context, PruningPolicy, resolve_budget
from .errors import (
    ChatError,
    ConfigurationError,
    IncompleteAnswer,
    InvalidArgument,
    InvalidContent,
    ToolCallMismatch,
    ToolStepLimit,
    UnreadableAnswer,
)
from .models import Conversation, Node
from .store import ConversationRef, Store
from .summaries import Summarizer, SummaryOptions

__all__ = ["Chat", "ChatOptions", "ChatStream", "Turn"]

logger = get_logger("chat")

#: Why a stream that stopped without its final event is incomplete.
_ENDED_EARLY = "the stream ended before the answer was complete"


class ChatOptions(TypedDict, total=False):
    """The keywords of ``Chat`` (and ``AsyncChat``): ``model`` is required."""

    model: Required[str]
    api: str
    budget: int | None
    reserve_output: int | None
    policy: PruningPolicy | None
    summarizer: Summarizer | None
    summary_options: SummaryOptions | None
    server_compaction: int | None


_OPTIONAL = tuple(name for name in ChatOptions.__annotations__ if name != "model")


@dataclass(frozen=True, slots=True)
class Turn:
    """One request to the API and what came of it (``Chat.last``).

    ``request`` is exactly what was passed to ``create()`` (the context in
    ``messages``/``input``); ``context`` holds its token count and pruning report;
    ``node`` is the stored answer (None when the call failed or a stream ended with
    nothing). ``incomplete`` is True when a stream ended early; ``error`` says why.
    """

    request: dict[str, Any]
    context: Context
    node: Node | None = None
    incomplete: bool = False
    error: str | None = None


def _check_options(store: Any, options: Mapping[str, Any]) -> None:
    """Chat's options, checked when it is made (not at the first request)."""
    from .store import Store
    from .summaries import SummaryOptions

    if store is not None and not isinstance(store, Store):   # None: AsyncChat's, set later
        raise ConfigurationError(f"Chat takes a convotree Store, not {type(store).__name__} "
                                 "(an AsyncStore belongs to AsyncChat)")
    model = options["model"]
    if not isinstance(model, str) or not model:
        raise InvalidArgument(f"model must be a model name such as 'gpt-4o-mini', not "
                              f"{model!r}")
    _args.count(options.get("budget"), "budget", optional=True)
    _args.count(options.get("reserve_output"), "reserve_output", optional=True)
    policy, summarizer = options.get("policy"), options.get("summarizer")
    if policy is not None and not callable(getattr(policy, "select", None)):
        raise InvalidArgument("policy must have a select(window, budget) method")
    if summarizer is not None and not callable(getattr(summarizer, "summarize", None)):
        raise InvalidArgument("summarizer must have a summarize(request) method")
    summary_options = options.get("summary_options")
    if summary_options is not None and not isinstance(summary_options, SummaryOptions):
        raise InvalidArgument("summary_options must be a convotree.SummaryOptions")


class Chat:
    """Send, stream, regenerate, edit and call tools on any branch of a conversation.

    ``client`` is the caller's own ``openai.OpenAI`` (so base URL, key, retries,
    Azure and compatible servers are theirs); ``model`` the default model;
    ``api="responses"`` switches from Chat Completions to the Responses API (called
    with ``store=False``: the state lives in this database, not OpenAI's). ``budget``,
    ``reserve_output``, ``policy``, ``summarizer`` and ``summary_options`` are passed
    to ``Store.context``; when ``reserve_output`` is None the answer's room is taken
    from ``max_completion_tokens`` / ``max_output_tokens`` / ``max_tokens``.

    ``server_compaction=N`` (Responses API only) lets OpenAI compact instead of
    convotree's summarizer: every request carries ``context_management=[{"type":
    "compaction", "compact_threshold": N}]``, and an answer whose output holds the
    compaction item is stored as ``compacted``: the next Responses context of its branch
    starts at that item (other branches are untouched, the transcript stays). The
    budget must leave room above ``N``: convotree prunes to the budget before the
    server sees the request, so with a budget at or below the threshold the server
    would never compact (refused with ``ChatError``).
    """

    def __init__(self, store: Store, client: Any, **options: Unpack[ChatOptions]) -> None:
        unknown = set(options) - set(ChatOptions.__annotations__)
        if unknown or "model" not in options:
            raise InvalidContent(f"Chat takes model= and {', '.join(_OPTIONAL)} "
                                 f"(unknown: {', '.join(sorted(unknown)) or 'none'})")
        model = options["model"]
        api = options.get("api", "chat")
        _check_options(store, options)
        summarizer = options.get("summarizer")
        server_compaction = options.get("server_compaction")
        if api not in _wire.APIS:
            raise InvalidContent(f"api must be one of {', '.join(_wire.APIS)}, not {api!r}")
        if server_compaction is not None:
            if api != "responses":
                raise ChatError("server_compaction needs api='responses': only the "
                                "Responses API compacts on the server")
            if summarizer is not None:
                raise ChatError("choose one: server_compaction (OpenAI compacts) or a "
                                "summarizer (convotree summarizes)")
            if (isinstance(server_compaction, bool) or not isinstance(server_compaction, int)
                    or server_compaction <= 0):
                raise ChatError(f"server_compaction is a token threshold (a positive "
                                f"integer), not {server_compaction!r}")
        self.server_compaction = server_compaction
        self.store = store
        self.client = client
        self.model = model
        self.api = api
        self.budget = options.get("budget")
        self.reserve_output = options.get("reserve_output")
        self.policy = options.get("policy")
        self.summarizer = summarizer
        self.summary_options = options.get("summary_options")
        #: The last request made and its outcome.
        self.last: Turn | None = None

    # --- turns ---------------------------------------------------------------------

    def send(self, /, at: Node | ConversationRef, content: Content, *,
             name: str | None = None, **create: Any) -> Node:
        """Store a user message under ``at`` and return the stored answer.

        ``at`` is a node (the message goes under it: a fork when it already has
        children) or a conversation (the message goes under its current node). Extra
        keywords go to ``create()`` (``temperature``, ``tools``, ``model``…).
        """
        self._settings(create)   # a bad model or option fails before anything is stored
        return self.reply(self._add_user(at, content, name), **create)

    def reply(self, /, node: Node, **create: Any) -> Node:
        """Get and store an answer to the branch ending at ``node``.

        Used after tool results, to retry after a failed call (the user message is
        already stored), or to answer a message stored some other way.
        """
        request, context, raw = self._send_request(node, create, stream=False)
        problem = _not_an_answer(raw, self.api)
        if problem is not None:
            error = UnreadableAnswer(f"the API's answer cannot be read: {problem}; nothing of it "
                              "was stored", conversation_id=node.conversation_id,
                              node_id=node.id)
            self._failed(request, context, node, error)
            raise error
        answer = (_wire.parse_chat_completion(raw) if self.api == "chat"
                  else _wire.parse_response(raw))
        stored = self._store(node, answer, context)
        self.last = Turn(request, context, stored)
        logger.debug("answer %s stored under %s (conversation %s): %d output tokens, "
                     "finish_reason %s", stored.id, node.id, node.conversation_id,
                     stored.output_tokens or 0, stored.finish_reason)
        return stored

    def regenerate(self, /, answer: Node, **create: Any) -> Node:
        """A new answer to the message ``answer`` answers: a sibling of ``answer``."""
        answer = _args.node(answer, "answer")
        self.store.node(answer.conversation_id, answer.id)   # NodeNotFound once deleted
        if answer.role != "assistant":
            raise InvalidContent(f"regenerate takes an assistant answer, not a {answer.role!r} "
                                 "message (chat.reply answers a message)",
                                 conversation_id=answer.conversation_id, node_id=answer.id)
        if answer.parent_id is None:
            raise InvalidContent("a root has no message to answer again",
                                 conversation_id=answer.conversation_id, node_id=answer.id)
        return self.reply(self.store.node(answer.conversation_id, answer.parent_id), **create)

    def edit(self, /, message: Node, content: Content, **create: Any) -> Node:
        """An edited prompt: a new sibling of ``message`` with ``content``, and its answer."""
        message = _args.node(message, "message")
        if message.role != "user":
            raise InvalidContent(f"edit takes a user message, not a {message.role!r} one",
                                 conversation_id=message.conversation_id, node_id=message.id)
        self._settings(create)
        edited = self.store.edit(message, content)
        return self.reply(edited, **create)

    def stream(self, /, at: Node | ConversationRef, content: Content, *,
               name: str | None = None, **create: Any) -> ChatStream:
        """Like ``send``, but the answer arrives as text deltas (see ``ChatStream``)."""
        self._settings(create)
        return self.stream_reply(self._add_user(at, content, name), **create)

    def stream_reply(self, /, node: Node, **create: Any) -> ChatStream:
        """Like ``reply``, streamed. The request is made here: API errors raise here."""
        request, context, raw = self._send_request(node, create, stream=True)
        state: _wire.ChatStreamState | _wire.ResponsesStreamState = (
            _wire.ChatStreamState() if self.api == "chat" else _wire.ResponsesStreamState())
        return ChatStream(self, node, request, context, raw, state)

    # --- compaction ----------------------------------------------------------------

    def compact(self, /, node: Node, *, method: str = "endpoint", **compact_options: Any) -> Node:
        """Compact the branch ending at ``node`` with OpenAI's compaction, now.

        ``method="endpoint"`` sends what a request from ``node`` would send to
        ``responses.compact`` (plus ``compact_options``, e.g. ``instructions``);
        ``method="trigger"`` sends it to ``responses.create`` with a final
        ``{"type": "compaction_trigger"}`` input item (``store=False``), which makes the
        server compact and answer with the compaction item only. Either way the result
        is stored as a summary node under ``node``: Responses requests from any branch
        below it then carry the compacted items instead of the history, like any other
        summary. The compaction item is opaque, so Chat Completions requests get the
        summary's text instead: the user messages the compaction keeps. A node holds
        at most one summary: if one is already there (a compaction, or a summarizer's),
        it is returned and nothing is sent. Returns the summary node.
        """
        if method not in ("endpoint", "trigger"):
            raise InvalidContent(f"method must be 'endpoint' or 'trigger', not {method!r}")
        existing = next((n for n in self.store.children(node) if n.kind == "summary"), None)
        if existing is not None:
            return existing
        model = str(compact_options.pop("model", self.model))
        reserve = self.reserve_output or 0
        resolve_budget(model, self.budget, reserve)
        context = self.store.context(
            node, model=model, budget=self.budget, reserve_output=reserve,
            format="responses", policy=self.policy)
        def call() -> Any:
            if method == "endpoint":
                compact = getattr(self.client.responses, "compact", None)
                if compact is not None:
                    return compact(model=model, input=context.messages, **compact_options)
                # an openai release older than the endpoint's method: same request
                return self.client.post(
                    "/responses/compact", cast_to=object,
                    body={"model": model, "input": context.messages, **compact_options})
            request = _wire.responses_request(
                model, [*context.messages, _wire.COMPACTION_TRIGGER], None, compact_options,
                stream=False)
            return self.client.responses.create(**request)

        try:
            result = _call_api(call, node)
        except Exception as exc:
            _log_failure("compaction request", exc, node, "nothing stored")
            raise
        items = _wire.compaction_items([_wire.dump(i) for i in _wire.get(result, "output", [])])
        if items is None:
            raise ChatError("the API returned no compaction item", node_id=node.id,
                            conversation_id=node.conversation_id)
        usage = _wire.responses_usage(_wire.get(result, "usage"))
        readable = items if method == "endpoint" else context.messages
        return self.store.add_summary(
            node, _wire.compaction_text(readable), base=context.report.summary_id,
            model=model, input_tokens=usage["input_tokens"],
            output_tokens=usage["output_tokens"], api_items=items,
            metadata={"summarizer": ("openai-compaction" if method == "endpoint"
                                     else "openai-compaction-trigger"),
                      "response_id": _wire.get(result, "id")})

    # --- tools ---------------------------------------------------------------------

    def add_tool_results(self, /, answer: Node, results: Mapping[str, Any]) -> list[Node]:
        """Store one tool node per call of ``answer`` (keyed by call id), in one transaction.

        Every call must be answered exactly once; results that are not strings are
        stored as JSON. Returns the tool nodes, in the order of the calls.
        """
        calls = _wire.pending_calls(answer.tool_calls)
        if not calls:
            raise ToolCallMismatch("this message calls no tools",
                                   conversation_id=answer.conversation_id, node_id=answer.id)
        missing = [c for c in calls if c not in results]
        extra = [c for c in results if c not in calls]
        if missing or extra:
            raise ToolCallMismatch(
                f"results must answer exactly the calls {calls}; missing {missing}, "
                f"unknown {extra}", conversation_id=answer.conversation_id, node_id=answer.id)
        return self.store.append_chain(answer, [
            {"role": "tool", "tool_call_id": call_id, "content": _result_text(results[call_id])}
            for call_id in calls])

    def run_tools(self, /, at: Node | ConversationRef, content: Content,
                  functions: Mapping[str, Callable[..., Any]], *, max_steps: int = 8,
                  tool_errors: str = "return", **create: Any) -> Node:
        """Send, then run the model's tool calls with ``functions`` until it answers.

        Each call's JSON arguments are passed as keywords to the function of that
        name; its return value (JSON if not a string) is the result. An unknown tool
        or an exception becomes an error result the model can read
        (``tool_errors="raise"`` lets the exception out instead; the calls then stay
        unanswered). After ``max_steps`` rounds of results, ``ToolStepLimit``.
        """
        if tool_errors not in ("return", "raise"):
            raise InvalidContent("tool_errors must be 'return' or 'raise'")
        node = self.send(at, content, **create)
        steps = 0
        while node.tool_calls:
            if steps >= max_steps:
                raise ToolStepLimit(
                    f"the model still calls tools after {max_steps} rounds",
                    conversation_id=node.conversation_id, node_id=node.id, node=node)
            results = {str(call["id"]): _run_call(call, functions, tool_errors)
                       for call in node.tool_calls}
            last = self.add_tool_results(node, results)[-1]
            node = self.reply(last, **create)
            steps += 1
        return node

    # --- internals -------------------------------------------------------------------

    def _add_user(self, at: Node | ConversationRef, content: Content, name: str | None
                  ) -> Node:
        if isinstance(at, Node):
            return self.store.append(at.conversation_id, parent=at, role="user",
                                     content=content, name=name)
        # Read where the conversation is now: a Conversation object the caller holds
        # may be stale.
        conversation_id = at.id if isinstance(at, Conversation) else at
        conversation = self.store.get_conversation(conversation_id)
        return self.store.append(conversation.id, parent=conversation.current_node_id,
                                 role="user", content=content, name=name)

    def _settings(self, create: Mapping[str, Any]) -> tuple[str, Any, int, dict[str, Any]]:
        """Model, tools, output reserve and the other create() options of one request.

        Checked before a turn stores anything: an unknown model without a budget, or
        ``stream=`` passed to ``send``, is a typed error that leaves the store as it was.
        """
        options = dict(create)
        model = options.pop("model", self.model)
        if not isinstance(model, str) or not model:
            raise InvalidArgument(f"model must be a model name, not {model!r}")
        tools = _args.tools(options.pop("tools", None))
        for index, tool in enumerate(tools or ()):
            check_tool_definition(tool, index)
        if "stream" in options:
            raise InvalidContent("use Chat.stream() for streaming, not stream=")
        reserve = (self.reserve_output if self.reserve_output is not None
                   else _wire.output_reserve(options))
        budget = resolve_budget(model, self.budget, reserve)
        extra = dict(options.get("extra_body") or {})
        given = "context_management" in options or "context_management" in extra
        if self.server_compaction is not None and not given:
            if budget <= self.server_compaction:
                raise ChatError(
                    f"server_compaction={self.server_compaction} is not below the prompt "
                    f"budget ({budget} tokens for {model}): convotree prunes to the budget "
                    "first, so the server would never compact; lower the threshold or "
                    "raise the budget")
            # In the request body as it is on the wire: openai releases before the
            # parameter existed send it just the same.
            extra["context_management"] = [
                {"type": "compaction", "compact_threshold": self.server_compaction}]
            options["extra_body"] = extra
        return model, tools, reserve, options

    def _request(self, node: Node, create: Mapping[str, Any], *, stream: bool
                 ) -> tuple[dict[str, Any], Context]:
        model, tools, reserve, options = self._settings(create)
        context = self.store.context(
            node, model=model, budget=self.budget, reserve_output=reserve, tools=tools,
            format=self.api, policy=self.policy, summarizer=self.summarizer,
            summary_options=self.summary_options)
        if self.api == "chat":
            request = _wire.chat_request(model, context.messages, tools, options, stream=stream)
        else:
            request = _wire.responses_request(model, context.messages, tools, options,
                                              stream=stream)
        return request, context

    def _send_request(self, node: Node, create: Mapping[str, Any], *, stream: bool
                      ) -> tuple[dict[str, Any], Context, Any]:
        """Assemble and send one request; a failure is recorded in ``last``, logged and
        raised (the client's own exception, or ``ChatError`` for a body it could not
        decode). ``node`` is already committed: nothing is lost."""
        request, context = self._request(node, create, stream=stream)
        logger.debug("request from %s (conversation %s): api %s, %d messages, %d of %d "
                     "tokens, stream %s", node.id, node.conversation_id, self.api,
                     len(context.messages), context.tokens, context.budget, stream)
        create_call = (self.client.chat.completions.create if self.api == "chat"
                       else self.client.responses.create)
        try:
            # AsyncChat's client returns a coroutine: awaited here, with no connection
            # held (the context's transaction is over).
            raw = _call_api(lambda: create_call(**request), node)
        except Exception as exc:
            self._failed(request, context, node, exc)
            raise
        return request, context, raw

    def _failed(self, request: dict[str, Any], context: Context, node: Node,
                exc: BaseException) -> None:
        """Record and log a request that produced no answer: only ``node`` was kept."""
        self.last = Turn(request, context, error=f"{type(exc).__name__}: {exc}")
        _log_failure("request", exc, node, f"kept {node.role} message {node.id}, "
                     "no answer stored")

    def _store(self, parent: Node, answer: _wire.Answer, context: Context,
               error: str | None = None) -> Node:
        metadata: dict[str, Any] = {"api": self.api}
        if not answer.complete:
            metadata["incomplete"] = True
            metadata["error"] = error or _ENDED_EARLY
        elif error is not None:   # e.g. the connection dropped after the last text
            metadata["error"] = error
        if answer.dropped_tool_calls:
            metadata["dropped_tool_calls"] = answer.dropped_tool_calls
        if answer.refusal is not None:
            metadata["refusal"] = True
        content = answer.content
        if content is None and not answer.tool_calls:
            content = ""   # an empty answer is still an answer: keep the branch's shape
        model = answer.model or str(context.model)
        return self.store.append(
            parent.conversation_id, parent=parent, role="assistant", content=content,
            tool_calls=answer.tool_calls, model=model, metadata=metadata,
            input_tokens=answer.input_tokens, output_tokens=answer.output_tokens,
            cached_tokens=answer.cached_tokens, reasoning_tokens=answer.reasoning_tokens,
            response_id=answer.response_id, finish_reason=answer.finish_reason,
            counted_input_tokens=context.tokens, api_items=answer.api_items)


class ChatStream:
    """The text of an answer as it arrives; the answer is stored when it ends.

    Iterate it for text deltas. When the stream ends the answer is stored (``node``)
    with its usage. If the caller stops early (``break``, ``close()``, leaving a
    ``with`` block) or the connection drops, the text that arrived is stored, marked
    ``incomplete`` in its metadata (a dropped connection's error re-raises after
    that); tool calls cut off mid-way are left out. It is stored once, whatever
    happens; a stream that produced nothing stores nothing.
    """

    def __init__(self, chat: Chat, parent: Node, request: dict[str, Any], context: Context,
                 raw: Any, state: _wire.ChatStreamState | _wire.ResponsesStreamState) -> None:
        self._chat, self._parent, self._raw, self._state = chat, parent, raw, state
        self.request, self.context = request, context
        self.node: Node | None = None
        self.turn: Turn | None = None
        self._finished = False
        self._iterating = False

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._state.texts)

    def __iter__(self) -> Iterator[str]:
        if self._finished or self._iterating:
            raise ChatError("a ChatStream can be read only once")
        self._iterating = True
        return self._read()

    def _read(self) -> Iterator[str]:
        try:
            for event in _io.iterate(self._raw):
                delta = self._state.feed(event)
                if delta:
                    yield delta
        except GeneratorExit:
            self._finish("the caller stopped reading")
            raise
        except BaseException as exc:   # a dropped connection, Ctrl-C, ...
            translated = _stream_error(exc, self._raw, self._parent)
            shown = translated if translated is not None else exc
            self._finish(f"{type(shown).__name__}: {shown}".rstrip(": "), shown)
            if translated is not None:
                raise translated from exc
            raise
        failure = self._finish(None)
        if failure is not None:
            # The API reported a failure inside the stream (``response.failed``, an
            # ``error`` event); the SDK does not raise for those, so raise its error here.
            import openai

            request: Any = getattr(getattr(self._raw, "response", None), "request", None)
            if request is None:
                raise ChatError(f"the API reported a failure in the stream: {failure}")
            raise openai.APIError(failure, request, body=None)
        if self.turn is not None and self.turn.incomplete:
            # The body ended cleanly but before the answer's last event (no finish
            # reason, no ``response.completed``): a proxy or server that gave up. The SDK
            # sees a normal end; convotree sees half an answer, so the caller must too.
            stored = self.node.id if self.node is not None else None
            raise IncompleteAnswer(
                _ENDED_EARLY + (
                    f"; what arrived is stored as {stored}, marked incomplete"
                    if stored is not None else "; nothing of the answer was stored"),
                conversation_id=self._parent.conversation_id, node_id=self._parent.id,
                answer_id=stored)

    def close(self) -> None:
        """Stop reading; store what arrived (if anything) as an incomplete answer."""
        self._finish("the caller stopped reading")

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _finish(self, error: str | None, exc: BaseException | None = None) -> str | None:
        """Store the answer once; return the failure the API reported in the stream.

        ``error`` says why the stream stopped (None: it ended by itself); ``exc`` is the
        exception that stopped it, for the log."""
        if self._finished:
            return None
        self._finished = True
        close = getattr(self._raw, "close", None)
        if close is not None:
            _io.resolve(close())   # release the HTTP connection (async streams: awaited)
        answer = self._state.answer()
        failure = getattr(self._state, "failure", None)
        if failure is not None:
            answer = replace(answer, complete=False)
        error = error or failure or (None if answer.complete else _ENDED_EARLY)
        chat = self._chat
        # A complete answer is stored even when empty (its usage and response id are
        # facts); a cut one only if something arrived.
        if answer.complete or answer.content or answer.tool_calls:
            self.node = chat._store(self._parent, answer, self.context, error)
        self.turn = Turn(self.request, self.context, self.node,
                         incomplete=not answer.complete, error=error)
        chat.last = self.turn
        parent = self._parent
        kept = (f"kept {parent.role} message {parent.id}; "
                + (f"partial answer stored as {self.node.id}, marked incomplete"
                   if self.node is not None else "nothing of the answer stored"))
        if exc is not None or failure is not None:
            _log_failure("stream", exc, parent, kept, failure=failure is not None)
        elif not answer.complete:
            # The caller stopped reading (not a failure), or the body ended early (the
            # ChatError raised after this is the failure: logged here, once).
            stopped = error == "the caller stopped reading"
            logger.log(logging.DEBUG if stopped else logging.INFO,
                       "stream from %s (conversation %s) %s; %s", parent.id,
                       parent.conversation_id,
                       "stopped by the caller" if stopped
                       else "ended before the answer was complete", kept)
        if self.node is not None:
            logger.debug("stream answer %s: %d characters, %d output tokens, complete %s",
                         self.node.id, len(self.node.content or ""),
                         self.node.output_tokens or 0, answer.complete)
        return failure


def _call_api(call: Callable[[], Any], node: Node) -> Any:
    """Call the client (an async one's coroutine is awaited) and return its result.

    A 200 whose body is not valid JSON makes the ``openai`` client raise the JSON
    decoder's ``ValueError``, which is neither its own exception nor a typed one:
    convotree reports it as ``ChatError`` (cause chained), like the other answers it
    cannot read. Every other exception is the client's own and passes through as it is.
    """
    try:
        return _io.resolve(call(), what="the OpenAI client")
    except json.JSONDecodeError as exc:
        raise UnreadableAnswer("the API's answer is not valid JSON; nothing of it was stored",
                        conversation_id=node.conversation_id, node_id=node.id) from exc


def _not_an_answer(raw: Any, api: str) -> str | None:
    """Why ``raw`` is not a Chat Completion / Response, or None if it is one.

    The ``openai`` client hands back the body as text when the response is not JSON (a
    proxy's HTML page with status 200), and builds its objects without validation, so
    a ``{}`` becomes a completion without choices. Stored, either would read as an
    empty, complete answer: refused instead."""
    if isinstance(raw, str | bytes):
        return f"the body is text, not JSON ({len(raw)} characters)"
    if api == "chat":
        choices = _wire.get(raw, "choices")
        if not isinstance(choices, list) or not choices:
            return "a chat completion without choices"
        if _wire.get(choices[0], "message") is None:
            return "a chat completion whose first choice has no message"
        return None
    if not isinstance(_wire.get(raw, "output"), list):
        return "a response without an output list"
    return None


def _is_timeout(exc: BaseException) -> bool:
    return any(cls.__name__ in ("TimeoutException", "ReadTimeout")
               for cls in type(exc).__mro__)


def _stream_error(exc: BaseException, raw: Any, parent: Node) -> Exception | None:
    """The typed error to raise for ``exc``, raised while reading a stream (None: raise
    ``exc`` itself).

    Recent ``openai`` releases raise ``APITimeoutError`` / ``APIConnectionError`` for a
    stream that goes silent or is cut mid-way; older ones let the HTTP library's own
    error through (``httpx.ReadTimeout``, ``httpx.RemoteProtocolError``): translated to
    the same ``openai`` exceptions, so callers handle one set whatever release they run.
    An event that is not JSON (the SDK raises the decoder's ``ValueError``) is a
    ``ChatError``, as for a non-streamed answer."""
    if isinstance(exc, json.JSONDecodeError):
        return UnreadableAnswer("the stream carried an event that is not valid JSON",
                         conversation_id=parent.conversation_id, node_id=parent.id)
    module = type(exc).__module__.split(".")[0]
    if module not in ("httpx", "httpx2", "httpcore", "httpcore2", "h11"):
        return None
    import openai

    request: Any = getattr(getattr(raw, "response", None), "request", None)
    if request is None:
        return None
    if _is_timeout(exc):
        return openai.APITimeoutError(request=request)
    return openai.APIConnectionError(message=f"the stream was cut: {exc}", request=request)


def _log_failure(what: str, exc: BaseException | None, node: Node, kept: str, *,
                 failure: bool = False) -> None:
    """One INFO record for a failed API call: the error's type and HTTP status, and
    what was kept (ids only). Never the exception's text: an API error can quote the
    request."""
    kind = type(exc).__name__ if exc is not None else (
        "in-stream API failure" if failure else "unknown error")
    status = getattr(exc, "status_code", None)
    logger.info("%s from %s (conversation %s) failed: %s%s; %s", what, node.id,
                node.conversation_id, kind, f" (HTTP {status})" if status else "", kept)


def _result_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _run_call(call: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]],
              tool_errors: str) -> str:
    name = _wire.call_name(call)
    function = functions.get(name)
    if function is None:
        if tool_errors == "raise":
            raise ChatError(f"the model called {name!r}, which is not among the functions")
        return f"error: there is no tool named {name!r}"
    try:
        arguments = _wire.tool_arguments(call)
        args, kwargs = ((), arguments) if isinstance(arguments, dict) else ((arguments,), {})
        if inspect.iscoroutinefunction(function):
            value = _io.resolve(function(*args, **kwargs), what="a tool function")
        else:   # in AsyncChat a sync tool runs in a worker thread, off the event loop
            value = _io.resolve(_io.run_sync(function, *args, **kwargs),
                                what="a tool function")
    except ConfigurationError:
        raise   # an async tool given to the sync Chat: the caller's mistake, not the model's
    except Exception as exc:
        if tool_errors == "raise":
            raise
        return f"error: {type(exc).__name__}: {exc}"
    return _result_text(value)

