"""What the semantic cache stores per prompt, and who has confirmed it. Pure: bytes in and out.

A record is the dialect-free :class:`~trioproxy.cache.entry.CacheEntry`, the token vectors
of the prompt it answers (for the pair verifier, so a hit never re-embeds the cached
prompt) and a digest of the API key that wrote it (for confirmation). Framing::

    b"SR1" | u32 len(entry) | entry | u16 len(writer) | writer | token view (rest)

Confirmations (poisoning resistance) live beside the record under ``<key>:c``: the sorted
digests of the distinct keys that asked the same thing, capped at what the route needs.
A lost update under a race only delays confirmation by one request; it never serves early.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from trioproxy.cache.entry import CacheEntry

if TYPE_CHECKING:  # numpy (~13.5 MB of RSS) only once a semantic cache is built
    from trioproxy.cache.vocabulary import TokenView

_MAGIC = b"SR1"


def asker_digest(key_name: str) -> str:
    """A short stable digest of an API key's name (no key material is stored)."""
    return hashlib.sha256(key_name.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SemanticRecord:
    entry: CacheEntry
    tokens: TokenView | None
    writer: str
    """:func:`asker_digest` of the key that stored it ("" when unknown)."""

    def to_bytes(self) -> bytes:
        entry = self.entry.to_bytes()
        writer = self.writer.encode()
        tokens = self.tokens.to_bytes() if self.tokens is not None else b""
        return b"".join(
            (
                _MAGIC,
                struct.pack("<I", len(entry)),
                entry,
                struct.pack("<H", len(writer)),
                writer,
                tokens,
            )
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> SemanticRecord:
        """Raises ValueError on anything but a well-formed record."""
        if raw[:3] != _MAGIC or len(raw) < 9:
            raise ValueError("not a semantic record")
        (n,) = struct.unpack_from("<I", raw, 3)
        entry = CacheEntry.from_bytes(raw[7 : 7 + n])
        at = 7 + n
        if len(raw) < at + 2:
            raise ValueError("truncated semantic record")
        (w,) = struct.unpack_from("<H", raw, at)
        writer = raw[at + 2 : at + 2 + w].decode()
        rest = raw[at + 2 + w :]
        from trioproxy.cache.vocabulary import TokenView  # numpy: see the import above

        return cls(entry, TokenView.from_bytes(rest) if rest else None, writer)


def confirmers_from_bytes(raw: bytes | None) -> frozenset[str]:
    if raw is None:
        return frozenset()
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return frozenset()
    return frozenset(str(x) for x in items) if isinstance(items, list) else frozenset()


def confirmers_to_bytes(confirmers: frozenset[str]) -> bytes:
    return orjson.dumps(sorted(confirmers))


def confirmed(record: SemanticRecord, confirmers: frozenset[str], asker: str, needed: int) -> bool:
    """Whether ``asker`` may be served: it wrote the entry, or ``needed`` distinct keys
    (the writer included) have asked for it."""
    if needed <= 1 or asker == record.writer:
        return True
    return len(confirmers | {record.writer}) >= needed


__all__ = [
    "SemanticRecord",
    "asker_digest",
    "confirmed",
    "confirmers_from_bytes",
    "confirmers_to_bytes",
]
