"""Import and export chat histories: ChatGPT, OpenAssistant, LibreChat, Open WebUI,
plain OpenAI message lists, and convotree's own lossless ``native`` JSON.

One module per format (``chatgpt.py``, ``oasst.py``, ...) translates fields, both
ways; the shared machinery checks a whole conversation before writing it
(``_build``) and writes it in one transaction with batched inserts
(``convotree._bulk``). See docs/interchange.md for every field mapping and what is
lossy. Not imported by ``import convotree``: load it when you need it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from ..errors import InvalidArgument, InvalidImport, UnknownFormat
from ..store import ConversationRef, Store
from ._result import ImportFailure, ImportResult
from ._runner import Item, Skip, run

__all__ = [
    "FORMATS",
    "ImportFailure",
    "ImportResult",
    "export_conversation",
    "export_conversations",
    "import_file",
]

FORMATS: tuple[str, ...] = ("chatgpt", "oasst", "librechat", "openwebui", "openai", "native")


def _module(fmt: str) -> ModuleType:
    if fmt not in FORMATS:
        raise UnknownFormat(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}",
                            format=fmt)
    return importlib.import_module(f"{__name__}.{fmt}")


def import_file(store: Store, path: str | os.PathLike[str], format: str, *,
                on_progress: Callable[[int], None] | None = None,
                replace: bool = False) -> ImportResult:
    """Import every conversation of the file; each in its own transaction.

    A broken conversation is reported in ``ImportResult.failures`` (which record, and
    why) and writes nothing; the others still import. A file that is not JSON at all
    raises ``InvalidImport``; an unknown format ``UnknownFormat``. Conversations
    already present for the store's tenant are skipped, so re-importing a file (or an
    export of conversations the tenant has, in any format that carries ids) writes
    nothing; ``replace=True`` writes them again instead, each replacement one
    transaction (the old copy is never missing to a reader). ``on_progress(n)`` is
    called after each conversation (JSON Lines: after each tree) with the number of
    conversations (lines) processed so far.
    """
    _check_store(store)
    module = _module(format)
    if on_progress is not None and not callable(on_progress):
        raise InvalidArgument("on_progress must be a function taking a count, or None")
    if not isinstance(replace, bool):
        raise InvalidArgument(f"replace must be True or False, not {replace!r}")
    try:
        with open(os.fspath(path), "rb"):
            pass   # readable (the reader opens it again as it streams)
    except TypeError as exc:
        raise InvalidArgument(f"path must be a file path, not {path!r}") from exc
    except OSError as exc:
        raise InvalidImport(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from exc
    reader: Callable[[str | os.PathLike[str]], Iterable[Item | Skip]] = module.read
    return run(store, reader(path), format, on_progress, replace=replace)


def _check_store(store: Any) -> None:
    if not isinstance(store, Store):
        raise InvalidArgument(f"the first argument must be a convotree Store, not "
                              f"{type(store).__name__}")


def export_conversation(store: Store, conversation: ConversationRef, format: str) -> Any:
    """One conversation as a JSON-serialisable object in ``format``.

    ``NotExportable`` if the format cannot express it (see docs/interchange.md).
    """
    _check_store(store)
    module = _module(format)
    return module.export(store, conversation)


def export_conversations(store: Store, conversations: Iterable[ConversationRef],
                         format: str) -> Any:
    """Several conversations: a JSON list in ``format`` (ChatGPT's ``conversations.json``,
    an Open WebUI export, a list of LibreChat or native documents, OASST trees to write
    one per line). The ``openai`` format holds one conversation only: a list of lists."""
    _check_store(store)
    module = _module(format)
    if isinstance(conversations, str | bytes) or not isinstance(conversations, Iterable):
        raise InvalidArgument("conversations must be a list of conversations or ids")
    return [module.export(store, conversation) for conversation in conversations]


