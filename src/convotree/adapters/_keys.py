"""The caller's keys (session keys, thread ids, namespaces) that adapters derive
conversation ids from.

An adapter turns a key into a conversation id with a UUIDv5 over a name that joins
tenant and key with U+001F, the way convotree's importers derive ids. So that two
different (tenant, key) pairs can never derive the same id, a key may not hold that
separator; NUL and lone surrogates are refused as everywhere in convotree, and a key
is an id, not a document: at most ``MAX_KEY_BYTES``.
"""

from __future__ import annotations

from ..errors import InvalidArgument

#: Longest key (UTF-8 bytes).
MAX_KEY_BYTES = 1024


def derivation_key(text: str, what: str) -> str:
    """``text`` if it can name a derived conversation id, else ``InvalidArgument``."""
    if (not text or "\x00" in text or "\x1f" in text
            or len(text.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES):
        raise InvalidArgument(f"{what} must be a non-empty string of at most "
                              f"{MAX_KEY_BYTES} bytes without NUL or U+001F")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"{what} contains a lone surrogate") from exc
    return text
