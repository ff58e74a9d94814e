"""pydantic-ai's ``ConversationStore`` over convotree: ``ConvotreeConversationStore``.

``store.load`` / ``store.save`` around ``agent.run(prompt, conversation=...)``, and
``branch``, ``fork``, ``list_conversations``, ``delete``, work on SQLite and PostgreSQL
in convotree's own alembic-managed tables instead of pydantic-ai's in-memory store::

    store = ConvotreeConversationStore(convotree.AsyncStore(url))   # or a Store
    conversation = await store.load("chat-1") or Conversation(conversation_id="chat-1")
    result = await agent.run("hi", conversation=conversation)
    await store.save(result)

What pydantic-ai asks of a backend, and how it is met:

- ``write_record``: the record and the entries it adds in ONE transaction, compared and
  set on ``expected_revision`` (row lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite):
  a writer that lost the race gets pydantic-ai's ``ConversationConflict`` and nothing
  of its write is kept.
- ``read_history(head_id, limit)``: ONE recursive statement, bounded by ``limit``.
- ``delete_record``: the record, and in the same transaction every entry no remaining
  record's head or branch reaches (the whole tree when no record is left over it).
- scopes: pydantic-ai's own checks, over the ``scope`` column (listed by index).

How records map onto convotree (``_pydantic_ai_ops`` and the "Architecture note" of the
docs): a record and every fork made from it are named heads over ONE convotree
conversation (a tree), so a fork shares the entries it forks from without copying
them, and every entry's parent is inside its own conversation, as convotree and Citus
require. Each entry is a node whose role, content, model and usage columns are filled
(reportable in SQL; ``context()`` budgets it), with pydantic-ai's own JSON of the
message (``ModelMessagesTypeAdapter``) beside it, which is what ``load`` returns.

Bad input (a NUL byte in a message or an id, an id that is not one of this store's
entry ids, an oversized message, a non-string scope) raises a ``ConvotreeError``
subclass before any transaction: nothing is written.

Importing this module imports pydantic-ai (``pip install "convotree[pydantic-ai]"``);
``import convotree`` never does. Tested with pydantic-ai-slim 2.68.0.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

try:
    import pydantic
    import pydantic_core
    from pydantic_ai import DeferredToolRequests
    from pydantic_ai.conversation_store import (
        ConversationConflict,
        ConversationEntry,
        ConversationRecord,
        ConversationStore,
    )
    from pydantic_ai.messages import (
        ModelMessage,
        ModelMessagesTypeAdapter,
        ModelRequest,
        ModelResponse,
        RetryPromptPart,
        SystemPromptPart,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
        UserPromptPart,
    )
    from pydantic_ai.usage import RunUsage
except ImportError as exc:   # pragma: no cover - exercised without the extra installed
    raise ImportError(
        'convotree.adapters.pydantic_ai needs pydantic-ai: pip install '
        '"convotree[pydantic-ai]"') from exc

from .. import _io
from .._validate import check_json, check_text
from ..context import Context
from ..errors import ContentTooLarge, InvalidArgument, InvalidContent, NodeNotFound
from ..store import Store
from ..store_async import AsyncStore
from . import _pydantic_ai_ops as ops

__all__ = ["ConvotreeConversationStore"]

T = TypeVar("T")

#: Longest conversation id or scope (UTF-8 bytes): a key, not a document.
MAX_KEY_BYTES = 1024
#: How many entry ids each store remembers the tree of (see ``_Trees``).
REMEMBERED_ENTRIES = 65_536

_USAGE = pydantic.TypeAdapter(RunUsage)
_DEFERRED = pydantic.TypeAdapter(DeferredToolRequests)


class _Trees:
    """Which tree (convotree conversation) holds an entry, for the entry ids this store
    has read or written.

    pydantic-ai names an entry by its id alone (``read_history(head_id)``), while every
    convotree statement must name the conversation too (Citus routes on it). Every id
    pydantic-ai passes back to a backend comes from a record or history this store just
    read (``load`` reads the record, then its history; ``branch`` the branch tips of
    the record), so remembering the tree of each id seen is enough, without a lookup
    table keyed by entry id (which no shard key could carry). Bounded: the least
    recently seen ids are forgotten first; a record read refreshes its own.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._known: OrderedDict[str, uuid.UUID] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, tree_id: uuid.UUID, *entry_ids: str | None) -> None:
        with self._lock:
            for entry_id in entry_ids:
                if entry_id is None:
                    continue
                self._known[entry_id] = tree_id
                self._known.move_to_end(entry_id)
            while len(self._known) > self._size:
                self._known.popitem(last=False)

    def get(self, entry_id: str) -> uuid.UUID | None:
        with self._lock:
            return self._known.get(entry_id)


def _key(value: Any, what: str) -> str:
    """A conversation id or scope: a non-empty storable string of bounded size."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} must be a non-empty string, not {value!r}")
    check_text(value, what)
    if len(value.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidArgument(f"{what} is longer than {MAX_KEY_BYTES} bytes")
    return value


def _entry_id(value: Any, what: str) -> uuid.UUID:
    """An entry id: pydantic-ai mints ``str(uuid7())``; this store keeps it as the node's
    id, so only that canonical form can come back unchanged."""
    if isinstance(value, str):
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            parsed = None
        if parsed is not None and str(parsed) == value:
            return parsed
    raise InvalidArgument(f"{what} must be an entry id (a UUID in canonical form, as "
                          f"pydantic-ai mints them), not {value!r}")


def _limit(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"limit must be a non-negative integer or None, not {value!r}")
    return value


def _text_of(message: ModelMessage) -> str:
    """What the message says, as text: the content column (reports, token counts,
    ``context()``). The JSON beside it, not this, is what ``load`` returns."""
    pieces: list[str] = []
    for part in message.parts:
        if isinstance(part, SystemPromptPart | TextPart):
            pieces.append(part.content)
        elif isinstance(part, UserPromptPart):
            if isinstance(part.content, str):
                pieces.append(part.content)
            else:
                pieces.extend(item if isinstance(item, str) else
                              f"[{getattr(item, 'kind', type(item).__name__)}]"
                              for item in part.content)
        elif isinstance(part, ToolReturnPart):
            pieces.append(part.model_response_str())
        elif isinstance(part, RetryPromptPart):
            pieces.append(part.model_response())
        elif isinstance(part, ToolCallPart):
            pieces.append(f"{part.tool_name}({part.args_as_json_str()})")
    return "\n\n".join(piece for piece in pieces if piece)


class ConvotreeConversationStore(ConversationStore):
    """pydantic-ai's ``ConversationStore`` in convotree's tables (SQLite, PostgreSQL).

    ``ConvotreeConversationStore(store)`` takes a ``convotree.AsyncStore`` (its calls
    run on the event loop) or a ``convotree.Store`` (its calls run in a worker thread);
    the store's ``tenant`` confines every record, like every convotree conversation.
    ``delete`` removes the entries no other record reaches, in the same transaction.
    """

    def __init__(self, store: AsyncStore | Store) -> None:
        if not isinstance(store, AsyncStore | Store):
            raise InvalidArgument("ConvotreeConversationStore takes a convotree.AsyncStore "
                                  f"or convotree.Store, not {type(store).__name__}")
        self.store = store
        self._trees = _Trees(REMEMBERED_ENTRIES)

    async def _sync(self) -> Store:
        """The ``Store`` whose code runs every call (an ``AsyncStore``'s own, opened)."""
        return await self.store.shared() if isinstance(self.store, AsyncStore) else self.store

    async def _run(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run one of ``_pydantic_ai_ops``' functions: the same code for both shells."""
        if isinstance(self.store, AsyncStore):
            return await _io.spawn(function, await self.store.shared(), *args, **kwargs)
        return await asyncio.to_thread(function, self.store, *args, **kwargs)

    # --- records ---------------------------------------------------------------------

    def _record(self, row: ops.RecordRow) -> ConversationRecord:
        record = ConversationRecord(
            conversation_id=row.name,
            head_id=None if row.head_id is None else str(row.head_id),
            usage=_USAGE.validate_python(row.usage),
            deferred_tool_requests=None if row.deferred_tool_requests is None
            else _DEFERRED.validate_python(row.deferred_tool_requests),
            scope=row.scope, forked_from=row.forked_from,
            forked_at=None if row.forked_at is None else str(row.forked_at),
            branches=list(row.branches), revision=row.revision, updated_at=row.updated_at,
            format_version=1)
        self._trees.remember(row.tree_id, record.head_id, record.forked_at, *record.branches)
        return record

    async def read_record(self, conversation_id: str) -> ConversationRecord | None:
        """The record called ``conversation_id``, or None (two single-key statements)."""
        name = _key(conversation_id, "conversation_id")
        row = await self._run(ops.read_record, name)
        return None if row is None else self._record(row)

    async def read_records(self, *, scope: str | None = None, limit: int | None = None
                           ) -> Sequence[ConversationRecord]:
        """The records (of ``scope``), most recently saved first, at most ``limit``."""
        if scope is not None:
            scope = _key(scope, "scope")
        rows = await self._run(ops.read_records, scope, _limit(limit))
        return [self._record(row) for row in rows]

    async def tree_of(self, conversation_id: str) -> uuid.UUID | None:
        """The convotree conversation holding the record and its entries (shared by the
        record's forks), for ``Store.tree``/``context`` and SQL reports; None if none."""
        name = _key(conversation_id, "conversation_id")
        row = await self._run(ops.read_record, name)
        return None if row is None else row.tree_id

    async def write_record(
        self,
        record: ConversationRecord,
        *,
        new_entries: Sequence[ConversationEntry] = (),
        expected_revision: str | None,
    ) -> None:
        """Store the record and its new entries together (one transaction), replacing
        the record of ``expected_revision``; ``ConversationConflict`` otherwise."""
        if not isinstance(record, ConversationRecord):
            raise InvalidArgument(f"record must be a ConversationRecord, not "
                                  f"{type(record).__name__}")
        name = _key(record.conversation_id, "conversation_id")
        if expected_revision is not None:
            _key(expected_revision, "expected_revision")
        values = self._record_values(record)
        sync = await self._sync()
        entries = [_entry(sync, entry, index) for index, entry in enumerate(new_entries)]
        hint = None
        if expected_revision is None:
            anchor = (new_entries[0].parent_id if new_entries else record.head_id)
            if anchor is not None:
                hint = self._trees.get(anchor)
                if hint is None and record.forked_from is not None:
                    source = await self._run(ops.read_record,
                                             _key(record.forked_from, "forked_from"))
                    hint = None if source is None else source.tree_id
                if hint is None:   # an entry another process wrote: found by its id
                    hint = await self._run(ops.tree_of_entry, _entry_id(anchor, "head_id"))
                if hint is None:
                    raise ConversationConflict(name)   # an entry this tenant does not have
        try:
            tree_id = await self._run(ops.write_record, name=name, record=values,
                                      entries=entries, expected_revision=expected_revision,
                                      tree_hint=hint)
        except ops.Conflict:
            raise ConversationConflict(name) from None
        self._trees.remember(tree_id, *(str(entry.id) for entry in entries),
                             record.head_id, *record.branches)

    def _record_values(self, record: ConversationRecord) -> dict[str, Any]:
        """The record as column values, every field checked (before any transaction)."""
        if record.format_version != 1:
            raise InvalidArgument(f"format_version {record.format_version!r} is not one "
                                  "this store writes (1)")
        branches = record.branches
        if not isinstance(branches, list):
            raise InvalidArgument("record.branches must be a list of entry ids")
        for tip in branches:
            _entry_id(tip, "a branch tip")
        scope = None if record.scope is None else _key(record.scope, "scope")
        forked_from = (None if record.forked_from is None
                       else _key(record.forked_from, "forked_from"))
        if not isinstance(record.usage, RunUsage):
            raise InvalidArgument("record.usage must be a pydantic_ai.usage.RunUsage")
        if record.deferred_tool_requests is not None and not isinstance(
                record.deferred_tool_requests, DeferredToolRequests):
            raise InvalidArgument("record.deferred_tool_requests must be "
                                  "DeferredToolRequests or None")
        usage = _USAGE.dump_python(record.usage, mode="json")
        deferred = (None if record.deferred_tool_requests is None
                    else _DEFERRED.dump_python(record.deferred_tool_requests, mode="json"))
        check_json(usage, "usage")
        if deferred is not None:
            check_json(deferred, "deferred_tool_requests")
        from .._args import timestamp

        updated_at = timestamp(record.updated_at, "updated_at")
        return {
            "head_id": None if record.head_id is None else _entry_id(record.head_id, "head_id"),
            "branches": list(branches), "usage": usage, "deferred_tool_requests": deferred,
            "scope": scope, "forked_from": forked_from,
            "forked_at": None if record.forked_at is None
            else _entry_id(record.forked_at, "forked_at"),
            "revision": _key(record.revision, "revision"), "updated_at": updated_at,
            "format_version": 1,
        }

    async def delete_record(self, conversation_id: str, *, expected_revision: str) -> None:
        """Delete the record of ``expected_revision`` and, in the same transaction, the
        entries no remaining record reaches; ``ConversationConflict`` otherwise."""
        name = _key(conversation_id, "conversation_id")
        _key(expected_revision, "expected_revision")
        try:
            await self._run(ops.delete_record, name, expected_revision)
        except ops.Conflict:
            raise ConversationConflict(name) from None

    # --- entries ---------------------------------------------------------------------

    async def read_history(self, head_id: str | None, *, limit: int | None = None
                           ) -> list[ConversationEntry]:
        """The entries from the first (or the ``limit``-th newest) up to ``head_id``,
        oldest first: ONE recursive statement whose cost follows ``limit``."""
        limit = _limit(limit)
        if head_id is None:
            return []
        head = _entry_id(head_id, "head_id")
        tree_id = self._trees.get(head_id)
        if tree_id is None:
            # An id this store object has not seen (another process wrote it, or it
            # was kept for later): one indexed lookup by the id alone.
            tree_id = await self._run(ops.tree_of_entry, head)
        if tree_id is None:
            raise NodeNotFound(f"no entry {head_id} in this tenant's conversations",
                               node_id=head)
        rows = await self._run(ops.read_history, tree_id, head, limit)
        entries = [ConversationEntry(
            id=str(node_id), parent_id=None if parent_id is None else str(parent_id),
            message=ModelMessagesTypeAdapter.validate_python([message])[0])
            for node_id, parent_id, message in rows]
        self._trees.remember(tree_id, *(entry.id for entry in entries))
        return entries

    async def read_entry(self, entry_id: str) -> ConversationEntry:
        """One entry (``NodeNotFound``, a ``LookupError``, when there is none)."""
        entries = await self.read_history(entry_id, limit=1)
        return entries[0]

    # --- convotree on top ------------------------------------------------------------

    async def context(self, conversation_id: str, *, model: str, budget: int | None = None,
                      **options: Any) -> Context:
        """convotree's budgeted context of the conversation's history (``Store.context``
        on its head: exact token counts, system messages kept, summaries reused)."""
        name = _key(conversation_id, "conversation_id")
        row = await self._run(ops.read_record, name)
        if row is None or row.head_id is None:
            raise NodeNotFound(f"conversation {conversation_id!r} has no stored messages")

        def assemble(store: Store) -> Context:
            node = store.node(row.tree_id, row.head_id)  # type: ignore[arg-type]
            return store.context(node, model=model, budget=budget, **options)

        return await self._run(assemble)


def _entry(store: Store, entry: ConversationEntry, index: int) -> ops.NewEntry:
    """One new entry as a checked convotree message plus its pydantic-ai JSON."""
    if not isinstance(entry, ConversationEntry) or entry.kind != "message":
        raise InvalidArgument(f"new entry {index} must be a ConversationEntry of kind "
                              "'message'")
    message = entry.message
    if not isinstance(message, ModelRequest | ModelResponse):
        raise InvalidArgument(f"new entry {index}: the message must be a ModelRequest "
                              f"or ModelResponse, not {type(message).__name__}")
    try:
        dumped = ModelMessagesTypeAdapter.dump_python([message], mode="json")[0]
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
        raise InvalidContent(f"new entry {index}: pydantic-ai cannot serialize the "
                             f"message: {exc}") from exc
    size = len(check_json(dumped, f"new entry {index}").encode("utf-8"))
    limit = store.max_message_bytes
    if size > limit:
        raise ContentTooLarge(f"new entry {index} is {size} bytes as JSON; this store "
                              f"accepts at most {limit}", size=size, limit=limit)
    fields: dict[str, Any] = {"content": _text_of(message), "created_at": message.timestamp}
    if isinstance(message, ModelResponse):
        usage = message.usage
        fields.update(
            role="assistant", model=message.model_name,
            input_tokens=usage.input_tokens or None,
            output_tokens=usage.output_tokens or None,
            cached_tokens=usage.cache_read_tokens or None,
            reasoning_tokens=(usage.details or {}).get("reasoning_tokens") or None,
            response_id=message.provider_response_id, finish_reason=message.finish_reason)
    else:
        prompts = [isinstance(part, SystemPromptPart) for part in message.parts]
        fields["role"] = "system" if prompts and all(prompts) else "user"
        # pydantic-ai sends the system prompt in the same request as the first user
        # prompt: pinned, so a budgeted context() always keeps it, like a system message.
        fields["pinned"] = any(prompts)
    prepared = store._prepare(**fields)
    parent = None if entry.parent_id is None else _entry_id(entry.parent_id, "parent_id")
    return ops.NewEntry(id=_entry_id(entry.id, "entry id"), parent_id=parent,
                        message=prepared, json=dumped)

