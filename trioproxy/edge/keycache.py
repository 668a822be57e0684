"""Refused-key memory for the key ring (pure: the caller passes the monotonic time).

A key the config does not know costs an admin-store round trip; a flood of random bearer
keys would otherwise saturate the store (a PostgreSQL pool of 2 per worker, or the SQLite
thread) so that real dashboard-made keys time out and dashboard sign-in stalls. The key
ring remembers each key hash the store answered "no such key" for ``REFUSED_TTL_S``, at most
``REFUSED_MAX`` of them (least recently refused forgotten first).

Consequence: a key created in the dashboard right after it was presented and refused works
within ``REFUSED_TTL_S`` (the next request after that). Revocation is not delayed: known keys
are not cached (every request asks the store)."""

from __future__ import annotations

from collections import OrderedDict

REFUSED_TTL_S = 1.0
REFUSED_MAX = 4096


class RefusedKeys:
    """Bounded TTL memory of key hashes the store did not know (LRU on insertion)."""

    def __init__(self, *, ttl_s: float = REFUSED_TTL_S, max_size: int = REFUSED_MAX) -> None:
        if ttl_s < 0 or max_size < 1:
            raise ValueError("ttl_s >= 0 and max_size >= 1")
        self.ttl_s, self.max_size = ttl_s, max_size
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def refused(self, key_hash: str, now: float) -> bool:
        """Is this hash remembered as unknown at ``now``? (an expired entry is dropped)"""
        until = self._until.get(key_hash)
        if until is None:
            return False
        if now >= until:
            del self._until[key_hash]
            return False
        return True

    def remember(self, key_hash: str, now: float) -> None:
        """The store just answered "no such key" for this hash."""
        self._until.pop(key_hash, None)
        self._until[key_hash] = now + self.ttl_s
        while len(self._until) > self.max_size:
            self._until.popitem(last=False)
        # expired entries at the old end go too (keeps the memory small when idle)
        while self._until:
            first, until = next(iter(self._until.items()))
            if now < until:
                break
            del self._until[first]


__all__ = ["REFUSED_MAX", "REFUSED_TTL_S", "RefusedKeys"]
