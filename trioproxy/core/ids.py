"""Request ids: 24 random hex digits from the OS's generator, drawn in blocks.

One ``os.urandom`` call (a ``getrandom(2)``) per :data:`BLOCK` bytes instead of one per
request; the bytes are the same kernel randomness, each used once. A forked child starts
with an empty block (it never reuses its parent's bytes).
"""

from __future__ import annotations

import os

ID_BYTES = 12
"""96 random bits per id."""
BLOCK = 4096 - 4096 % ID_BYTES
"""Bytes drawn from the OS at a time: 341 ids."""


class _Pool:
    __slots__ = ("at", "block")

    def __init__(self) -> None:
        self.block = b""
        self.at = 0

    def take(self) -> bytes:
        at = self.at
        if at >= len(self.block):
            self.block, at = os.urandom(BLOCK), 0
        self.at = at + ID_BYTES
        return self.block[at : at + ID_BYTES]

    def forget(self) -> None:
        self.block, self.at = b"", 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)


def request_id() -> str:
    """``req_`` and 24 random hex digits."""
    return "req_" + _pool.take().hex()


__all__ = ["BLOCK", "ID_BYTES", "request_id"]
