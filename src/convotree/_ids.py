"""Time-ordered ids (UUIDv7, RFC 9562) generated on the client.

Client-side ids let one INSERT create a node without a round trip for the key, keep
the primary-key index append-mostly, and make ids sort by creation time. Within one
process ids are strictly increasing: RFC 9562 method 1, the 12-bit ``rand_a`` field
used as a counter inside a millisecond.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_last_counter = 0


def uuid7() -> uuid.UUID:
    """Return a new UUIDv7, strictly greater than the previous one from this process."""
    global _last_ms, _last_counter
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms, _last_counter = now_ms, int.from_bytes(os.urandom(2)) & 0x7FF
        else:
            _last_counter += 1
            if _last_counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms, _last_counter = _last_ms + 1, 0
        ms, counter = _last_ms, _last_counter
    rand_b = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


def as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    """Accept an id as a UUID or its string form."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
