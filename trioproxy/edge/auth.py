"""Who is calling: identity comes from the API key only, never from the body."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import trio

from trioproxy.config.model import ApiKeyConfig
from trioproxy.edge.keycache import KnownKeys, RefusedKeys
from trioproxy.errors import CallerError, ErrorKind, PolicyError


def presented_key(headers: Mapping[bytes, bytes]) -> str | None:
    """The key from ``Authorization: Bearer`` or ``x-api-key`` (lower-case header names)."""
    auth = headers.get(b"authorization")
    if auth is not None:
        scheme, _, value = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get(b"x-api-key")
    if key is not None and key.strip():
        return key.decode("latin-1").strip()
    return None


class KeySource(Protocol):
    """Keys created at run time (the dashboard's admin store), looked up by SHA-256."""

    async def lookup(self, key_hash: str) -> ApiKeyConfig | None: ...


LOOKUP_TIMEOUT_S = 1.0
"""Longest wait for the run-time key store (its queue included); then 503, never a hang. A
store that fails (its database down or unreachable) is a 503 too: only its answer "no such
key" is a 401."""
LOOKUPS_AT_ONCE = 1
"""Key look-ups in flight per worker: the admin store's other connection (a PostgreSQL pool
holds 2) stays free for the dashboard whatever keys callers present."""
LOOKUPS_WAITING_MAX = 64
"""Look-ups queued behind those; one more is a 503 at once (bounded queue)."""


def _overloaded() -> PolicyError:
    return PolicyError(ErrorKind.OVERLOADED, "key store did not answer; retry shortly",
                       retry_after=1.0)  # fmt: skip


class KeyRing:
    def __init__(
        self,
        keys: Mapping[str, ApiKeyConfig],
        source: KeySource | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        known_ttl_s: float = 0.0,
    ) -> None:
        self._keys = dict(keys)
        self.source = source
        """Consulted for a key the config does not know, at most once per ``known_ttl_s``
        per key (``server.key_cache_ttl_s``; 0: on every request; ``keycache.KnownKeys``: a
        key revoked or rotated there holds within that; one created there within
        ``keycache.REFUSED_TTL_S`` if it was presented, and refused, just before)."""
        self.clock = clock
        self.refused = RefusedKeys()
        self.known = KnownKeys(ttl_s=known_ttl_s)
        self._lookups = trio.CapacityLimiter(LOOKUPS_AT_ONCE)
        self._pending = 0

    async def resolve(self, headers: Mapping[bytes, bytes]) -> ApiKeyConfig:
        """The caller's key: from the config, else from the run-time source."""
        try:
            return self.authenticate(headers)
        except CallerError as err:
            key = presented_key(headers)
            if self.source is None or key is None or err.kind is not ErrorKind.INVALID_API_KEY:
                raise
            digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
            now = self.clock()
            found = self.known.get(digest, now)
            if found is not None:  # the store's answer of less than known_ttl_s ago
                return found
            if self.refused.refused(digest, now):
                raise
            forgets = self.known.forgets
            found = await self._lookup(self.source, digest)
            if found is None:
                self.refused.remember(digest, self.clock())
                raise
            if not hmac.compare_digest(found.key_hash, digest):
                raise
            if self.known.forgets == forgets:  # else a revoke may have come after its read
                self.known.remember(digest, found, self.clock())
            return found

    def reloaded(self, keys: Mapping[str, ApiKeyConfig]) -> KeyRing:
        """The ring for a reloaded config's ``keys``: the same run-time source, clock and
        TTL (``[server]`` applies at restart), fresh memories."""
        return KeyRing(keys, self.source, clock=self.clock, known_ttl_s=self.known.ttl_s)

    async def _lookup(self, source: KeySource, digest: str) -> ApiKeyConfig | None:
        """The store's answer, one look-up at a time; 503 (PolicyError) when it has none."""
        if self._pending >= LOOKUPS_AT_ONCE + LOOKUPS_WAITING_MAX:
            raise _overloaded()
        self._pending += 1
        try:
            with trio.move_on_after(LOOKUP_TIMEOUT_S):
                async with self._lookups:
                    # answered while this one waited (a burst of one key): no second look-up
                    if self.refused.refused(digest, self.clock()):
                        return None
                    known = self.known.get(digest, self.clock())
                    if known is not None:
                        return known
                    try:
                        return await source.lookup(digest)
                    except (OSError, trio.TooSlowError):  # the store's errors are OSErrors
                        pass  # not an answer: the key may well exist (503, not 401)
        finally:
            self._pending -= 1
        raise _overloaded() from None

    def authenticate(self, headers: Mapping[bytes, bytes]) -> ApiKeyConfig:
        """The caller's key from the config only (admin keys live there)."""
        key = presented_key(headers)
        if key is None:
            raise CallerError(
                ErrorKind.MISSING_API_KEY,
                "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            )
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        found = self._keys.get(digest)
        # compare the hashes in constant time (the dict lookup only narrows the candidate)
        if found is None or not hmac.compare_digest(found.key_hash, digest):
            raise CallerError(ErrorKind.INVALID_API_KEY, "Incorrect API key provided.")
        return found


def may_use(key: ApiKeyConfig, name: str) -> bool:
    return key.routes is None or name in key.routes


__all__ = ["KeyRing", "KeySource", "may_use", "presented_key"]
