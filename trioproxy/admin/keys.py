"""API keys created in the dashboard: stored hashed in the admin store, never shown again.

A key created here is an ordinary caller key (never an admin key) with its team, user,
feature, routes, priority and per-key limits. The gateway's :class:`~trioproxy.edge.auth.KeyRing`
looks a presented key up here when the config does not know it, at most once per
``server.key_cache_ttl_s`` per key and worker, so a new key holds on every worker at once and a
revoked or rotated one within that TTL (workers of a host share the SQLite file; instances
share it through PostgreSQL when ``storage.database_url`` is set).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, replace
from typing import Literal

from trioproxy.config.model import ApiKeyConfig

PREFIX = "tp-"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
Priority = Literal["low", "medium", "high"]
PRIORITIES: tuple[Priority, ...] = ("low", "medium", "high")
MAX_RATE = 10_000_000


@dataclass(frozen=True, slots=True)
class StoredKey:
    key_hash: str
    name: str
    team: str
    user: str
    feature: str = "default"
    routes: frozenset[str] | None = None
    priority: Priority = "medium"
    rpm: int | None = None
    tpm: int | None = None
    created: float = 0.0
    created_by: str = ""
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def config(self) -> ApiKeyConfig:
        return ApiKeyConfig(
            name=self.name, key_hash=self.key_hash, team=self.team, user=self.user,
            feature=self.feature, routes=self.routes, priority=self.priority, admin=False,
            rpm=self.rpm, tpm=self.tpm,
        )  # fmt: skip


def new_secret() -> tuple[str, str]:
    """A fresh key and its SHA-256 (what is stored)."""
    secret = PREFIX + secrets.token_urlsafe(32)
    return secret, hashlib.sha256(secret.encode()).hexdigest()


def rotated(key: StoredKey, new_hash: str, now: float, by: str) -> StoredKey:
    return replace(key, key_hash=new_hash, created=now, created_by=by, revoked_at=None)


__all__ = ["NAME", "PRIORITIES", "StoredKey", "new_secret", "rotated"]
