"""Who is calling: identity comes from the API key only, never from the body."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Protocol

import trio

from trioproxy.config.model import ApiKeyConfig
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
"""Longest wait for the run-time key store; then 503, never a hang. A store that fails
(its database down or unreachable) is a 503 too: only its answer "no such key" is a 401."""


class KeyRing:
    def __init__(self, keys: Mapping[str, ApiKeyConfig], source: KeySource | None = None) -> None:
        self._keys = dict(keys)
        self.source = source
        """Consulted on every request whose key the config does not know (so a key created,
        revoked or rotated there holds from the next request)."""

    async def resolve(self, headers: Mapping[bytes, bytes]) -> ApiKeyConfig:
        """The caller's key: from the config, else from the run-time source."""
        try:
            return self.authenticate(headers)
        except CallerError as err:
            key = presented_key(headers)
            if self.source is None or key is None or err.kind is not ErrorKind.INVALID_API_KEY:
                raise
            digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
            found: ApiKeyConfig | None = None
            answered = False
            with trio.move_on_after(LOOKUP_TIMEOUT_S):
                try:
                    found = await self.source.lookup(digest)
                    answered = True
                except (OSError, trio.TooSlowError):  # the store's errors are OSErrors
                    pass  # not an answer: the key may well exist (503 below, not 401)
            if not answered:
                raise PolicyError(ErrorKind.OVERLOADED, "key store did not answer; retry shortly",
                                  retry_after=1.0) from None  # fmt: skip
            if found is None or not hmac.compare_digest(found.key_hash, digest):
                raise
            return found

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
