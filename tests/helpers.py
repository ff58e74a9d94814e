"""Small builders shared by tests."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any


def png_data_url(width: int, height: int) -> str:
    """A real (all-black, grayscale) PNG of the given size as a data URL."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(height)), 9)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(
        b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()


def call(call_id: str, name: str = "lookup", arguments: str = "{}") -> dict[str, object]:
    """A Chat Completions function tool call."""
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments}}


def gap_branch(store: Any) -> tuple[list[Any], Any, int]:
    """A branch system + 8 messages with a stored summary of depths 1-5, and a budget
    that reaches the summary but, with it sent, fits only depth 8: depths 6-7 are then
    neither sent nor summarized (the context report's ``gap``)."""
    conv = store.create_conversation()
    path = [store.append(conv, role="system", content="You plan trips.")]
    for depth in range(1, 9):
        size = 30 if depth in (6, 7) else 3
        path.append(store.append(conv, parent=path[-1],
                                 role="user" if depth % 2 else "assistant",
                                 content=" ".join(f"w{depth}x{i}" for i in range(size))))
    summary = store.add_summary(path[5], "Summary of the earlier conversation:\n" + " ".join(
        f"s{i}" for i in range(70)))

    def cost(node: Any) -> int:
        return int(node.token_count + node.overhead_tokens)

    # Room to walk up to the summary (depths 8, 7, 6), but with the summary sent only
    # depth 8 fits next to it (3: the reply priming).
    budget = 3 + cost(path[0]) + cost(path[8]) + cost(path[7]) + cost(path[6])
    assert cost(path[0]) + cost(summary) + cost(path[8]) + cost(path[7]) > budget - 3
    return path, summary, budget
