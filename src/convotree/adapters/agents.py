"""The OpenAI Agents SDK's ``Session`` over convotree: ``ConvotreeSession``.

``Runner.run(agent, "hi", session=ConvotreeSession(store, key="user-42"))`` keeps the
session's items in convotree's tables instead of the SDK's own ``SQLiteSession`` /
``SQLAlchemySession``: a session is a conversation, its history is the branch the
conversation is on (or the branch pinned with ``at=``), and the SDK's operations map onto
the tree without copies:

- ``add_items``: each item is one node (its child of the branch's last node), in one
  transaction; the item is kept verbatim in ``api_items`` (so ``get_items`` and
  ``pop_item`` give back exactly what was given: the Runner compares fingerprints when it
  rewinds), and the columns are filled where the item maps onto them (role, text, tokens;
  a function call and its output that arrive together as a tool call and its result).
  Item types convotree does not model (reasoning, hosted tool calls, MCP, computer and
  shell calls, compaction...) are kept the same way, with their readable text if any.
- ``get_items(limit)``: the newest ``limit`` items of the branch, oldest first, with ONE
  statement that climbs at most ``limit`` nodes (``Store.tail``), never the whole path.
- ``pop_item``: deletes the branch's last node, or, when other branches continue below it,
  only moves the branch back one node (the other branches keep it).
- ``clear_session``: deletes the conversation, every branch of it (the SDK's meaning of
  "clear"); ``restart()`` is the non-destructive alternative (the next items start a new
  root, the old branches stay).
- ``fork(at)``, ``branches()``, ``switch(leaf)``: branching that shares history.
- ``model_input_filter(...)`` for ``RunConfig(call_model_input_filter=...)``: the model
  gets convotree's budgeted context of the branch (exact token budget, system messages
  always kept, summary nodes made once and reused) instead of the raw tail.
- ``run_compaction(args)``: OpenAI's compaction stored as a summary node; the transcript
  stays (unlike the SDK's ``OpenAIResponsesCompactionSession``, which replaces it).
- ``usage_hooks()``: ``RunHooks`` that put each model response's usage (model,
  input/output/cached/reasoning tokens, response id) on the node of its last item.

Importing this module imports the SDK (``pip install "convotree[agents]"``); ``import
convotree`` never does. Tested with openai-agents 0.24.0.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

try:
    from agents import RunHooks
    from agents.memory import SessionSettings
    from agents.memory.session_settings import resolve_session_limit
    from agents.run_config import CallModelData, ModelInputData
except ImportError as exc:  # pragma: no cover - exercised by the extras test
    raise ImportError(
        'convotree.adapters.agents needs the OpenAI Agents SDK: pip install '
        '"convotree[agents]"') from exc

from .. import _args
from ..context import Selection, Window
from ..errors import (
    ConfigurationError,
    ConversationExists,
    ConversationNotFound,
    InvalidArgument,
    InvalidContent,
    InvalidRole,
)
from ..models import Conversation, Node
from ..store_async import AsyncStore
from ..summaries import Summarizer
from ..tokens import count_text, encoding_for_model
from ._keys import derivation_key

__all__ = ["ConvotreeSession", "ConvotreeUsageHooks", "session_id_for_key"]

_log = logging.getLogger("convotree.adapters.agents")

#: Namespace of the conversation ids derived from a caller's key (``session_id_for_key``).
KEY_NAMESPACE = uuid.UUID("3b7c1d0e-5a8f-4c61-9e2b-7d4a6f1c8e55")
#: "Every item": the largest limit a tail takes.
_ALL = _args.MAX_COUNT
#: Roles a message item may have (the Responses API's input roles).
_MESSAGE_ROLES = ("user", "system", "developer", "assistant")
#: Calls whose outputs pair with them by ``call_id`` (the SDK's own map, mirrored).
_CALL_OUTPUTS = {
    "function_call": "function_call_output",
    "custom_tool_call": "custom_tool_call_output",
    "computer_call": "computer_call_output",
    "local_shell_call": "local_shell_call_output",
    "shell_call": "shell_call_output",
    "apply_patch_call": "apply_patch_call_output",
    "tool_search_call": "tool_search_output",
    "program": "program_output",
}
_OUTPUTS = frozenset(_CALL_OUTPUTS.values()) | {"mcp_approval_response"}
#: Calls convotree models as tool calls (its ``tool_calls`` column knows these two).
_MODELLED_CALLS = {"function_call": "function", "custom_tool_call": "custom"}
#: Marks a node this adapter wrote: ``metadata["agents_item"]`` is the item's type.
_MARK = "agents_item"
#: Responses whose usage waits for their items (one per model call in flight).
_PENDING_RESPONSES = 64


def session_id_for_key(key: str, *, tenant: str = "") -> uuid.UUID:
    """The conversation id of the session named ``key`` for ``tenant``: stable across
    processes (UUIDv5), distinct per tenant, like the ids ``convotree.interchange`` mints."""
    if not isinstance(key, str):
        raise InvalidArgument("key must be a non-empty string")
    return uuid.uuid5(KEY_NAMESPACE, f"{tenant}\x1f{derivation_key(key, 'key')}")


# --- items as nodes (pure) --------------------------------------------------------------


def _text_of(content: Any, what: str) -> str:
    """The text of a message's content (a string, or the text of its parts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidContent(f"{what}: content must be a string or a list of parts, not "
                             f"{type(content).__name__}")
    texts = []
    for part in content:
        if not isinstance(part, Mapping):
            raise InvalidContent(f"{what}: every content part must be an object")
        for key in ("text", "refusal"):
            if isinstance(part.get(key), str):
                texts.append(part[key])
                break
    return "\n".join(texts)


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return _text_of([p for p in output if isinstance(p, Mapping)], "output")
    return ""


def _kind(item: Mapping[str, Any], index: int) -> str:
    """The item's type (``message`` for the easy ``{"role", "content"}`` form)."""
    kind = item.get("type", "message")
    if not isinstance(kind, str) or not kind:
        raise InvalidContent(f"item {index}: 'type' must be a non-empty string")
    if kind == "message" and "role" not in item:
        raise InvalidContent(f"item {index} is no input item: a message needs a 'role' "
                             "(other items a 'type')")
    return kind


def _fields(item: Mapping[str, Any], index: int, pair: str | None) -> dict[str, Any]:
    """``append`` keywords for one item: verbatim in ``api_items``, and the columns
    it maps onto. ``pair`` is "call" or "output" when the item and its partner are
    stored as a tool call and its result (see ``_pairs``)."""
    if not isinstance(item, Mapping):
        raise InvalidContent(f"item {index} must be a JSON object (a dict), not "
                             f"{type(item).__name__}")
    kind = _kind(item, index)
    fields: dict[str, Any] = {"api_items": [dict(item)], "metadata": {_MARK: kind}}
    if kind == "message":
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise InvalidRole(f"item {index}: role {role!r} is none of "
                              f"{', '.join(_MESSAGE_ROLES)}")
        fields.update(role=role, content=_text_of(item.get("content"), f"item {index}"))
    elif pair == "call":
        call_type = _MODELLED_CALLS[kind]
        body = ({"name": item["name"], "arguments": item["arguments"]}
                if call_type == "function" else
                {"name": item["name"], "input": item.get("input", "")})
        fields.update(role="assistant", tool_calls=[
            {"id": item["call_id"], "type": call_type, call_type: body}])
    elif pair == "output":
        fields.update(role="tool", tool_call_id=item["call_id"],
                      content=_output_text(item.get("output")))
    elif kind in _OUTPUTS:
        # A result the client gives the model that is stored without its call beside it
        # (an approval answered in a later run, parallel calls): its text, as input.
        fields.update(role="user", content=_output_text(item.get("output")))
    else:
        # Made by the model: reasoning (its summary is its text), calls, hosted tools.
        summary = item.get("summary") if kind == "reasoning" else None
        fields.update(role="assistant",
                      content=_text_of(summary, f"item {index}") if isinstance(summary, list)
                      else "")
    return fields


def _pairable_call(item: Any) -> bool:
    return (isinstance(item, Mapping) and item.get("type") in _MODELLED_CALLS
            and isinstance(item.get("call_id"), str) and bool(item["call_id"])
            and isinstance(item.get("name"), str) and bool(item["name"])
            and (item["type"] != "function_call" or isinstance(item.get("arguments"), str))
            and (item["type"] != "custom_tool_call" or isinstance(item.get("input", ""), str)))


def _answers(output: Any, call: Mapping[str, Any]) -> bool:
    return (isinstance(output, Mapping)
            and output.get("type") == _CALL_OUTPUTS[str(call["type"])]
            and output.get("call_id") == call["call_id"]
            and isinstance(output.get("output", ""), str | list))


def _pairs(items: Sequence[Any], pending: Mapping[str, Any] | None) -> list[str | None]:
    """Which items are stored as a tool call ("call") and its result ("output").

    convotree refuses a branch where a message follows an unanswered call (the OpenAI
    APIs refuse it too), and the SDK writes calls whose outputs come later (approvals) or
    after other calls (parallel calls). So a call is stored as one only when its output
    is the very next item of the same write; ``pending`` is the branch's last node's item
    when that node is such a call whose output this write may bring first.
    """
    pairs: list[str | None] = [None] * len(items)
    if pending is not None and items and _answers(items[0], pending):
        pairs[0] = "output"
    for index in range(len(items) - 1):
        if pairs[index] is None and _pairable_call(items[index]) and _answers(
                items[index + 1], items[index]):
            pairs[index], pairs[index + 1] = "call", "output"
    return pairs


def item_of(node: Node) -> list[dict[str, Any]]:
    """The items a node stands for: the one this adapter stored, or, for a node written
    by other code (``convotree.Chat``, an import), its Responses input items."""
    if node.metadata and _MARK in node.metadata and node.api_items:
        return [copy.deepcopy(node.api_items[0])]
    from .._formats import response_items

    call_types = {str(c["id"]): str(c.get("type", "function")) for c in node.tool_calls or ()}
    return response_items(cast(Any, node), call_types)


def _key(item: Mapping[str, Any]) -> str:
    return json.dumps(item, sort_keys=True, default=str)


def _same_item(stored: Mapping[str, Any], produced: Mapping[str, Any]) -> bool:
    """Whether a stored item is the one a model response produced: equal, or the same
    type with the same real id or call id (the SDK may drop fields on the way)."""
    if _key(stored) == _key(produced):
        return True
    if stored.get("type") != produced.get("type"):
        return False
    for name in ("id", "call_id"):
        value = produced.get(name)
        if isinstance(value, str) and value and value != "__fake_id__":
            return bool(stored.get(name) == value)
    return False


def drop_orphans(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leave out calls without their output and outputs without their call (and a
    reasoning item right before a dropped call): a budget cut or an unanswered approval
    must not send the API half a tool exchange, which it refuses."""
    calls: dict[str, set[str]] = {}
    outputs: dict[str, set[str]] = {}
    for item in items:
        kind, call_id = item.get("type"), item.get("call_id")
        if isinstance(call_id, str):
            if kind in _CALL_OUTPUTS:
                calls.setdefault(_CALL_OUTPUTS[str(kind)], set()).add(call_id)
            elif kind in _OUTPUTS:
                outputs.setdefault(str(kind), set()).add(call_id)
    kept: list[dict[str, Any]] = []
    for item in reversed(items):
        kind, call_id = item.get("type"), item.get("call_id")
        if kind in _CALL_OUTPUTS and call_id not in outputs.get(_CALL_OUTPUTS[str(kind)], ()):
            kept.append({"type": "__dropped_call__"})
            continue
        if kind in _OUTPUTS and kind != "mcp_approval_response" and call_id not in calls.get(
                str(kind), ()):
            continue
        if kind == "reasoning" and kept and kept[-1].get("type") == "__dropped_call__":
            continue
        kept.append(item)
    return [item for item in reversed(kept) if item.get("type") != "__dropped_call__"]


class _Overflow:
    """A pruning policy that only looks: do the messages since the branch's last summary
    (or its root), with the kept-always ones, fit in the budget? (The summary itself is
    not counted: a compaction is made once, not again for its own size.)"""

    over = False

    def select(self, window: Window, budget: int) -> Selection:
        used = sum(c.tokens for c in (*window.kept_above, *window.suffix))
        self.over = not window.reaches_root or used > budget
        return Selection(frozenset({window.suffix[-1].depth}), "budget")


# --- usage ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Usage:
    last_item: dict[str, Any]
    fields: dict[str, Any]


def _model_name(agent: Any) -> str | None:
    model = getattr(agent, "model", None)
    if isinstance(model, str):
        return model
    name = getattr(model, "model", None)
    if isinstance(name, str):
        return name
    if model is None:
        from agents.models import get_default_model

        return str(get_default_model())
    return None


class ConvotreeUsageHooks(RunHooks[Any]):
    """Run hooks that hand each model response's usage to the session, which stores it
    on the node of the response's last item when the Runner adds that item:
    ``Runner.run(agent, input, session=session, hooks=session.usage_hooks())``. With
    hooks of your own, subclass this one (and call ``super().on_llm_end``)."""

    def __init__(self, session: ConvotreeSession) -> None:
        self.session = session

    async def on_llm_end(self, context: Any, agent: Any, response: Any) -> None:
        self.session.record_response(response, model=_model_name(agent))


# --- the session ------------------------------------------------------------------------


class ConvotreeSession:
    """An Agents SDK ``Session`` (and compaction-aware session) over an ``AsyncStore``.

    ``conversation``: the conversation (object or id); or ``key``: a string of yours
    (user, thread), mapped to a stable conversation id per tenant; neither: a new
    conversation. The conversation is created on the first write. ``at``: pin the session
    to the branch ending at that node (it then moves only its own pin, never the
    conversation's current node); without it the session follows, and moves, the
    conversation's current node. ``compaction_client`` (an ``openai.AsyncOpenAI``) and
    ``compaction_model`` let ``run_compaction`` call ``responses.compact``;
    ``compact_threshold`` (tokens) makes the Runner's automatic calls compact when the
    branch since its last summary no longer fits in it (without it they do nothing).
    """

    def __init__(
        self,
        store: AsyncStore,
        conversation: Conversation | uuid.UUID | str | None = None,
        *,
        key: str | None = None,
        at: Node | None = None,
        title: str | None = None,
        session_settings: SessionSettings | None = None,
        compaction_client: Any = None,
        compaction_model: str = "gpt-4.1",
        compact_threshold: int | None = None,
    ) -> None:
        if not isinstance(store, AsyncStore):
            raise ConfigurationError("ConvotreeSession needs a convotree.AsyncStore (the "
                                     "Agents SDK is asynchronous)")
        if sum(x is not None for x in (conversation, key, at)) > 1:
            raise InvalidArgument("give one of conversation, key and at")
        if at is not None:
            at = _args.node(at, "at")
            self.conversation_id = at.conversation_id
        elif key is not None:
            self.conversation_id = session_id_for_key(key, tenant=store.tenant)
        elif conversation is not None:
            self.conversation_id = _args.conversation_id(conversation)
        else:
            from .._ids import uuid7

            self.conversation_id = uuid7()
        if session_settings is not None and not isinstance(session_settings, SessionSettings):
            raise InvalidArgument("session_settings must be an agents.SessionSettings")
        if compact_threshold is not None:
            _args.required_count(compact_threshold, "compact_threshold", minimum=1)
        self.store = store
        self.session_id = str(self.conversation_id)
        self.session_settings = session_settings
        self.title = title
        self.compaction_client = compaction_client
        self.compaction_model = compaction_model
        self.compact_threshold = compact_threshold
        #: The pinned branch's last node (``at``), or None: follow the current node.
        self._pin: Node | None = at
        self._pinned = at is not None
        self._responses: deque[_Usage] = deque(maxlen=_PENDING_RESPONSES)
        #: The context the last ``model_input_filter`` call sent (its report says what).
        self.last_context: Any = None

    # --- the Session protocol ---------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """The newest ``limit`` items of the branch, oldest first (all without a limit;
        the session's ``session_settings.limit`` when not given). One statement that
        reads at most ``limit`` nodes."""
        resolved = resolve_session_limit(limit, self.session_settings)
        if resolved is not None:
            resolved = _args.count(resolved, "limit", minimum=-_ALL)
            if resolved == 0:
                return []
        want = _ALL if resolved is None or resolved < 0 else resolved
        items = [item for node in await self._tail(want) for item in item_of(node)]
        return items if resolved is None or resolved < 0 else items[-want:]

    async def add_items(self, items: list[Any]) -> None:
        """Append the items to the branch, each one node, all in one transaction (a bad
        item: a ``ConvotreeError``, nothing written)."""
        if not isinstance(items, list):
            raise InvalidArgument(f"items must be a list of input items, not "
                                  f"{type(items).__name__}")
        if not items:
            return
        for index, item in enumerate(items):   # the shape, before any transaction
            _fields(item, index, None)
        async with self.store.transaction() as tx:
            await self._ensure_conversation(tx)
            parent = await self._leaf(tx)
            pending = None
            if parent is not None and parent.tool_calls and _MARK in (parent.metadata or {}):
                # A stored call whose output was popped, then not given back first:
                # store it again without the call columns (convotree refuses a
                # message after an unanswered call), the old node only kept if other
                # branches go on below it.
                pending = item_of(parent)[0]
                if not _answers(items[0], pending):
                    parent = await self._unpair(tx, parent, pending)
                    pending = None
            pairs = _pairs(items, pending)
            for index, item in enumerate(items):
                fields = _fields(item, index, pairs[index])
                fields.update(self._usage_for(item))
                parent = await tx.append(self.conversation_id, parent=parent,
                                         set_current=not self._pinned, **fields)
        if self._pinned:
            self._pin = parent

    async def pop_item(self) -> Any | None:
        """Remove the branch's last item and return it (None on an empty branch).

        Its node is deleted (with any summary hanging under it, which covered it); if
        other branches continue below it, it stays for them and only this branch moves
        back to its parent."""
        async with self.store.transaction() as tx:
            found = await self._tail(1, tx)
            if not found:
                return None
            leaf = found[-1]
            popped = item_of(leaf)[-1]
            parent = (None if leaf.parent_id is None
                      else await tx.node(self.conversation_id, leaf.parent_id))
            if any(child.kind == "message" for child in await tx.children(leaf)):
                if not self._pinned:
                    await tx.set_current(self.conversation_id, parent)
            else:
                await tx.delete_subtree(leaf)
        if self._pinned:
            self._pin = parent
        return popped

    async def clear_session(self) -> None:
        """Delete the conversation: every branch and summary of it, in one transaction.

        That is what the SDK means by clearing a session. To start afresh while keeping
        the history, call ``restart()`` instead."""
        with contextlib.suppress(ConversationNotFound):   # already gone: cleared
            await self.store.delete_conversation(self.conversation_id)
        if self._pinned:
            self._pin = None

    # --- branching ----------------------------------------------------------------------

    async def restart(self) -> None:
        """The non-destructive clear: the next items start a new root branch of the same
        conversation; every earlier branch stays (``branches()``, ``switch``)."""
        if self._pinned:
            self._pin = None
            return
        with contextlib.suppress(ConversationNotFound):   # nothing written yet
            await self.store.set_current(self.conversation_id, None)

    async def nodes(self, limit: int = 50) -> list[Node]:
        """The branch's newest ``limit`` nodes (one per item), oldest first: where to
        ``fork`` from."""
        return await self._tail(_args.required_count(limit, "limit", minimum=1))

    async def fork(self, at: Node | None = None) -> ConvotreeSession:
        """A session on a new branch that shares this branch's history up to ``at`` (a
        node of this conversation; default: the branch's last node). Nothing is
        copied: the new session's first item becomes a sibling of what follows ``at``."""
        if at is None:
            found = await self._tail(1)
            if not found:
                raise InvalidArgument("an empty session has nothing to fork from")
            at = found[-1]
        at = _args.node(at, "at")
        if at.conversation_id != self.conversation_id:
            raise InvalidArgument("at must be a node of this session's conversation")
        at = await self.store.node(self.conversation_id, at.id)   # NodeNotFound if gone
        return ConvotreeSession(
            self.store, at=at, title=self.title, session_settings=self.session_settings,
            compaction_client=self.compaction_client, compaction_model=self.compaction_model,
            compact_threshold=self.compact_threshold)

    async def branches(self) -> list[Node]:
        """The last node of every branch of the conversation, oldest first."""
        try:
            return await self.store.leaves(self.conversation_id)
        except ConversationNotFound:
            return []

    async def switch(self, leaf: Node) -> None:
        """Put this session on the branch ending at ``leaf``: a pinned session moves its
        pin; otherwise the conversation's current node moves there."""
        leaf = _args.node(leaf, "leaf")
        if leaf.conversation_id != self.conversation_id:
            raise InvalidArgument("leaf must be a node of this session's conversation")
        leaf = await self.store.node(self.conversation_id, leaf.id)
        if self._pinned:
            self._pin = leaf
        else:
            await self.store.set_current(self.conversation_id, leaf)

    # --- token-aware input ----------------------------------------------------------------

    def model_input_filter(
        self, *, model: str, budget: int | None = None, reserve_output: int = 0,
        summarizer: Summarizer | None = None,
    ) -> Callable[[CallModelData[Any]], Awaitable[ModelInputData]]:
        """A ``RunConfig(call_model_input_filter=...)`` that sends convotree's budgeted
        context of the branch instead of the whole history: system and developer items
        always, the deepest summary (made by ``summarizer`` when the rest no longer
        fits, once, then reused by every turn and branch below it), then the newest
        items that fit, never half a tool exchange. The agent's instructions are
        counted against ``budget`` (or the model's window minus ``reserve_output``).
        Items the Runner has not stored yet (after the branch's last item) are sent as
        they are. ``session.last_context`` keeps the context and its report.
        """
        if not isinstance(model, str) or not model:
            raise InvalidArgument("model must be a model name such as 'gpt-4o'")
        if budget is not None:
            _args.required_count(budget, "budget", minimum=1)

        async def call_model_input_filter(data: CallModelData[Any]) -> ModelInputData:
            given = data.model_data
            leaf = (await self._tail(1)) if not self._pinned or self._pin else []
            if not leaf:
                return given
            instructions = count_text(given.instructions or "", encoding_for_model(model))
            room = None if budget is None else max(budget - instructions, 1)
            context = await self.store.context(
                leaf[-1], model=model, budget=room, format="responses",
                reserve_output=reserve_output + (instructions if budget is None else 0),
                summarizer=summarizer)
            self.last_context = context
            sent = list(context.messages)
            last = sent[-1] if sent else None
            later: list[Any] | None = None
            for index in range(len(given.input) - 1, -1, -1):
                if last is not None and _key(cast(Any, given.input[index])) == _key(last):
                    later = list(given.input[index + 1:])
                    break
            if later is None:
                _log.warning("the model input does not hold the session's last item; "
                             "sending it unchanged")
                return given
            return ModelInputData(input=cast(Any, drop_orphans([*sent, *later])),
                                  instructions=given.instructions)

        return call_model_input_filter

    # --- compaction -----------------------------------------------------------------------

    async def run_compaction(self, args: Mapping[str, Any] | None = None, *,
                             wrapper: Any = None) -> None:
        """Compact the branch with OpenAI's ``responses.compact`` and store the result as
        a summary node under its last node; every item stays in the tree and
        ``get_items`` still returns them all. Later budgeted inputs
        (``model_input_filter``) send the compaction instead of what it covers.

        Called by you: compacts now (needs ``compaction_client``). Called by the Runner
        after a turn: only with ``compact_threshold`` set and the branch since its last
        summary over it, or ``force``; never while a tool call waits for its output."""
        automatic = bool(getattr(wrapper, "_session_compaction_is_automatic", False))
        force = bool((args or {}).get("force", False))
        if self.compaction_client is None:
            if automatic:
                return
            raise ConfigurationError("run_compaction needs ConvotreeSession("
                                     "compaction_client=openai.AsyncOpenAI(...))")
        if automatic and not force and self.compact_threshold is None:
            return
        found = await self._tail(1)
        if not found:
            return
        leaf = found[-1]
        if automatic and not force:
            probe = _Overflow()
            await self.store.context(leaf, model=self.compaction_model,
                                     budget=self.compact_threshold, format="responses",
                                     policy=probe)
            if not probe.over:
                return
        context = await self.store.context(leaf, model=self.compaction_model,
                                           format="responses")
        if drop_orphans(list(context.messages)) != list(context.messages):
            _log.info("compaction skipped: a tool call on the branch waits for its output")
            return
        from ..chat_async import AsyncChat

        chat = AsyncChat(self.store, self.compaction_client, model=self.compaction_model,
                         api="responses")
        summary = await chat.compact(leaf)
        if wrapper is not None and getattr(wrapper, "usage", None) is not None:
            from agents.usage import Usage

            wrapper.usage.add(Usage(requests=1, input_tokens=summary.input_tokens or 0,
                                    output_tokens=summary.output_tokens or 0,
                                    total_tokens=(summary.input_tokens or 0)
                                    + (summary.output_tokens or 0)))

    # --- usage ---------------------------------------------------------------------------

    def usage_hooks(self) -> ConvotreeUsageHooks:
        """``RunHooks`` that store each model response's usage on its answer node."""
        return ConvotreeUsageHooks(self)

    def record_response(self, response: Any, *, model: str | None = None) -> None:
        """Remember a model response (an ``agents.ModelResponse``) so that the node of
        its last item, when the Runner adds it, gets its usage: ``model``,
        ``response_id``, input, output, cached and reasoning tokens."""
        produced = response.to_input_items()
        if not produced:
            return
        usage = response.usage
        last = dict(produced[-1])
        # Chat Completions models report no response id; their items carry the
        # completion's id (and the model's) in provider_data.
        found = last.get("provider_data")
        provider: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        fields: dict[str, Any] = {
            "model": model or provider.get("model"),
            "response_id": response.response_id or provider.get("response_id"),
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cached_tokens": getattr(usage.input_tokens_details, "cached_tokens", None),
            "reasoning_tokens": getattr(usage.output_tokens_details, "reasoning_tokens",
                                        None)}
        self._responses.append(_Usage(last, fields))

    def _usage_for(self, item: Mapping[str, Any]) -> dict[str, Any]:
        for pending in self._responses:
            if _same_item(item, pending.last_item):
                self._responses.remove(pending)
                return {k: v for k, v in pending.fields.items() if v is not None}
        return {}

    # --- internals -------------------------------------------------------------------------

    async def _tail(self, limit: int, store: AsyncStore | None = None) -> list[Node]:
        store = store or self.store
        if self._pinned:
            return [] if self._pin is None else await store.tail(self._pin, limit)
        try:
            return await store.tail(self.conversation_id, limit)
        except ConversationNotFound:
            return []

    async def _leaf(self, tx: AsyncStore) -> Node | None:
        if self._pinned:
            return None if self._pin is None else await tx.node(self.conversation_id,
                                                                self._pin.id)
        return await tx.current(self.conversation_id)

    async def _ensure_conversation(self, tx: AsyncStore) -> None:
        try:
            await tx.get_conversation(self.conversation_id)
        except ConversationNotFound:
            try:
                await tx.create_conversation(id=self.conversation_id, title=self.title)
            except ConversationExists:
                # A racing first write of this session made it (fine), or another
                # tenant holds the id (then that is the error).
                try:
                    await tx.get_conversation(self.conversation_id)
                except ConversationNotFound:
                    raise ConversationExists(
                        f"the session's conversation id {self.conversation_id} is in use "
                        "by another tenant") from None

    async def _unpair(self, tx: AsyncStore, node: Node, item: dict[str, Any]) -> Node:
        """The same item as ``node``, stored again without the tool-call columns."""
        keep = any(child.kind == "message" for child in await tx.children(node))
        if not keep:
            await tx.delete_subtree(node)
        parent = (None if node.parent_id is None
                  else await tx.node(self.conversation_id, node.parent_id))
        fields = _fields(item, 0, None)
        for name in ("model", "response_id", "input_tokens", "output_tokens",
                     "cached_tokens", "reasoning_tokens"):
            if getattr(node, name) is not None:
                fields[name] = getattr(node, name)
        return await tx.append(self.conversation_id, parent=parent,
                               set_current=not self._pinned, **fields)
