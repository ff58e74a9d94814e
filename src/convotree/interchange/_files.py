"""Reading import files: whole JSON documents, or JSON Lines one line at a time."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from ..errors import InvalidImport


def load_json(path: str | os.PathLike[str]) -> Any:
    """The file's JSON value, or ``InvalidImport`` saying where it stops being JSON.

    A file that is not JSON at all (truncated, a different format) fails as a whole:
    nothing in it can be trusted to be complete, so nothing is written.
    """
    try:
        with open(path, encoding="utf-8-sig") as handle:   # a BOM is not JSON
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise InvalidImport(f"{os.fspath(path)} is not valid JSON: {exc.msg} at line "
                            f"{exc.lineno} column {exc.colno}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidImport(f"{os.fspath(path)} is not UTF-8 text: {exc}") from exc
    except RecursionError as exc:   # Python's parser recurses per nesting level
        raise InvalidImport(f"{os.fspath(path)} nests its JSON too deeply to be read") from exc


_BOM = b"\xef\xbb\xbf"


def json_line_offsets(path: str | os.PathLike[str]
                      ) -> Iterator[tuple[int, int, Any | InvalidImport, bytes]]:
    """``(line number, byte offset, value, raw line)`` for every non-blank line.

    Like ``json_lines``, one line at a time; the offset lets a reader come back to a
    line later (``json_line_at``) instead of holding it in memory.
    """
    with open(path, "rb") as handle:
        offset = 0
        for number, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            if start == 0 and raw.startswith(_BOM):
                raw, start = raw[len(_BOM):], len(_BOM)
            if not raw.strip():
                continue
            yield number, start, _decode_line(raw, number), raw


def json_line_at(handle: Any, offset: int, number: int) -> Any | InvalidImport:
    """The JSON value of the line at ``offset`` of an open binary file."""
    handle.seek(offset)
    return _decode_line(handle.readline(), number)


def _decode_line(raw: bytes, number: int) -> Any | InvalidImport:
    try:
        return json.loads(raw.decode("utf-8", errors="surrogateescape"))
    except json.JSONDecodeError as exc:
        return InvalidImport(f"line {number} is not valid JSON: {exc.msg} at "
                             f"column {exc.colno}")
    except RecursionError:
        return InvalidImport(f"line {number} nests its JSON too deeply to be read")
