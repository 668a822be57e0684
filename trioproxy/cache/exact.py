"""The exact cache: serialized :class:`~trioproxy.cache.entry.CacheEntry` bytes by key.

Keys come from :func:`trioproxy.cache.keys.exact_key` (``<namespace>:<sha256>``).
Two implementations behind one Protocol:

* :class:`MemoryExactCache`: in-process LRU bounded by entry count and bytes, TTL on the
  caller's ``now`` (pure; not persisted: a restart starts cold).
* :class:`RedisExactCache`: ``SET key value PX ttl`` on the project's Trio Redis client;
  Redis's own clock expires entries, so ``now`` is unused there.
* :class:`~trioproxy.cache.exact_sqlite.SqliteExactCache` (its own module): one SQLite file
  in ``state_dir`` shared by a host's workers and kept across restarts (no Redis).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol


class ExactCache(Protocol):
    async def get(self, key: str, *, now: float) -> bytes | None: ...

    async def put(self, key: str, value: bytes, *, ttl_s: float, now: float) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def flush_namespace(self, namespace: str) -> int:
        """Drop every key of ``namespace``; returns how many were dropped."""
        ...

    async def flush_prefix(self, prefix: str) -> int:
        """Drop every key starting with ``prefix`` (hex namespaces: no escaping needed)."""
        ...


@dataclass(slots=True)
class ExactStats:
    entries: int = 0
    bytes: int = 0
    evictions: int = 0
    expirations: int = 0


class MemoryExactCache:
    def __init__(self, *, max_entries: int = 100_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._stats = ExactStats()

    @property
    def bounds(self) -> tuple[int, int]:
        """(most entries, most bytes) this store keeps; the oldest go first (the dashboard's
        cache page shows them)."""
        return self._max_entries, self._max_bytes

    def statistics(self) -> ExactStats:
        self._stats.entries = len(self._items)
        return ExactStats(**{f: getattr(self._stats, f) for f in ExactStats.__slots__})

    async def get(self, key: str, *, now: float) -> bytes | None:
        return self.get_nowait(key, now=now)

    def get_nowait(self, key: str, *, now: float) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires_at, value = item
        if expires_at <= now:
            self._drop(key)
            self._stats.expirations += 1
            return None
        self._items.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, *, ttl_s: float, now: float) -> None:
        self.put_nowait(key, value, ttl_s=ttl_s, now=now)

    def put_nowait(self, key: str, value: bytes, *, ttl_s: float, now: float) -> None:
        if ttl_s <= 0 or len(value) > self._max_bytes:
            return
        self._drop(key)
        self._items[key] = (now + ttl_s, value)
        self._stats.bytes += len(value)
        while len(self._items) > self._max_entries or self._stats.bytes > self._max_bytes:
            oldest = next(iter(self._items))
            self._drop(oldest)
            self._stats.evictions += 1

    async def delete(self, key: str) -> bool:
        return self._drop(key)

    async def flush_namespace(self, namespace: str) -> int:
        return await self.flush_prefix(namespace + ":")

    async def flush_prefix(self, prefix: str) -> int:
        doomed = [k for k in self._items if k.startswith(prefix)]
        for k in doomed:
            self._drop(k)
        return len(doomed)

    def _drop(self, key: str) -> bool:
        item = self._items.pop(key, None)
        if item is None:
            return False
        self._stats.bytes -= len(item[1])
        return True


class RedisCommands(Protocol):
    """The slice of ``trioproxy.store.redis_client.RedisClient`` used here."""

    async def execute(self, *args: str | bytes | int) -> Any: ...


class RedisExactCache:
    def __init__(self, client: RedisCommands, *, prefix: str = "tp:c:") -> None:
        self._client = client
        self._prefix = prefix

    async def get(self, key: str, *, now: float) -> bytes | None:
        value = await self._client.execute("GET", self._prefix + key)
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, *, ttl_s: float, now: float) -> None:
        ms = int(ttl_s * 1000)
        if ms > 0:
            await self._client.execute("SET", self._prefix + key, value, "PX", ms)

    async def delete(self, key: str) -> bool:
        return bool(await self._client.execute("DEL", self._prefix + key))

    async def flush_namespace(self, namespace: str) -> int:
        return await self.flush_prefix(namespace + ":")

    async def flush_prefix(self, prefix: str) -> int:
        """SCAN + UNLINK (an admin operation; namespaces are hex, so no glob escaping)."""
        cursor: bytes | str | int = b"0"
        dropped = 0
        pattern = f"{self._prefix}{prefix}*"
        while True:
            cursor, keys = await self._client.execute(
                "SCAN", cursor, "MATCH", pattern, "COUNT", 1000
            )
            if keys:
                dropped += int(await self._client.execute("UNLINK", *keys))
            if cursor in (b"0", "0", 0):
                return dropped


__all__ = ["ExactCache", "ExactStats", "MemoryExactCache", "RedisCommands", "RedisExactCache"]
