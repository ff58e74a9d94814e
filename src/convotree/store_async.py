"""``AsyncStore``: the asyncio twin of ``Store``, with the same methods as coroutines.

It holds a ``Store`` built on ``AsyncEngine.sync_engine`` and runs each call of it
through SQLAlchemy's greenlet bridge (``convotree._io``): the code, the statements, the
validation and the errors are ``Store``'s own, not a copy. Every method of ``Store`` is
here under the same name and arguments (a test pins the two surfaces), returning the
same ``Node`` / ``Conversation`` / ``Context`` objects.

    async with AsyncStore("postgresql+psycopg://user@host/db") as store:   # or
    store = await AsyncStore.open("sqlite:///chat.db", create=True)
    node = await store.append(conv, role="user", content="hi")

The schema check (or, with ``create=True``, the upgrade) runs when the store opens:
``open()``, ``async with``, or the first call, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Unpack

from sqlalchemy.exc import SQLAlchemyError

from . import _dberrors, _io, _rls
from ._io import twin
from .errors import ConfigurationError, ConvotreeError
from .store import Store, StoreOptions, check_options

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["AsyncStore"]

class AsyncStore:
    """Conversations as trees of messages, for asyncio applications (see ``Store``).

    ``AsyncStore(url)`` creates and owns an ``AsyncEngine`` (``sqlite:///`` uses
    aiosqlite, ``postgresql+psycopg://`` psycopg 3's async mode, ``postgresql+asyncpg://``
    asyncpg); ``AsyncStore(async_engine)`` borrows one. ``tenant``, ``create``,
    ``encoding`` and ``max_message_bytes`` mean what they mean for ``Store``.
    """

    def __init__(self, url_or_engine: str | AsyncEngine, **options: Unpack[StoreOptions]
                 ) -> None:
        from sqlalchemy.ext.asyncio import AsyncEngine

        from ._engine import configure_sqlite, create_async_engine

        if isinstance(url_or_engine, AsyncEngine):
            configure_sqlite(url_or_engine.sync_engine)
            self.engine, self._owns_engine = url_or_engine, False
        elif isinstance(url_or_engine, str):
            self.engine, self._owns_engine = create_async_engine(url_or_engine), True
        else:
            raise ConfigurationError(
                "AsyncStore takes a database URL or an AsyncEngine, not "
                f"{type(url_or_engine).__name__} (a sync Engine belongs to Store)")
        check_options(options)
        self._options = options
        self.tenant = options.get("tenant", "")
        self._store: Store | None = None
        self._opening: asyncio.Lock | None = None

    # --- lifecycle -------------------------------------------------------------------

    @classmethod
    async def open(cls, url_or_engine: str | AsyncEngine, **options: Unpack[StoreOptions]
                   ) -> AsyncStore:
        """Create the store and check (or, with ``create=True``, upgrade) the schema."""
        store = cls(url_or_engine, **options)
        try:
            await store.ready()
        except BaseException:
            await store.close()
            raise
        return store

    async def shared(self) -> Store:
        """The ``Store`` every method runs (opened first, see ``ready``)."""
        return await self.ready()

    async def ready(self) -> Store:
        """Open the store if it is not yet (schema check or upgrade); idempotent."""
        if self._store is None:
            if self._opening is None:
                self._opening = asyncio.Lock()
            async with self._opening:
                if self._store is None:
                    options = self._options
                    self._store = await _io.spawn(Store, self.engine.sync_engine, **options)
        return self._store

    async def close(self) -> None:
        """Dispose of the engine if this store created it."""
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> AsyncStore:
        try:
            await self.ready()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _view(self, store: Store) -> AsyncStore:
        view = object.__new__(AsyncStore)
        view.__dict__.update(self.__dict__)
        view._store, view._owns_engine = store, False
        return view

    def with_tenant(self, tenant: str) -> AsyncStore:
        """The same store for another tenant (see ``Store.with_tenant``): no query, no
        schema check when this store is open; what a service makes per request."""
        view = self._view(self._store.with_tenant(tenant)) if self._store else self._view_unopened()
        view.tenant = tenant
        view._options = StoreOptions(**{**self._options, "tenant": tenant})
        return view

    def _view_unopened(self) -> AsyncStore:
        view = object.__new__(AsyncStore)
        view.__dict__.update(self.__dict__)
        view._owns_engine, view._opening = False, None
        return view

    # --- transactions the caller controls ----------------------------------------------

    async def bind(self, connection: AsyncConnection) -> AsyncStore:
        """This store's methods on an ``AsyncConnection`` the caller holds (see
        ``Store.bind``): savepoints inside the caller's transaction, never a commit.
        For an ``AsyncSession``: ``await store.bind(await session.connection())``."""
        from sqlalchemy.ext.asyncio import AsyncConnection

        if not isinstance(connection, AsyncConnection):
            raise ConfigurationError(
                f"AsyncStore.bind() takes an AsyncConnection, not "
                f"{type(connection).__name__} (a sync Connection belongs to Store.bind)")
        store = await self.ready()
        return self._view(store.bind(connection.sync_connection))  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncStore]:
        """Several calls as ONE transaction: ``async with store.transaction() as tx:``
        (see ``Store.transaction``)."""
        from ._engine import WRITE_OPTION

        store = await self.ready()
        try:
            async with self.engine.connect() as connection:
                connection = await connection.execution_options(**{WRITE_OPTION: True})
                async with connection.begin():
                    await connection.run_sync(_rls.set_tenant, store.tenant)
                    yield self._view(store.bind(connection.sync_connection))  # type: ignore[arg-type]
        except ConvotreeError:
            raise
        except SQLAlchemyError as exc:
            raise _dberrors.translate(exc) from exc

    # --- every Store method, as a coroutine --------------------------------------------

    create_conversation = twin(Store.create_conversation)
    get_conversation = twin(Store.get_conversation)
    list_conversations = twin(Store.list_conversations)
    update_conversation = twin(Store.update_conversation)
    rename_conversation = twin(Store.rename_conversation)
    delete_conversation = twin(Store.delete_conversation)
    append = twin(Store.append)
    append_chain = twin(Store.append_chain)
    edit = twin(Store.edit)
    set_current = twin(Store.set_current)
    delete_subtree = twin(Store.delete_subtree)
    context = twin(Store.context)
    add_summary = twin(Store.add_summary)
    redact = twin(Store.redact)
    node = twin(Store.node)
    current = twin(Store.current)
    path = twin(Store.path)
    tail = twin(Store.tail)
    children = twin(Store.children)
    tree = twin(Store.tree)
    roots = twin(Store.roots)
    leaves = twin(Store.leaves)
