"""Facts about non-text content parts, read once at insert for token estimates.

Image tokens depend on the image's size and on the model, so the size is read from
the image itself when it is inline (a ``data:`` URL) and stored in the node's
``media`` column; the per-model price is applied at assembly. Images behind an http
URL have no known size here: they are priced at the worst case OpenAI's rule allows,
and the context report says so. Audio and files are sized in bytes (and seconds, for
WAV) for documented estimates. Pure: no I/O, no network.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping, Sequence
from typing import Any

#: Enough of an inline image to find its size (JPEG can put its frame header late).
_HEAD_BYTES = 256 * 1024


def _decode_data_url(url: str, limit: int | None = None) -> tuple[bytes, int] | None:
    """(first ``limit`` decoded bytes, total decoded size) of a base64 data URL."""
    if not url.startswith("data:") or ";base64," not in url[:200]:
        return None
    payload = url.split(",", 1)[1]
    total = len(payload) * 3 // 4 - payload[-2:].count("=")
    chunk = payload if limit is None else payload[: (limit // 3 + 1) * 4]
    chunk = chunk[: len(chunk) - len(chunk) % 4]
    try:
        return base64.b64decode(chunk, validate=False), total
    except (binascii.Error, ValueError):
        return None


def image_size(head: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF, JPEG or WebP image from its first bytes."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return int(width), int(height)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            return (int.from_bytes(head[24:27], "little") + 1,
                    int.from_bytes(head[27:30], "little") + 1)
        if kind == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if kind == b"VP8 ":
            width, height = struct.unpack("<HH", head[26:30])
            return int(width) & 0x3FFF, int(height) & 0x3FFF
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(head)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            index += 1
            continue
        marker = data[index + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            index += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[index + 2:index + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[index + 5:index + 9])
            return int(width), int(height)
        index += 2 + length
    return None


def _wav_seconds(head: bytes, size: int) -> float | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE" and len(head) >= 32:
        byte_rate = int.from_bytes(head[28:32], "little")
        if byte_rate:
            return max(size - 44, 0) / byte_rate
    return None


def media_facts(parts: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """One fact record per non-text part (index, type and size), or None if none."""
    if not parts:
        return None
    facts: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        kind = part.get("type")
        if kind in ("image_url", "input_image"):
            body = part.get("image_url")
            url = body.get("url", "") if isinstance(body, Mapping) else body or ""
            detail = (body.get("detail") if isinstance(body, Mapping) else None) or part.get(
                "detail") or "auto"
            decoded = _decode_data_url(str(url), _HEAD_BYTES)
            size = image_size(decoded[0]) if decoded else None
            facts.append({"index": index, "type": "image", "detail": str(detail),
                          "width": size[0] if size else None,
                          "height": size[1] if size else None})
        elif kind == "input_audio":
            body = part.get("input_audio") or {}
            raw = str(body.get("data", "")) if isinstance(body, Mapping) else ""
            decoded = _decode_data_url("data:;base64," + raw, 64)
            total = decoded[1] if decoded else 0
            seconds = _wav_seconds(decoded[0], total) if decoded else None
            facts.append({"index": index, "type": "audio", "bytes": total,
                          "seconds": seconds if seconds is not None else total / 16_000})
        elif kind in ("file", "input_file"):
            body = part.get("file") if kind == "file" else part
            data = str(body.get("file_data", "")) if isinstance(body, Mapping) else ""
            if data and not data.startswith("data:"):
                data = "data:;base64," + data
            decoded = _decode_data_url(data, 0) if data else None
            facts.append({"index": index, "type": "file",
                          "bytes": decoded[1] if decoded else None})
    return facts or None
