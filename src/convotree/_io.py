"""How the async twins run the sync code: one body, two shells.

``AsyncStore`` and ``AsyncChat`` do not re-implement anything. Each of their methods
runs the very same ``Store`` / ``Chat`` method inside ``greenlet_spawn``, SQLAlchemy's
bridge between asyncio and synchronous code (the mechanism behind ``AsyncSession`` and
``AsyncConnection.run_sync``): the store then works on ``AsyncEngine.sync_engine``,
whose every database call is awaited on the event loop without blocking it.

The few places where the shared code meets something that may be a coroutine (the
caller's ``openai.AsyncOpenAI`` client, an async summarizer, an async tool function,
an async stream of events) pass the value through ``resolve``: a plain value comes
back as it is; an awaitable is awaited on the event loop (``await_``, the other half
of the bridge). So the order of every multi-step call (commit the message, assemble,
call the API, store the answer) and the rule that no connection is held while the
API or a tool runs are the same in both shells, because they are the same code.

A coroutine reaching ``resolve`` outside an async shell (an ``AsyncOpenAI`` client
given to the sync ``Chat``) is a ``ConfigurationError`` naming the async twin.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, cast, overload

from .errors import ConfigurationError

__all__ = ["Shell", "Twin", "iterate", "resolve", "run_sync", "spawn", "twin"]

T = TypeVar("T")
P = ParamSpec("P")
S = TypeVar("S")
S_co = TypeVar("S_co", covariant=True)

try:   # SQLAlchemy 2.1 renamed await_only to await_
    from sqlalchemy.util import await_ as _await
except ImportError:   # pragma: no cover - SQLAlchemy 2.0
    from sqlalchemy.util import await_only as _await


@functools.cache
def _in_greenlet_function() -> Callable[[], bool]:
    import importlib

    for module in ("sqlalchemy.util.concurrency", "sqlalchemy.util._concurrency_py3k"):
        try:   # SQLAlchemy 2.1, 2.0
            found = getattr(importlib.import_module(module), "in_greenlet", None)
        except ImportError:
            continue
        if found is not None:
            return cast(Callable[[], bool], found)
    return lambda: False   # pragma: no cover - no greenlet bridge at all


def _in_greenlet() -> bool:
    """Whether this code runs under ``greenlet_spawn`` (an async shell)."""
    return bool(_in_greenlet_function()())


def resolve(value: T | Awaitable[T], *, what: str = "an async client") -> T:
    """``value`` itself, or what it awaits to when it is awaitable (async shells only)."""
    if not inspect.isawaitable(value):
        return value
    result: T = _awaited(value, what)
    return result


def _awaited(value: Awaitable[T], what: str) -> T:
    if not _in_greenlet():
        close = getattr(value, "close", None)
        if close is not None:
            close()   # a coroutine that will never run: no "never awaited" warning
        raise ConfigurationError(
            f"{what} returned a coroutine to a synchronous convotree call: use "
            "convotree.AsyncStore and convotree.AsyncChat with async clients, "
            "summarizers and tools")
    result: T = _await(value)
    return result


def run_sync(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Call a synchronous function from the shared code. In an async shell it runs in a
    worker thread (``asyncio.to_thread``), so a slow tool does not stall the event loop;
    in the sync shell it is a plain call."""
    if not _in_greenlet():
        return function(*args, **kwargs)
    result: T = _await(asyncio.to_thread(function, *args, **kwargs))
    return result


def iterate(events: Iterable[T] | AsyncIterator[T]) -> Iterator[T]:
    """A plain iterator over a stream of events, sync or async (async: one await per
    event, inside the async shell)."""
    if not hasattr(events, "__anext__"):
        yield from cast(Iterable[T], events)   # type: ignore[redundant-cast]
        return
    stream = cast(AsyncIterator[T], events)
    while True:
        try:
            item = _awaited(stream.__anext__(), "an async stream")
        except StopAsyncIteration:
            return
        yield item


async def spawn(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run shared synchronous code from an async shell (SQLAlchemy's greenlet bridge)."""
    from sqlalchemy.util import greenlet_spawn

    return cast(T, await greenlet_spawn(function, *args, **kwargs))


class Shell(Protocol[S_co]):
    """An async twin: it hands out the sync object whose methods it runs."""

    async def shared(self) -> S_co: ...


class Twin(Generic[S, P, T]):
    """A method of the sync class, as a coroutine method of its async twin: the same
    name, arguments, docstring and result, run by the same code (``spawn``)."""

    def __init__(self, method: Callable[Concatenate[S, P], T]) -> None:
        self.method = method
        self.__doc__ = method.__doc__
        self.__name__ = method.__name__

    @overload
    def __get__(self, obj: None, owner: type) -> Twin[S, P, T]: ...
    @overload
    def __get__(self, obj: Shell[S], owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, obj: Shell[S] | None, owner: type) -> Any:
        if obj is None:
            return self
        method = self.method

        @functools.wraps(method)
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return await spawn(method, await obj.shared(), *args, **kwargs)

        return call


def twin(method: Callable[Concatenate[S, P], T]) -> Twin[S, P, T]:
    """Declare ``name = twin(SyncClass.name)`` in the async class body."""
    return Twin(method)
