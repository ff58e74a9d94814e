"""One test body, two shells: drive ``AsyncStore`` / ``AsyncChat`` from synchronous tests.

A test module that sets ``TWINS = True`` runs every test that uses the ``store`` (or
``shell``) fixture twice: with ``Store`` and ``Chat``, and with ``AsyncStore`` and
``AsyncChat`` wrapped in ``Blocking``, which runs each coroutine on an event loop in a
thread of its own (the real async drivers: aiosqlite, psycopg's async mode) and hands
back its result, so the test reads the same either way. ``make_chat(store, client_of,
...)`` builds the chat that matches the store's shell, with an ``openai.OpenAI`` or an
``openai.AsyncOpenAI`` client for the same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import sqlalchemy as sa

import convotree


class EventLoopThread:
    """An asyncio loop running in a daemon thread; ``run`` waits for a coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="convotree-test-loop")
        self._thread.start()

    def run(self, awaitable: Awaitable[Any]) -> Any:
        async def wrapped() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout=300)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


class Blocking:
    """An async twin, used with sync calls: every coroutine method is run to its end on
    the loop thread; async context managers and async streams become sync ones."""

    def __init__(self, target: Any, loop: EventLoopThread, *, engine: sa.Engine | None = None
                 ) -> None:
        self._target, self._loop, self._engine = target, loop, engine

    @property
    def target(self) -> Any:
        return self._target

    @property
    def engine(self) -> Any:
        # Tests look at the tables through a plain engine on the same database.
        return self._engine if self._engine is not None else self._target.engine

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, convotree.AsyncStore | convotree.AsyncChat):
            return Blocking(value, self._loop, engine=self._engine)
        if isinstance(value, convotree.AsyncChatStream):
            return BlockingStream(value, self._loop)
        return value

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name in ("transaction",):
            return lambda: self._context(value())
        if name in ("stream", "stream_reply"):
            return lambda *args, **kwargs: self._stream(value(*args, **kwargs))
        if inspect.iscoroutinefunction(value):
            return lambda *args, **kwargs: self._wrap(self._loop.run(value(*args, **kwargs)))
        return value

    def _stream(self, stream: Any) -> BlockingStream:
        # Chat.stream makes its request at once (API errors raise from the call): open the
        # async stream now, so the sync test body sees the same.
        self._loop.run(stream)
        return BlockingStream(stream, self._loop)

    @contextlib.contextmanager
    def _context(self, manager: Any) -> Iterator[Any]:
        entered = self._loop.run(manager.__aenter__())
        try:
            yield self._wrap(entered)
        except BaseException as exc:
            if not self._loop.run(manager.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self._loop.run(manager.__aexit__(None, None, None))

    def close(self) -> None:
        self._loop.run(self._target.close())

    def __enter__(self) -> Blocking:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BlockingStream:
    """An ``AsyncChatStream`` read with ``for``; ``close``/``with`` store what arrived."""

    def __init__(self, stream: Any, loop: EventLoopThread) -> None:
        self._stream, self._loop = stream, loop
        self._reading = False

    def __iter__(self) -> Iterator[str]:
        from convotree.errors import ChatError

        if self._reading:
            raise ChatError("a ChatStream can be read only once")
        self._reading = True
        return self._read()

    def _read(self) -> Iterator[str]:
        while True:
            try:
                yield self._loop.run(self._stream.__anext__())
            except StopAsyncIteration:
                return
            except GeneratorExit:
                self.close()
                raise

    def close(self) -> None:
        self._loop.run(self._stream.aclose())

    def __enter__(self) -> BlockingStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def make_chat(store: Any, client_of: Callable[[bool], Any], **options: Any) -> Any:
    """The chat of ``store``'s shell: ``Chat`` with a sync client, or a blocking
    ``AsyncChat`` with an async client (``client_of(True)``)."""
    if isinstance(store, Blocking):
        chat = convotree.AsyncChat(store.target, client_of(True), **options)
        return Blocking(chat, store._loop, engine=store._engine)
    return convotree.Chat(store, client_of(False), **options)


def is_async(store: Any) -> bool:
    return isinstance(store, Blocking)


def openai_summarizer(store: Any, server: Any, client_options: dict[str, Any] | None = None,
                      **options: Any) -> Any:
    """``OpenAISummarizer`` with a sync client, or (async shell) ``AsyncOpenAISummarizer``
    with an async one, for the same server."""
    kwargs = client_options or {}
    if is_async(store):
        return convotree.AsyncOpenAISummarizer(server.async_client(**kwargs), **options)
    return convotree.OpenAISummarizer(server.client(**kwargs), **options)
