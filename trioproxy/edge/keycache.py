"""The key ring's memory of the admin store's answers (pure: the caller passes the monotonic
time).

A key the config does not know costs an admin-store round trip (a PostgreSQL pool of 2 per
worker, or the SQLite thread). Two bounded memories spare it:

* :class:`RefusedKeys`: each key hash the store answered "no such key" for, for
  ``REFUSED_TTL_S``, at most ``REFUSED_MAX`` of them (least recently refused forgotten
  first): a flood of random bearer keys cannot saturate the store so that real
  dashboard-made keys time out and dashboard sign-in stalls. Consequence: a key created in
  the dashboard right after it was presented and refused works within ``REFUSED_TTL_S``.
* :class:`KnownKeys`: each key the store found, with its settings, for
  ``server.key_cache_ttl_s`` (5 s by default; 0: no memory, every request asks the store)
  from that answer, at most ``KNOWN_MAX`` of them (the oldest answer forgotten first): a hot
  dashboard key costs one look-up per TTL per worker, not one per request. Consequence: a
  key revoked or rotated in the dashboard holds on every worker within that TTL
  (a hit never extends it). Keys from the config are never looked up here: they win.
"""

from __future__ import annotations

from collections import OrderedDict

from trioproxy.config.model import ApiKeyConfig

REFUSED_TTL_S = 1.0
REFUSED_MAX = 4096
KNOWN_MAX = 4096
"""Dashboard-made keys remembered per worker (each ~1 KB); more in use at once than this:
the oldest answers are asked again."""


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


class KnownKeys:
    """Bounded TTL memory of the keys the store found, by hash. Every entry lives ``ttl_s``
    from the answer that made it (insertion order is expiry order); a hit does not extend it."""

    def __init__(self, *, ttl_s: float, max_size: int = KNOWN_MAX) -> None:
        if ttl_s < 0 or max_size < 1:
            raise ValueError("ttl_s >= 0 and max_size >= 1")
        self.ttl_s, self.max_size = ttl_s, max_size
        self._found: OrderedDict[str, tuple[float, ApiKeyConfig]] = OrderedDict()
        self.forgets = 0
        """How many :meth:`forget` calls so far: a look-up that saw one happen while it was
        out does not remember its answer (it may be from before a revoke)."""

    def __len__(self) -> int:
        return len(self._found)

    def get(self, key_hash: str, now: float) -> ApiKeyConfig | None:
        """The key the store gave for this hash less than ``ttl_s`` before ``now``, if any."""
        entry = self._found.get(key_hash)
        if entry is None:
            return None
        if now >= entry[0]:
            del self._found[key_hash]
            return None
        return entry[1]

    def remember(self, key_hash: str, key: ApiKeyConfig, now: float) -> None:
        """The store just answered ``key`` for this hash (no memory when ``ttl_s`` is 0)."""
        if self.ttl_s <= 0:
            return
        self._found.pop(key_hash, None)
        self._found[key_hash] = (now + self.ttl_s, key)
        while len(self._found) > self.max_size:
            self._found.popitem(last=False)
        while self._found:  # expired answers at the old end go too
            first, (until, _) = next(iter(self._found.items()))
            if now < until:
                break
            del self._found[first]

    def forget(self, key_hash: str) -> None:
        """This process changed the key (the dashboard in the same process): ask again."""
        self.forgets += 1
        self._found.pop(key_hash, None)


__all__ = ["KNOWN_MAX", "REFUSED_MAX", "REFUSED_TTL_S", "KnownKeys", "RefusedKeys"]
