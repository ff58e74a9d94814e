"""LangChain adapters: convotree as an agent's context window, and as a chat history.

``ConvotreeContextMiddleware`` is the non-destructive alternative to LangChain's
``SummarizationMiddleware`` for ``langchain.agents.create_agent``. The graph's state
(the thread, in LangGraph's checkpointer) keeps every message, untouched; before each
model call the middleware mirrors the thread's new messages into a convotree
conversation (one per thread, per tenant) and sends the model convotree's budgeted
context instead of the whole list: exact token counts, system messages always kept,
a tool call never without its results, and summary nodes made once and reused. The
answer is stored with its usage (model, input, output, cached and reasoning tokens,
and the prompt size convotree counted), queryable in SQL.

``ConvotreeChatMessageHistory`` is a ``BaseChatMessageHistory`` over the current
branch of a conversation, with native async methods, for ``RunnableWithMessageHistory``.

    store = convotree.Store("sqlite:///agent.db", create=True)
    agent = create_agent(model, tools, checkpointer=InMemorySaver(),
                         middleware=[ConvotreeContextMiddleware(store, budget=8_000)])

Needs the ``langchain`` extra: ``pip install "convotree[langchain]"``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

try:
    from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
    from langchain_core.utils.function_calling import convert_to_openai_tool
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise ImportError(
        "convotree.adapters.langchain needs LangChain (langchain and langchain-core): "
        'pip install "convotree[langchain]"') from exc

from .. import _io, tokens
from ..context import resolve_budget
from ..errors import (
    ConfigurationError,
    ContextError,
    ConversationExists,
    ConversationNotFound,
    InvalidArgument,
)
from ..interchange._draft import derived_conversation_id
from ..models import Node
from ..store import Store
from ..store_async import AsyncStore
from . import _langchain_messages as lc
from ._keys import derivation_key

if TYPE_CHECKING:
    from langgraph.runtime import Runtime

    from ..context import Context, PruningPolicy
    from ..store import ConversationRef
    from ..summaries import Summarizer, SummaryOptions

__all__ = ["ConvotreeChatMessageHistory", "ConvotreeContextMiddleware", "conversation_id_for"]

T = TypeVar("T")

#: The name under which thread ids are turned into conversation ids (per tenant).
SOURCE = "langchain"
def _key(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | uuid.UUID):
        raise InvalidArgument(f"{what} must be a string, not {type(value).__name__}")
    return derivation_key(str(value), what)


def conversation_id_for(key: str, *, tenant: str = "", namespace: str = "") -> uuid.UUID:
    """The conversation a LangGraph thread (or a history's session id) maps to.

    A UUIDv5 of the tenant, ``namespace`` and the key, the way convotree's importers
    derive ids: the same thread always finds the same conversation, two tenants with
    the same thread id get two conversations, and no lookup table is needed. The
    middleware and the chat history derive alike, so a history can read a thread.
    """
    key = _key(key, "thread id")
    namespace = _key(namespace, "namespace") if namespace else ""
    return derived_conversation_id(tenant, SOURCE, f"{namespace}\x1f{key}" if namespace else key)


# --- mirroring: the thread's messages as a branch ----------------------------------------


@dataclass(frozen=True, slots=True)
class Mirror:
    """Where a message list stands in its conversation after mirroring.

    ``leaf``: the node of the last message (its branch is exactly the list);
    ``written``: nodes appended; ``forked``: the list was not the continuation of
    the conversation's current branch (an edit, a removal, a rewind in the thread),
    so its new messages went onto another branch and the old one stayed.
    """

    conversation_id: uuid.UUID
    leaf: Node | None
    written: int
    forked: bool


def _write(store: Store, conversation_id: uuid.UUID, parent: Node | None,
           fields: list[dict[str, Any]], *, create: Mapping[str, Any] | None) -> list[Node]:
    """Append ``fields`` as a chain under ``parent`` (a new root when None), creating
    the conversation first if asked: all of it one transaction."""
    if parent is not None and create is None:
        return store.append_chain(parent, fields)
    with store.transaction() as tx:
        if create is not None:
            tx.create_conversation(id=conversation_id, **create)
        if not fields:
            return []
        if parent is None:
            first = tx.append(conversation_id, parent=None, **fields[0])
            return [first, *tx.append_chain(first, fields[1:])]
        return tx.append_chain(parent, fields)


def mirror(store: Store, conversation_id: uuid.UUID, messages: Sequence[BaseMessage], *,
           metadata: Mapping[str, Any] | None = None) -> Mirror:
    """Make ``messages`` a branch of the conversation, writing only what is new.

    The usual turn costs two statements to read (the current node) and one
    transaction to append: the current node's chain digest says whether it ends a
    prefix of ``messages`` (then everything up to it is already stored, as it is).
    Otherwise (the thread was edited, had messages removed, or was rewound to an
    earlier checkpoint) the branch is found by its digests among the conversation's
    leaves and the current branch, and the messages after the longest stored prefix
    go onto a new branch from there: the old branch is kept, nothing is rewritten.
    Every message is checked before anything is written; a bad one writes nothing.
    """
    digests: list[str] = []
    for message in messages:
        lc.role_of(message)
        lc.ensure_id(message, digests[-1] if digests else None)
        digests.append(lc.chain(digests[-1] if digests else None, message))
    fields = [lc.append_fields(m, d) for m, d in zip(messages, digests, strict=True)]
    where = {digest: index for index, digest in enumerate(digests)}
    for attempt in (1, 2):
        try:
            current = store.current(conversation_id)
        except ConversationNotFound:
            if not messages:
                return Mirror(conversation_id, None, 0, False)
            try:
                made = _write(store, conversation_id, None, fields,
                              create={"metadata": dict(metadata or {})})
            except ConversationExists:
                if attempt == 2:
                    raise
                continue   # created meanwhile by a concurrent first turn: read it
            return Mirror(conversation_id, made[-1], len(made), False)
        break
    found = where.get(lc.node_chain(current) or "") if current is not None else -1
    forked = False
    parent: Node | None = current
    if found is None:
        forked = True
        found, parent = _longest_stored_prefix(store, conversation_id, current, digests, where)
    if found == len(messages) - 1:
        if forked and parent is not None:
            store.set_current(conversation_id, parent)
        return Mirror(conversation_id, parent, 0, forked)
    made = _write(store, conversation_id, parent, fields[found + 1:], create=None)
    return Mirror(conversation_id, made[-1], len(made), forked)


def _longest_stored_prefix(store: Store, conversation_id: uuid.UUID, current: Node | None,
                           digests: Sequence[str], where: Mapping[str, int]
                           ) -> tuple[int, Node | None]:
    """(index of the last message already stored as a branch, its node), -1/None if none.

    A leaf whose digest is in the list ends a stored prefix (the thread went back to
    another branch); on the current branch, the deepest node whose digest matches the
    list at its depth does (the thread was rewound or edited below it)."""
    best, node = -1, None
    for leaf in store.leaves(conversation_id):
        index = where.get(lc.node_chain(leaf) or "")
        if index is not None and index > best:
            best, node = index, leaf
    if current is not None and best < len(digests) - 1:
        for depth, stored in enumerate(store.path(current)):
            if depth >= len(digests) or lc.node_chain(stored) != digests[depth]:
                break
            if depth > best:
                best, node = depth, stored
    return best, node


# --- the middleware -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one model call sends, and where its answer goes."""

    request: ModelRequest[Any]
    mirror: Mirror
    counted: int | None


def _thread_id(runtime: Runtime[Any] | None) -> str:
    info = getattr(runtime, "execution_info", None)
    thread = getattr(info, "thread_id", None)
    if thread is None:
        try:
            from langgraph.config import get_config

            thread = (get_config().get("configurable") or {}).get("thread_id")
        except RuntimeError:   # outside a graph run
            thread = None
    if thread is None:
        raise ConfigurationError(
            "ConvotreeContextMiddleware needs a thread: compile the agent with a "
            "checkpointer and invoke it with config={'configurable': {'thread_id': ...}}")
    return _key(thread, "thread_id")


def _model_name(request: ModelRequest[Any]) -> str | None:
    for attribute in ("model_name", "model", "model_id"):
        value = getattr(request.model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return None


def _tool_definitions(tools: Sequence[Any]) -> list[dict[str, Any]] | None:
    """The request's tools in OpenAI's format, to price them (provider tools that do
    not convert are priced as nothing: convotree has no rule for them)."""
    definitions = []
    for tool in tools:
        try:
            definitions.append(convert_to_openai_tool(tool))
        except Exception:   # a provider's built-in tool: convotree cannot price it
            continue
    return definitions or None


def _count(value: Any, what: str, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{what} must be a non-negative integer, not {value!r}")
    return value


class ConvotreeContextMiddleware(AgentMiddleware):
    """Send the model convotree's budgeted context; keep the thread whole.

    ``store``: a ``Store`` (for ``agent.invoke``/``stream``; ``ainvoke`` runs it in a
    worker thread) or an ``AsyncStore`` (for ``ainvoke``/``astream``). The
    conversation of a thread is :func:`conversation_id_for` of its ``thread_id``
    under the store's tenant (``tenant_of(runtime)`` picks one per run, for a service
    that serves many) and ``namespace`` (tell two agents on one thread apart).

    ``model`` names the model to count tokens for (default: the request's model
    name); ``budget`` is the whole prompt (system prompt, tool definitions and
    messages), default the model's context window minus ``reserve_output``.
    ``summarizer``/``summary_options``/``policy`` are ``Store.context``'s.

    Put it first in ``middleware=[...]``: it then sees the thread as the graph holds
    it and the answer as the graph will store it, and later middleware see (and may
    change) the budgeted request.
    """

    def __init__(
        self,
        store: Store | AsyncStore,
        *,
        model: str | None = None,
        budget: int | None = None,
        reserve_output: int = 0,
        summarizer: Summarizer | None = None,
        summary_options: SummaryOptions | None = None,
        policy: PruningPolicy | None = None,
        namespace: str = "",
        tenant_of: Callable[[Runtime[Any]], str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(store, Store | AsyncStore):
            raise ConfigurationError(
                f"ConvotreeContextMiddleware takes a convotree Store or AsyncStore, not "
                f"{type(store).__name__}")
        if model is not None and (not isinstance(model, str) or not model):
            raise InvalidArgument(f"model must be a model name such as 'gpt-4o', not {model!r}")
        if budget is not None and _count(budget, "budget", optional=False) == 0:
            raise InvalidArgument("budget must be positive")
        _count(reserve_output, "reserve_output", optional=False)
        if summarizer is not None and not callable(getattr(summarizer, "summarize", None)):
            raise InvalidArgument("summarizer must have a summarize(request) method (see "
                                  "convotree.Summarizer)")
        from ..summaries import SummaryOptions

        if summary_options is not None and not isinstance(summary_options, SummaryOptions):
            raise InvalidArgument("summary_options must be a convotree.SummaryOptions")
        if policy is not None and not callable(getattr(policy, "select", None)):
            raise InvalidArgument("policy must have a select(window, budget) method (see "
                                  "convotree.PruningPolicy)")
        if tenant_of is not None and not callable(tenant_of):
            raise InvalidArgument("tenant_of must be a function of the runtime")
        self.store = store
        self.model = model
        self.budget = budget
        self.reserve_output = reserve_output
        self.summarizer = summarizer
        self.summary_options = summary_options
        self.policy = policy
        self.namespace = _key(namespace, "namespace") if namespace else ""
        self.tenant_of = tenant_of

    # --- the hooks: one body, two shells ---------------------------------------------

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse]
    ) -> ModelResponse:
        """Mirror, assemble, call the model with the budgeted messages, store the answer."""
        if not isinstance(self.store, Store):
            raise ConfigurationError(
                "this middleware has an AsyncStore: run the agent with ainvoke/astream, or "
                "give the middleware a convotree.Store")
        store = self._tenant_store(self.store, request)
        plan = self._before(store, request)
        response = handler(plan.request)
        return self._after(store, plan, response)

    async def awrap_model_call(
        self, request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        """``wrap_model_call`` for ``ainvoke``: the same code, on the event loop."""
        run = await self._runner(request)
        plan: _Plan = await run(self._before, request)
        response = await handler(plan.request)
        answered: ModelResponse = await run(self._after, plan, response)
        return answered

    def _tenant_store(self, store: Any, request: ModelRequest[Any]) -> Any:
        if self.tenant_of is None:
            return store
        return store.with_tenant(self.tenant_of(request.runtime))

    async def _runner(self, request: ModelRequest[Any]
                      ) -> Callable[..., Awaitable[Any]]:
        """How the shared (sync) code runs here: through SQLAlchemy's greenlet bridge on
        an AsyncStore (every statement awaited on the loop), in a worker thread on a
        Store (so it does not stall the loop)."""
        chosen = self._tenant_store(self.store, request)
        if isinstance(chosen, AsyncStore):
            shared = await chosen.shared()

            async def bridged(function: Callable[..., T], *args: Any) -> T:
                return await _io.spawn(function, shared, *args)

            return bridged

        async def threaded(function: Callable[..., T], *args: Any) -> T:
            return await asyncio.to_thread(function, chosen, *args)

        return threaded

    # --- the shared body -----------------------------------------------------------

    def _before(self, store: Store, request: ModelRequest[Any]) -> _Plan:
        messages = list(request.messages)
        thread_id = _thread_id(request.runtime)
        conversation_id = conversation_id_for(
            thread_id, tenant=store.tenant, namespace=self.namespace)
        thread = {"thread_id": thread_id}
        if self.namespace:
            thread["namespace"] = self.namespace
        mirrored = mirror(store, conversation_id, messages, metadata={lc.KEY: thread})
        if mirrored.leaf is None:   # nothing to assemble: send the request as it is
            return _Plan(request, mirrored, None)
        model = self.model or _model_name(request)
        if model is None:
            raise ConfigurationError("the request's model has no name convotree can count "
                                     "tokens for: pass model='gpt-4o' (or the closest "
                                     "OpenAI model) to ConvotreeContextMiddleware")
        system = 0
        if request.system_message is not None:
            system = tokens.count_messages(
                [_system_dict(request.system_message)], model=model
            ) - tokens.REPLY_PRIMING_TOKENS
        total = resolve_budget(model, self.budget, self.reserve_output)
        if total - system <= 0:
            raise ContextError(f"the system prompt needs {system} tokens; the budget is "
                               f"{total}")
        context = store.context(
            mirrored.leaf, model=model, budget=total - system,
            tools=_tool_definitions(request.tools), policy=self.policy,
            summarizer=self.summarizer, summary_options=self.summary_options)
        sent = _request_messages(context, messages)
        return _Plan(request.override(messages=cast(Any, sent)), mirrored, context.tokens + system)

    def _after(self, store: Store, plan: _Plan, response: ModelResponse) -> ModelResponse:
        """Store the answer under the leaf it answers, with its usage, so the thread's
        next turn finds it mirrored already (and the run's usage is in SQL now)."""
        leaf = plan.mirror.leaf
        if leaf is None or not response.result:
            return response
        digest = lc.node_chain(leaf)
        fields = []
        for message in response.result:
            lc.ensure_id(message, digest)
            digest = lc.chain(digest, message)
            fields.append(lc.append_fields(message, digest))
        if isinstance(response.result[0], AIMessage) and plan.counted is not None:
            fields[0]["counted_input_tokens"] = plan.counted
        store.append_chain(leaf, fields)
        return response


def _system_dict(message: SystemMessage) -> dict[str, Any]:
    content, _ = lc._content_columns(message.content)
    return {"role": lc.role_of(message), "content": content}


def _request_messages(context: Context, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """The context as the thread's own message objects (depth d of the branch is
    ``messages[d]``), with the summary, if one is sent, as a system message."""
    depths = [d for block in context.report.kept for d in range(block.first, block.last + 1)]
    summary_id = context.report.summary_id
    out: list[BaseMessage] = []
    position = 0
    for node_id, sent in zip(context.node_ids, context.messages, strict=True):
        if node_id == summary_id:
            out.append(lc.summary_message(node_id, str(sent.get("content") or "")))
            continue
        out.append(messages[depths[position]])
        position += 1
    if position != len(depths) or not depths or depths[-1] != len(messages) - 1:
        raise ContextError("the assembled context does not match the thread's messages "
                           "(the conversation was changed outside this middleware)")
    return out


# --- the chat history -----------------------------------------------------------------


class ConvotreeChatMessageHistory(BaseChatMessageHistory):
    """The current branch of a conversation as a LangChain chat history.

    ``ConvotreeChatMessageHistory(store, session_id)`` (the conversation is
    :func:`conversation_id_for` the session id, so the same id as an agent's thread
    reads that thread's mirror) or ``(store, conversation=id)``. With a ``Store``
    the sync methods are native and the async ones run in a worker thread; with an
    ``AsyncStore`` the async ones (``aget_messages``, ``aadd_messages``, ``aclear``)
    are native and the sync ones refuse (``ConfigurationError``).

    ``messages`` is the whole current branch, root first. ``add_messages`` appends
    below the current node, in one transaction. ``clear()`` does what LangChain says
    it does, removes every message: it deletes the conversation (all its branches)
    in one transaction. ``start_over()`` is the non-destructive alternative: the
    history reads empty and the next message starts a new branch, while every old
    branch stays in the tree (``on_clear="start_over"`` makes ``clear()`` do that).
    """

    def __init__(
        self,
        store: Store | AsyncStore,
        session_id: str | None = None,
        *,
        conversation: ConversationRef | None = None,
        namespace: str = "",
        on_clear: Literal["delete", "start_over"] = "delete",
    ) -> None:
        super().__init__()
        if not isinstance(store, Store | AsyncStore):
            raise ConfigurationError(
                f"ConvotreeChatMessageHistory takes a convotree Store or AsyncStore, not "
                f"{type(store).__name__}")
        if (session_id is None) == (conversation is None):
            raise InvalidArgument("give a session_id or conversation=, exactly one")
        if on_clear not in ("delete", "start_over"):
            raise InvalidArgument(f"on_clear must be 'delete' or 'start_over', not {on_clear!r}")
        self.store = store
        if conversation is not None:
            from .._args import conversation_id

            self.conversation_id = conversation_id(conversation)
        else:
            self.conversation_id = conversation_id_for(
                _key(session_id, "session_id"), tenant=store.tenant, namespace=namespace)
        self.on_clear = on_clear

    # --- sync -----------------------------------------------------------------------

    def _sync(self) -> Store:
        if not isinstance(self.store, Store):
            raise ConfigurationError(
                "this history has an AsyncStore: use aget_messages/aadd_messages/aclear "
                "(RunnableWithMessageHistory.ainvoke), or give it a convotree.Store")
        return self.store

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The current branch, root first (one recursive query)."""
        return _read(self._sync(), self.conversation_id)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append below the current node, all or nothing."""
        _add(self._sync(), self.conversation_id, list(messages))

    def clear(self) -> None:
        """Delete the conversation (or, with ``on_clear="start_over"``, start over)."""
        _clear(self._sync(), self.conversation_id, self.on_clear)

    def start_over(self) -> None:
        """Read empty from now on; the next message starts a new branch; nothing is
        deleted (the old branches stay, ``store.set_current`` returns to one)."""
        _clear(self._sync(), self.conversation_id, "start_over")

    # --- async: the same functions, run by the store's shell ---------------------------

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if isinstance(self.store, AsyncStore):
            return await _io.spawn(function, await self.store.shared(), *args)
        return await asyncio.to_thread(function, self.store, *args)

    async def aget_messages(self) -> list[BaseMessage]:
        return await self._run(_read, self.conversation_id)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await self._run(_add, self.conversation_id, list(messages))

    async def aclear(self) -> None:
        await self._run(_clear, self.conversation_id, self.on_clear)

    async def astart_over(self) -> None:
        await self._run(_clear, self.conversation_id, "start_over")


def _read(store: Store, conversation_id: uuid.UUID) -> list[BaseMessage]:
    try:
        current = store.current(conversation_id)
    except ConversationNotFound:
        return []
    if current is None:
        return []
    return [lc.to_message(node) for node in store.path(current) if node.kind == "message"]


def _add(store: Store, conversation_id: uuid.UUID, messages: list[BaseMessage]) -> None:
    for message in messages:   # a typed error for what is no message, before any read
        lc.role_of(message)
    for attempt in (1, 2):
        try:
            current = store.current(conversation_id)
            exists = True
        except ConversationNotFound:
            current, exists = None, False
        digest = lc.node_chain(current) if current is not None else None
        # Digests extend a digested branch only (or start one): a branch that was not
        # written through LangChain gets none, so no mirror mistakes it for a thread.
        chained = current is None or digest is not None
        fields = []
        for message in messages:
            if chained:
                digest = lc.chain(digest, message)
            fields.append(lc.append_fields(message, digest if chained else None))
        if not fields:
            return
        try:
            _write(store, conversation_id, current, fields,
                   create=None if exists else {"metadata": {lc.KEY: {"session": True}}})
        except ConversationExists:
            if exists or attempt == 2:
                raise   # another tenant holds the id
            continue    # a concurrent first write created it meanwhile: append to it
        return


def _clear(store: Store, conversation_id: uuid.UUID, how: str) -> None:
    try:
        if how == "delete":
            store.delete_conversation(conversation_id)
        else:
            store.set_current(conversation_id, None)
    except ConversationNotFound:
        return
