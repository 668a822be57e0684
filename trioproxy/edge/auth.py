"""Who is calling: identity comes from the API key only, never from the body."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from trioproxy.config.model import ApiKeyConfig
from trioproxy.errors import CallerError, ErrorKind


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


class KeyRing:
    def __init__(self, keys: Mapping[str, ApiKeyConfig]) -> None:
        self._keys = dict(keys)

    def authenticate(self, headers: Mapping[bytes, bytes]) -> ApiKeyConfig:
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


__all__ = ["KeyRing", "may_use", "presented_key"]
