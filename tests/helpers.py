"""Small builders shared by tests."""

from __future__ import annotations

import base64
import struct
import zlib


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
