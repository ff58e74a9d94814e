"""``Store``: the synchronous shell around the database operations.

It owns the engine (or borrows the caller's), opens one transaction per call, runs
one operation from ``_ops``, and translates driver errors into ``StoreError`` at this
single boundary. Validation and token counting happen before the transaction opens,
so a bad message costs no lock and writes nothing.
"""

from __future__ import annotations

import contextlib
import copy
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from . import _args, _dberrors, _io, _migrate, _ops, _rls, tokens
from ._engine import WRITE_OPTION, check_engine, create_engine, is_configured
from ._validate import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Content,
    PreparedMessage,
    check_json,
    check_metadata,
    check_text,
    check_title,
    check_tool_definition,
    prepare_message,
)
from .errors import (
    ConfigurationError,
    ContentTooLarge,
    ConvotreeError,
    InvalidArgument,
    InvalidContent,
    InvalidKind,
    InvalidParent,
    StoreError,
)
from .models import Conversation, Node

if TYPE_CHECKING:
    from ._assemble import SummaryPlan
    from .context import Context, PruningPolicy
    from .summaries import Summarizer, SummaryOptions

__all__ = ["ConversationRef", "Store", "StoreOptions"]

class StoreOptions(TypedDict, total=False):
    """The keywords of ``Store`` (and ``AsyncStore``).

    ``tenant``: the only conversations the store sees (default ''); ``create``: upgrade
    the schema instead of refusing an old one; ``encoding``: the tiktoken encoding of
    messages stored without a model; ``max_message_bytes``: the largest message.
    """

    tenant: str
    create: bool
    encoding: str
    max_message_bytes: int


def check_options(options: StoreOptions) -> tuple[str, bool, str, int]:
    """Check every keyword of ``Store`` at construction (for both shells), so that a
    bad option fails where it is written, not at the first message: returns
    (tenant, create, encoding, max_message_bytes)."""
    unknown = set(options) - set(StoreOptions.__annotations__)
    if unknown:
        raise ConfigurationError(
            f"unknown store options {sorted(unknown)}; the options are "
            f"{', '.join(StoreOptions.__annotations__)}")
    tenant = check_tenant(options.get("tenant", ""))
    create = options.get("create", False)
    if not isinstance(create, bool):
        raise ConfigurationError(f"create must be True or False, not {create!r}")
    encoding = tokens.check_encoding_name(options.get("encoding", tokens.DEFAULT_ENCODING))
    limit = options.get("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)
    if isinstance(limit, bool) or not isinstance(limit, int) or not (
            1 <= limit <= MAX_MESSAGE_BYTES_LIMIT):
        raise ConfigurationError(
            f"max_message_bytes must be an integer from 1 to {MAX_MESSAGE_BYTES_LIMIT:,} "
            f"(PostgreSQL holds at most 1 GiB in a field), not {limit!r}")
    return tenant, create, encoding, limit


#: Longest tenant name (UTF-8 bytes): a tenant is a key, not a document.
MAX_TENANT_BYTES = 256
#: The largest ``max_message_bytes`` a store accepts.
MAX_MESSAGE_BYTES_LIMIT = 1024**3


def check_tenant(tenant: Any) -> str:
    if not isinstance(tenant, str):
        raise ConfigurationError(f"tenant must be a string, not {type(tenant).__name__}")
    try:
        check_text(tenant, "tenant")
    except InvalidContent as exc:
        raise ConfigurationError(str(exc)) from exc
    if len(tenant.encode("utf-8")) > MAX_TENANT_BYTES:
        raise ConfigurationError(f"tenant is longer than {MAX_TENANT_BYTES} bytes")
    return tenant


#: A conversation given as the object, or its id.
ConversationRef = Conversation | uuid.UUID | str


#: The ``append`` keywords a message of ``append_chain`` may carry.
_APPEND_FIELDS = frozenset({
    "role", "content", "name", "tool_calls", "tool_call_id", "model", "pinned", "metadata",
    "kind", "input_tokens", "output_tokens", "created_at", "response_id", "finish_reason",
    "cached_tokens", "reasoning_tokens", "counted_input_tokens", "api_items"})


_conversation_id = _args.conversation_id
_node_id = _args.node_id


def _refuse_a_lost_transaction(bound: Connection, exc: SQLAlchemyError) -> None:
    """On SQLite a full disk or an I/O error can roll back the WHOLE transaction, not
    only the savepoint; the connection is then in autocommit, and every later call
    of the caller's transaction would commit on its own while the caller believes it
    is still inside one (and its earlier writes are gone). Make that impossible: drop
    the connection, so the later calls and the caller's commit fail, and say so."""
    if bound.dialect.name != "sqlite" or bound.invalidated:
        return
    driver = getattr(bound.connection, "driver_connection", None)
    if driver is not None and getattr(driver, "in_transaction", True) is False:
        cause = exc.__context__ if exc.__context__ is not None else exc
        bound.invalidate()
        raise StoreError(
            "the database rolled back the whole transaction (SQLite does so on a full "
            "disk or an I/O error): nothing of it was written, and the transaction "
            f"cannot go on: {getattr(cause, 'orig', None) or cause}") from exc


class Store:
    """Conversations as trees of messages in SQLite or PostgreSQL.

    ``Store(url)`` creates and owns an engine; ``Store(engine)`` borrows one (on SQLite,
    convotree installs its connection hooks on it). A store only sees the
    conversations of its ``tenant``; another tenant's ids behave as unknown ids.

    The database must already be at convotree's schema (``convotree.migrate(url)``);
    ``create=True`` upgrades it first instead of raising ``SchemaOutOfDate``.

    Every call is one transaction of its own, unless the store is bound to a connection
    the caller holds (``bind``) or to one transaction (``transaction``): then every call
    runs in a savepoint of that transaction, and the caller commits.
    """

    #: The caller's connection every call runs on (``bind``/``transaction``), or None.
    _bound: Connection | None = None

    def __init__(self, url_or_engine: str | Engine, **options: Unpack[StoreOptions]) -> None:
        tenant, create, encoding, max_message_bytes = check_options(options)
        if isinstance(url_or_engine, Engine):
            check_engine(url_or_engine)
            self.engine, self._owns_engine = url_or_engine, False
        elif isinstance(url_or_engine, str):
            self.engine, self._owns_engine = create_engine(url_or_engine), True
        else:
            raise ConfigurationError(
                "Store() takes a database URL (e.g. 'sqlite:///chat.db') or an SQLAlchemy "
                f"Engine, not {type(url_or_engine).__name__}")
        self.tenant = tenant
        self.encoding = encoding
        self.max_message_bytes = max_message_bytes
        try:
            if create:
                _migrate.migrate(self.engine)
            else:
                _migrate.check(self.engine)
        except SQLAlchemyError as exc:
            self.close()
            raise _dberrors.opening(exc, self.engine) from exc
        except BaseException:
            self.close()
            raise

    # --- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Dispose of the engine if this store created it."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        try:
            if self._bound is not None:
                # Inside the caller's transaction: a savepoint, so a call that fails
                # leaves the caller's transaction as it was (and usable).
                try:
                    with self._bound.begin_nested():
                        _rls.set_tenant(self._bound, self.tenant)
                        yield self._bound
                except SQLAlchemyError as exc:
                    _refuse_a_lost_transaction(self._bound, exc)
                    raise
                return
            with self.engine.connect() as conn:
                if write:
                    conn = conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    _rls.set_tenant(conn, self.tenant)
                    yield conn
        except ConvotreeError:
            raise
        except SQLAlchemyError as exc:
            raise _dberrors.translate(exc) from exc

    @contextlib.contextmanager
    def _single_statement(self) -> Iterator[Connection | None]:
        """A connection for ONE statement that is a whole write: on PostgreSQL, outside a
        caller's transaction, in autocommit mode (the statement is its own transaction,
        with no BEGIN and COMMIT round trips). None elsewhere: use ``_transaction``."""
        if (self._bound is not None or self.engine.dialect.name != "postgresql"
                or not _rls.known_inactive(self.engine)):
            # (Under row-level security the tenant setting needs a transaction.)
            yield None
            return
        try:
            with self.engine.connect() as conn:
                yield conn.execution_options(isolation_level="AUTOCOMMIT")
        except ConvotreeError:
            raise
        except SQLAlchemyError as exc:
            raise _dberrors.translate(exc) from exc

    @contextlib.contextmanager
    def _one_read(self) -> Iterator[Connection]:
        """For a read that is one statement (its own consistent snapshot): on PostgreSQL,
        outside a caller's transaction, no BEGIN and COMMIT round trips; elsewhere a
        read transaction. (A context may read twice; each read is whole by itself.)"""
        with self._single_statement() as conn:
            if conn is not None:
                yield conn
                return
        with self._transaction(write=False) as conn:
            yield conn

    def with_tenant(self, tenant: str) -> Store:
        """The same store (engine, options, binding) for another tenant: cheap, no
        query; what a multi-tenant service makes per request from one store."""
        tenant = check_tenant(tenant)
        view = copy.copy(self)
        view.tenant, view._owns_engine = tenant, False
        return view

    # --- transactions the caller controls ----------------------------------------------

    def bind(self, connection: Connection) -> Store:
        """This store's methods on a connection the caller holds, inside its transaction.

        Every call runs in a savepoint of the caller's transaction and never commits or
        rolls it back: the caller's own rows and convotree's nodes commit (or roll back)
        together, when the caller says so. For an ORM ``Session``:
        ``store.bind(session.connection())``. On SQLite the connection must come from an
        engine made by ``convotree.create_engine`` (foreign keys, real transactions).
        """
        if not isinstance(connection, Connection):
            raise ConfigurationError(
                f"bind() takes a SQLAlchemy Connection, not {type(connection).__name__} "
                "(for a Session: store.bind(session.connection()))")
        if connection.dialect.name == "sqlite" and not is_configured(connection.engine):
            raise ConfigurationError(
                "bind() on SQLite needs a connection of an engine made by "
                "convotree.create_engine(): a plain engine enforces no foreign keys and "
                "cannot open real transactions")
        view = copy.copy(self)
        view._bound, view._owns_engine = connection, False
        return view

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Store]:
        """Several calls as ONE transaction: ``with store.transaction() as tx:``.

        ``tx`` has every method of the store; all its writes commit together when the
        block ends, and none of them if it raises. On SQLite the transaction takes the
        write lock when it begins (``BEGIN IMMEDIATE``), as every write does.
        """
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    _rls.set_tenant(conn, self.tenant)
                    yield self.bind(conn)
        except ConvotreeError:
            raise
        except SQLAlchemyError as exc:
            raise _dberrors.translate(exc) from exc

    # --- conversations ---------------------------------------------------------------

    def create_conversation(
        self,
        *,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        id: uuid.UUID | str | None = None,
        created_at: datetime | None = None,
    ) -> Conversation:
        """Start a new, empty conversation.

        ``id`` lets the caller choose the id (an import, an id minted elsewhere); an id
        already in use raises ``ConversationExists``, the same error whether this
        tenant or another one holds it.
        """
        self._check_conversation_fields(title, metadata)
        conversation_id = None if id is None else _args.as_id(id, "id")
        created_at = _args.timestamp(created_at, "created_at")
        try:
            with self._transaction(write=True) as conn:
                return _ops.create_conversation(
                    conn, tenant=self.tenant, title=title, metadata=metadata,
                    conversation_id=conversation_id, created_at=created_at,
                )
        except StoreError as exc:
            if conversation_id is not None and isinstance(exc.__cause__, IntegrityError):
                raise _ops.id_in_use(conversation_id) from None
            raise

    def _check_conversation_fields(self, title: Any, metadata: Any) -> None:
        """Title and metadata of a conversation: storable, and together no larger than
        one message may be."""
        check_title(title)
        check_metadata(metadata)
        size = len(title.encode("utf-8")) if isinstance(title, str) else 0
        if isinstance(metadata, Mapping):
            size += len(check_json(metadata, "metadata").encode("utf-8"))
        if size > self.max_message_bytes:
            raise ContentTooLarge(
                f"the conversation's title and metadata are {size} bytes; this store "
                f"accepts at most {self.max_message_bytes}", size=size,
                limit=self.max_message_bytes)

    def get_conversation(self, conversation: ConversationRef) -> Conversation:
        """The conversation as it is now (title, current node, clocks)."""
        with self._transaction(write=False) as conn:
            return _ops.get_conversation(
                conn, tenant=self.tenant, conversation_id=_conversation_id(conversation)
            )

    def list_conversations(
        self, *, limit: int = 50, before: Conversation | None = None
    ) -> list[Conversation]:
        """Conversations with the most recent activity first.

        Pass the last conversation of a page as ``before`` to get the next page.
        """
        limit = _args.limit(limit)
        before = _args.conversation_or_none(before, "before")
        if before is not None:
            _args.as_id(before.id, "before.id")
            if _args.timestamp(before.updated_at, "before.updated_at") is None:
                raise InvalidArgument("before must be a Conversation of a previous page "
                                      "(its updated_at is missing)")
        with self._transaction(write=False) as conn:
            return _ops.list_conversations(conn, tenant=self.tenant, limit=limit, before=before)

    def update_conversation(
        self,
        conversation: ConversationRef,
        *,
        title: str | None = _ops.UNSET,
        metadata: Mapping[str, Any] | None = _ops.UNSET,
    ) -> Conversation:
        """Change the title and/or replace the metadata; arguments not given stay."""
        self._check_conversation_fields(None if title is _ops.UNSET else title,
                                        None if metadata is _ops.UNSET else metadata)
        conversation_id = _conversation_id(conversation)
        with self._transaction(write=True) as conn:
            return _ops.update_conversation(
                conn, tenant=self.tenant, conversation_id=conversation_id,
                title=title, metadata=metadata,
            )

    def rename_conversation(self, conversation: ConversationRef, title: str | None
                            ) -> Conversation:
        """Set the conversation's title."""
        return self.update_conversation(conversation, title=title)

    def delete_conversation(self, conversation: ConversationRef) -> None:
        """Delete a conversation with all its nodes, in one transaction."""
        conversation_id = _conversation_id(conversation)
        with self._transaction(write=True) as conn:
            _ops.delete_conversation(conn, tenant=self.tenant, conversation_id=conversation_id)

    # --- writing nodes -----------------------------------------------------------------

    def append(
        self,
        conversation: ConversationRef,
        *,
        role: str,
        content: Content = None,
        parent: Node | uuid.UUID | str | None = None,
        name: str | None = None,
        tool_calls: Any = None,
        tool_call_id: str | None = None,
        model: str | None = None,
        pinned: bool = False,
        metadata: Mapping[str, Any] | None = None,
        kind: str = "message",
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        created_at: datetime | None = None,
        set_current: bool = True,
        response_id: str | None = None,
        finish_reason: str | None = None,
        cached_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        counted_input_tokens: int | None = None,
        api_items: Sequence[Mapping[str, Any]] | None = None,
    ) -> Node:
        """Add a message under ``parent`` (a new root when ``parent`` is None).

        Appending under a node that already has children is a fork: both branches
        stay, each identified by its leaf. By default the conversation's current node
        moves to the new node. Tokens are counted here, once, under the encoding of
        ``model`` (or the store's encoding when no model is given).

        The API facts (``response_id`` … ``api_items``) are what ``Chat`` records for an
        answer it received; ``counted_input_tokens`` is the prompt size convotree
        computed for that request, to compare with the billed ``input_tokens``.
        """
        conversation_id = _conversation_id(conversation)
        parent_id = None if parent is None else _node_id(parent)
        set_current = _args.flag(set_current, "set_current")
        if isinstance(parent, Node) and parent.conversation_id != conversation_id:
            raise InvalidParent(
                f"parent {parent.id} belongs to conversation {parent.conversation_id}, "
                f"not {conversation_id}",
                conversation_id=conversation_id, node_id=parent.id,
            )
        message = self._prepare(
            kind=kind, role=role, content=content, name=name, tool_calls=tool_calls,
            tool_call_id=tool_call_id, model=model, input_tokens=input_tokens,
            output_tokens=output_tokens, pinned=pinned, metadata=metadata,
            created_at=created_at, response_id=response_id, finish_reason=finish_reason,
            cached_tokens=cached_tokens, reasoning_tokens=reasoning_tokens,
            counted_input_tokens=counted_input_tokens, api_items=api_items,
        )
        with self._single_statement() as conn:
            if conn is not None:
                made = _ops.append_in_one(
                    conn, tenant=self.tenant, conversation_id=conversation_id,
                    parent_id=parent_id, message=message, set_current=set_current)
                if made is not None:
                    return made
        with self._transaction(write=True) as conn:
            return _ops.append(
                conn, tenant=self.tenant, conversation_id=conversation_id,
                parent_id=parent_id, message=message, set_current=set_current,
            )

    def append_chain(self, parent: Node, messages: Sequence[Mapping[str, Any]], *,
                     set_current: bool = True) -> list[Node]:
        """Append several messages in one transaction, each under the one before.

        For a turn that is several rows, such as the results of an assistant's tool
        calls: either every message is stored or none is (a bad one, or a result for a
        call that was not made, leaves the database as it was). Each item of
        ``messages`` holds ``append`` keywords (``role``, ``content``, ``tool_call_id``…).
        """
        parent = _args.node(parent, "parent")
        set_current = _args.flag(set_current, "set_current")
        if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
            raise InvalidArgument("messages must be a list of dicts of append keywords")
        prepared = []
        for index, fields in enumerate(messages):
            if not isinstance(fields, Mapping):
                raise InvalidArgument(f"message {index} must be a dict of append keywords")
            unknown = set(fields) - _APPEND_FIELDS
            if unknown:
                raise InvalidContent(f"message {index}: unknown fields {sorted(unknown)}")
            if "role" not in fields:
                raise InvalidContent(f"message {index}: a role is needed")
            prepared.append(self._prepare(**fields))
        if not prepared:
            return []
        nodes: list[Node] = []
        with self._transaction(write=True) as conn:
            parent_id = parent.id
            for message in prepared:
                node = _ops.append(
                    conn, tenant=self.tenant, conversation_id=parent.conversation_id,
                    parent_id=parent_id, message=message, set_current=set_current)
                nodes.append(node)
                parent_id = node.id
        return nodes

    def _prepare(self, *, role: str, content: Content = None, kind: str = "message",
                 model: str | None = None, **fields: Any) -> PreparedMessage:
        """Validate and count one message (before any transaction opens)."""
        values: dict[str, Any] = {
            "name": None, "tool_calls": None, "tool_call_id": None, "input_tokens": None,
            "output_tokens": None, "pinned": False, "metadata": None, "created_at": None}
        values.update(fields)
        if model is not None and not isinstance(model, str):
            raise InvalidArgument(f"model must be a string, not {model!r}")
        return prepare_message(
            kind=kind, role=role, content=content, model=model,
            encoding=tokens.encoding_for_model(model) if model else self.encoding,
            max_message_bytes=self.max_message_bytes, **values)

    def edit(self, /, node: Node, content: Content, **fields: Any) -> Node:
        """Append a sibling of ``node`` with new content: an edited prompt, or a new answer.

        The original stays, as its own branch. Role, name and model are copied from
        ``node`` unless given in ``fields`` (any ``append`` keyword).
        """
        node = _args.node(node)
        if node.kind != "message":
            raise InvalidParent(
                "a summary is not edited: it is a cache of the messages above it (delete "
                "it with delete_subtree(summary), or store another with add_summary)",
                conversation_id=node.conversation_id, node_id=node.id)
        if "parent" in fields:
            raise InvalidArgument("edit() keeps the node's parent; to write elsewhere, "
                                  "use append(parent=...)")
        unknown = set(fields) - _APPEND_FIELDS - {"set_current"}
        if unknown:
            raise InvalidArgument(f"edit() got unknown keywords {sorted(unknown)}; it takes "
                                  "append's keywords")
        # The stored row decides (NodeNotFound once deleted), not the caller's copy.
        node = self.node(node.conversation_id, node.id)
        if node.kind != "message":
            raise InvalidParent(
                "a summary is not edited: it is a cache of the messages above it (delete "
                "it with delete_subtree(summary), or store another with add_summary)",
                conversation_id=node.conversation_id, node_id=node.id)
        fields.setdefault("role", node.role)
        fields.setdefault("name", node.name)
        fields.setdefault("model", node.model)
        return self.append(node.conversation_id, parent=node.parent_id, content=content,
                           **fields)

    def set_current(self, conversation: ConversationRef, node: Node | uuid.UUID | str | None
                    ) -> None:
        """Move the conversation to a branch: ``node`` becomes its current node."""
        with self._transaction(write=True) as conn:
            _ops.set_current(
                conn, tenant=self.tenant, conversation_id=_conversation_id(conversation),
                node_id=None if node is None else _node_id(node),
            )

    def delete_subtree(self, node: Node) -> int:
        """Delete a node and everything below it (one transaction); returns the count."""
        node = _args.node(node)
        with self._transaction(write=True) as conn:
            return _ops.delete_subtree(
                conn, tenant=self.tenant, conversation_id=node.conversation_id, node_id=node.id
            )

    # --- contexts ------------------------------------------------------------------------

    def context(
        self,
        node: Node,
        *,
        model: str,
        budget: int | None = None,
        reserve_output: int = 0,
        tools: Sequence[Mapping[str, Any]] | None = None,
        format: str = "chat",
        policy: PruningPolicy | None = None,
        summarizer: Summarizer | None = None,
        summary_options: SummaryOptions | None = None,
    ) -> Context:
        """The messages to send for the branch ending at ``node``, within the budget.

        The budget is ``budget`` if given, else the model's context window minus
        ``reserve_output``. System, developer and pinned messages are always sent;
        then the newest messages that fit, never splitting a tool call from its
        results. ``format="chat"`` gives Chat Completions messages, ``"responses"``
        Responses input items. ``Context.tokens`` is the exact prompt total by
        OpenAI's counting rule; ``Context.report`` says what was kept and dropped.
        One SQL statement, whose cost follows the budget, not the conversation length.

        The deepest summary on the path stands for everything above it. With a
        ``summarizer``, a new summary is made when the messages after that one no
        longer fit (see ``SummaryOptions``): the summarizer runs outside any
        transaction, the summary is stored (insert-or-reuse), and the context is
        assembled again with it. If the summarizer fails, the context is pruned
        without it, ``report.summary_error`` says why, and nothing is written.
        """
        # The assembler is loaded on first use: opening a store to list or read
        # conversations (every command-line call) does not pay for it.
        from ._assemble import assemble
        from .summaries import SUMMARY_HEADER, SummaryOptions, log_outcome

        node = _args.node(node)
        if not isinstance(model, str) or not model:
            raise InvalidArgument(f"model must be a model name such as 'gpt-4o', not "
                                  f"{model!r}")
        budget = _args.count(budget, "budget", optional=True)   # 0: BudgetExceeded
        reserve_output = _args.required_count(reserve_output, "reserve_output")
        tools = _args.tools(tools)
        for index, tool in enumerate(tools or ()):
            check_tool_definition(tool, index)
        format = _args.choice(format, "format", ("chat", "responses"))
        if policy is not None and not callable(getattr(policy, "select", None)):
            raise InvalidArgument("policy must have a select(window, budget) method (see "
                                  "convotree.PruningPolicy)")
        if summary_options is not None and not isinstance(summary_options, SummaryOptions):
            raise InvalidArgument("summary_options must be a convotree.SummaryOptions")
        if summarizer is not None and not callable(getattr(summarizer, "summarize", None)):
            raise InvalidArgument("summarizer must have a summarize(request) method (see "
                                  "convotree.Summarizer)")

        def build(options: SummaryOptions | None) -> tuple[Context, SummaryPlan | None]:
            with self._one_read() as conn:
                return assemble(
                    conn, tenant=self.tenant, conversation_id=node.conversation_id,
                    node_id=node.id, model=model, budget=budget,
                    reserve_output=reserve_output, tools=tools, fmt=format, policy=policy,
                    summary_options=options,
                )

        options = (summary_options or SummaryOptions()) if summarizer is not None else None
        context, plan = build(options)
        if plan is None or summarizer is None:
            if summarizer is not None:
                log_outcome(context, conversation_id=node.conversation_id, node_id=node.id,
                            summarizer=summarizer.name)
            return context
        try:
            # A coroutine (an async summarizer) is awaited when this runs in AsyncStore.
            result = _io.resolve(summarizer.summarize(plan.request), what="the summarizer")
            summary = prepare_message(
                kind="summary", role="system", content=SUMMARY_HEADER + result.text,
                name=None, tool_calls=None, tool_call_id=None,
                model=result.model or summarizer.name, encoding=plan.request.encoding,
                input_tokens=result.input_tokens, output_tokens=result.output_tokens,
                pinned=False, metadata={"summarizer": summarizer.name}, created_at=None,
                max_message_bytes=self.max_message_bytes,
            )
        except ConfigurationError:
            raise   # an async summarizer given to the sync store: the caller's mistake
        except Exception as exc:  # any summarizer failure: prune without a new summary
            pruned = replace(context, report=replace(
                context.report, summarizer_calls=1,
                summary_error=f"{type(exc).__name__}: {exc}"))
            log_outcome(pruned, conversation_id=node.conversation_id, node_id=node.id,
                        summarizer=summarizer.name)
            return pruned
        with self._transaction(write=True) as conn:
            created = _ops.insert_summary(
                conn, tenant=self.tenant, conversation_id=plan.conversation_id,
                covered_id=plan.cut_id, base_id=plan.base_id, message=summary)
        fresh, _ = build(None)
        made = replace(fresh, report=replace(
            fresh.report, summarizer_calls=1, summary_created=created,
            queries=fresh.report.queries + context.report.queries + 1))
        log_outcome(made, conversation_id=node.conversation_id, node_id=node.id,
                    summarizer=summarizer.name)
        return made

    def add_summary(
        self,
        covered: Node,
        content: str,
        *,
        base: Node | uuid.UUID | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        api_items: Sequence[Mapping[str, Any]] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Node:
        """Store a summary of the branch down to ``covered`` (made elsewhere); return it.

        ``base`` is the summary this one extends (None: it covers from the root).
        Insert-or-reuse like the summaries ``context()`` makes: if a summary already
        hangs under ``covered``, that one is returned and nothing is written.
        ``api_items`` holds what the Responses API should receive instead of the text
        (an OpenAI compaction item); Chat Completions requests get ``content``.
        """
        covered = _args.node(covered, "covered")
        if covered.kind != "message":
            raise InvalidParent("a summary covers messages, not another summary",
                                conversation_id=covered.conversation_id, node_id=covered.id)
        message = self._prepare(
            kind="summary", role="system", content=content, model=model,
            input_tokens=input_tokens, output_tokens=output_tokens, api_items=api_items,
            metadata=metadata)
        base_id = None if base is None else _node_id(base)
        with self._transaction(write=True) as conn:
            if base_id is not None:
                _ops.check_summary_base(conn, tenant=self.tenant,
                                        conversation_id=covered.conversation_id,
                                        covered_id=covered.id, base_id=base_id)
            _ops.insert_summary(conn, tenant=self.tenant, conversation_id=covered.conversation_id,
                                covered_id=covered.id, base_id=base_id, message=message)
            return next(node for node in _ops.children(
                conn, tenant=self.tenant, conversation_id=covered.conversation_id,
                node_id=covered.id) if node.kind == "summary")

    def redact(self, node: Node, replacement: str = "[redacted]") -> Node:
        """Replace a message's content in place (for example to erase personal data).

        Every summary that covers the node is deleted in the same transaction, so no
        summary keeps what was removed; the next context with a summarizer makes a
        new one. Tool calls and ids stay, so the branch keeps its shape.

        Summaries themselves are not redacted (``InvalidKind``): a summary is a cache
        of the messages above it, so redact those messages (which deletes the summary)
        or delete the summary with ``delete_subtree(summary)``.
        """
        node = _args.node(node)
        if node.kind != "message":
            raise InvalidKind(
                "a summary is not redacted: redact the messages it summarizes (that deletes "
                "every summary covering them) or delete it with delete_subtree(summary)",
                conversation_id=node.conversation_id, node_id=node.id)
        if not isinstance(replacement, str):
            raise InvalidArgument("replacement must be a string")
        check_text(replacement, "replacement")
        with self._transaction(write=True) as conn:
            # The stored row decides what the new row is (its kind, name, tool calls and
            # encoding price the replacement), not the copy the caller holds.
            stored = _ops.get_node(conn, tenant=self.tenant,
                                   conversation_id=node.conversation_id, node_id=node.id)
            if stored.kind != "message":
                raise InvalidKind(
                    "a summary is not redacted: redact the messages it summarizes (that "
                    "deletes every summary covering them) or delete it with "
                    "delete_subtree(summary)",
                    conversation_id=node.conversation_id, node_id=node.id)
            message = prepare_message(
                kind=stored.kind, role=stored.role, content=replacement, name=stored.name,
                tool_calls=stored.tool_calls, tool_call_id=stored.tool_call_id,
                model=stored.model, encoding=stored.encoding, input_tokens=None,
                output_tokens=None, pinned=False, metadata=None, created_at=None,
                max_message_bytes=self.max_message_bytes,
            )
            _ops.redact(conn, tenant=self.tenant, conversation_id=node.conversation_id,
                        node_id=node.id, message=message)
            return _ops.get_node(conn, tenant=self.tenant,
                                 conversation_id=node.conversation_id, node_id=node.id)

    # --- reading nodes -----------------------------------------------------------------

    def node(self, conversation: ConversationRef, node_id: uuid.UUID | str) -> Node:
        """One node of a conversation by id."""
        conversation_id, node_uuid = _conversation_id(conversation), _node_id(node_id)
        with self._one_read() as conn:
            return _ops.get_node(conn, tenant=self.tenant, conversation_id=conversation_id,
                                 node_id=node_uuid)

    def current(self, conversation: ConversationRef) -> Node | None:
        """The conversation's current node, or None before its first message."""
        with self._transaction(write=False) as conn:
            conv = _ops.get_conversation(conn, tenant=self.tenant,
                                         conversation_id=_conversation_id(conversation))
            if conv.current_node_id is None:
                return None
            return _ops.get_node(conn, tenant=self.tenant, conversation_id=conv.id,
                                 node_id=conv.current_node_id)

    def path(self, node: Node) -> list[Node]:
        """The branch ending at ``node``: root first, ``node`` last (one recursive CTE)."""
        node = _args.node(node)
        with self._one_read() as conn:
            return _ops.path(conn, tenant=self.tenant, conversation_id=node.conversation_id,
                             node_id=node.id)

    def tail(self, at: Node | ConversationRef, limit: int) -> list[Node]:
        """The newest ``limit`` nodes of a branch, oldest first (``node`` last).

        ``at`` is the branch's last node, or a conversation: then the branch it is on
        (its current node; ``[]`` before its first message). One recursive statement
        that climbs at most ``limit`` nodes, whatever the branch's depth: what a caller
        that keeps the last few messages (an agent framework's session) reads instead
        of the whole ``path``. ``limit`` is 1 to 2**31 - 1.
        """
        limit = _args.required_count(limit, "limit", minimum=1)
        if isinstance(at, Node):
            conversation_id, node_id = at.conversation_id, at.id
        else:
            conversation_id, node_id = _conversation_id(at), None
        with self._one_read() as conn:
            return _ops.tail(conn, tenant=self.tenant, conversation_id=conversation_id,
                             node_id=node_id, limit=limit)

    def children(self, node: Node) -> list[Node]:
        """The nodes directly under ``node``, oldest first."""
        node = _args.node(node)
        with self._one_read() as conn:
            return _ops.children(conn, tenant=self.tenant,
                                 conversation_id=node.conversation_id, node_id=node.id)

    def tree(self, conversation: ConversationRef) -> list[Node]:
        """Every node of a conversation, parents before children, siblings oldest first."""
        return self._conversation_nodes(conversation, "tree")

    def roots(self, conversation: ConversationRef) -> list[Node]:
        """The root nodes of a conversation (editing a first message adds a root)."""
        return self._conversation_nodes(conversation, "roots")

    def leaves(self, conversation: ConversationRef) -> list[Node]:
        """The message leaves: one per branch."""
        return self._conversation_nodes(conversation, "leaves")

    def _conversation_nodes(self, conversation: ConversationRef, which: str) -> list[Node]:
        with self._transaction(write=False) as conn:
            return _ops.conversation_nodes(
                conn, tenant=self.tenant, conversation_id=_conversation_id(conversation),
                which=which,
            )
