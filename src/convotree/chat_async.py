"""``AsyncChat``: the asyncio twin of ``Chat``, on an ``AsyncStore`` and ``openai.AsyncOpenAI``.

Like ``AsyncStore``, it runs ``Chat``'s own code through SQLAlchemy's greenlet bridge
(``convotree._io``): the order of a turn (the user message committed first, the context
assembled, the API called, the answer stored), the storage rules of cut and stopped
streams, tool pairing and compaction are ``Chat``'s, not a copy. The caller's async
client, async summarizer and async tool functions are awaited on the event loop;
sync tool functions run in a worker thread. No database connection is held while the
API or a tool runs: each database step is its own transaction, before and after.

Failures are ``Chat``'s too, being its code: the async client's exceptions pass through
unwrapped after its own retries, an unreadable answer or a stream that ends early is a
``ChatError``, the user's message stays stored, a broken stream's text is stored only
marked incomplete, and the records go to the ``convotree.chat`` logger (docs/chat.md,
"Failures"; tests/test_chat_faults.py runs every fault on both shells).

    chat = AsyncChat(store, openai.AsyncOpenAI(), model="gpt-4o-mini")
    answer = await chat.send(conv, "Plan a trip to Lisbon")
    async with chat.stream(answer, "Make it five days") as stream:
        async for delta in stream:
            print(delta, end="")
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, Unpack, cast

from . import _io
from ._io import twin
from .chat import Chat, ChatOptions, ChatStream, Turn
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._validate import Content
    from .context import Context
    from .models import Node
    from .store import ConversationRef
    from .store_async import AsyncStore

__all__ = ["AsyncChat", "AsyncChatStream"]

_DONE = object()


class AsyncChat:
    """Send, stream, regenerate, edit and call tools on any branch (see ``Chat``), with
    an ``AsyncStore`` and the caller's ``openai.AsyncOpenAI`` client. Same arguments,
    same results, as coroutines; ``stream`` gives an ``AsyncChatStream``."""

    def __init__(self, store: AsyncStore, client: Any, **options: Unpack[ChatOptions]) -> None:
        from .store_async import AsyncStore

        if not isinstance(store, AsyncStore):
            raise ConfigurationError(
                f"AsyncChat takes an AsyncStore, not {type(store).__name__} "
                "(a Store belongs to Chat)")
        self.store = store
        # Checked now, like Chat's; the sync store it runs on is set once it is open.
        self._chat = Chat(cast(Any, None), client, **options)
        self._opened = False

    async def shared(self) -> Chat:
        """The ``Chat`` every method runs, on the store's shared ``Store``."""
        if not self._opened:
            self._chat.store = await self.store.shared()
            self._opened = True
        return self._chat

    @property
    def last(self) -> Turn | None:
        """The last request made and its outcome (``Chat.last``)."""
        return self._chat.last

    @property
    def client(self) -> Any:
        return self._chat.client

    # --- every Chat method, as a coroutine ---------------------------------------------

    send = twin(Chat.send)
    reply = twin(Chat.reply)
    regenerate = twin(Chat.regenerate)
    edit = twin(Chat.edit)
    compact = twin(Chat.compact)
    add_tool_results = twin(Chat.add_tool_results)
    run_tools = twin(Chat.run_tools)

    def stream(self, at: Node | ConversationRef, content: Content, *,
               name: str | None = None, **create: Any) -> AsyncChatStream:
        """Like ``send``, the answer as text deltas: ``async with chat.stream(...) as s:``
        then ``async for delta in s``. The request is made when the stream is entered
        (or first read); API errors raise there."""
        return AsyncChatStream(self, Chat.stream, (at, content), {"name": name, **create})

    def stream_reply(self, node: Node, **create: Any) -> AsyncChatStream:
        """Like ``reply``, streamed (see ``stream``)."""
        return AsyncChatStream(self, Chat.stream_reply, (node,), create)


class AsyncChatStream:
    """The text of an answer as it arrives (see ``ChatStream``), for ``async for``.

    The answer is stored when the stream ends. Leave it with ``async with`` (or call
    ``aclose()``) when you stop early: the text that arrived is then stored, marked
    incomplete, as ``ChatStream`` does; an async stream cannot store anything from a
    garbage collector.
    """

    def __init__(self, chat: AsyncChat, start: Callable[..., ChatStream],
                 args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        self._chat, self._start, self._args, self._kwargs = chat, start, args, dict(kwargs)
        self._stream: ChatStream | None = None
        self._deltas: Generator[str, None, None] | None = None

    async def _opened(self) -> ChatStream:
        if self._stream is None:
            chat = await self._chat.shared()
            self._stream = await _io.spawn(self._start, chat, *self._args, **self._kwargs)
        return self._stream

    # The request: awaiting the stream object (``await chat.stream(...)``) opens it too.
    def __await__(self) -> Generator[Any, None, AsyncChatStream]:
        return self._open_self().__await__()

    async def _open_self(self) -> AsyncChatStream:
        await self._opened()
        return self

    async def __aenter__(self) -> AsyncChatStream:
        await self._opened()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncChatStream:
        return self

    async def __anext__(self) -> str:
        stream = await self._opened()
        if self._deltas is None:
            self._deltas = cast(Generator[str, None, None], iter(stream))
        delta = await _io.spawn(next, self._deltas, _DONE)
        if delta is _DONE:
            raise StopAsyncIteration
        return cast(str, delta)

    async def aclose(self) -> None:
        """Stop reading; store what arrived (if anything) as an incomplete answer."""
        if self._stream is not None:
            await _io.spawn(self._stream.close)

    # What ChatStream tells about the turn.
    @property
    def text(self) -> str:
        return self._stream.text if self._stream is not None else ""

    @property
    def node(self) -> Node | None:
        return self._stream.node if self._stream is not None else None

    @property
    def turn(self) -> Turn | None:
        return self._stream.turn if self._stream is not None else None

    @property
    def request(self) -> dict[str, Any] | None:
        return self._stream.request if self._stream is not None else None

    @property
    def context(self) -> Context | None:
        return self._stream.context if self._stream is not None else None

