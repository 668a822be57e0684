"""Who is signed in, for how long (pure).

* A session has an **absolute** lifetime from sign-in (never extended) and an **idle**
  lifetime since the last request the user made. Background refreshes (the pages' polls)
  are not user activity: they extend neither.
* The browser holds a random token; the store keeps only its SHA-256, so a copy of the
  store does not sign anyone in. Logout deletes the row: a copied cookie stops working.
* Each session has its own CSRF token, sent back by every state-changing request.
* How many failed sign-ins may be tried: :mod:`.throttle`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "viewer")
TOUCH_EVERY_S = 30.0
"""Idle time is tracked to this granularity (one store write per user per 30 s at most)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Someone allowed in: a dashboard user, or the holder of an admin API key."""

    name: str
    role: Role
    teams: frozenset[str] | None = None
    """The teams this user may see and change; None = all."""
    via: Literal["password", "api-key"] = "password"
    credential: str = ""
    """A digest of the credential signed in with (a user's password hash, from the config
    file or the admin store, or an admin key's hash: :func:`credential_of`): a session ends
    when it changes (a rotated password or key kept its sessions for up to 12 h), and when
    the name becomes another account's (a config user removed, a stored user created with
    its name: the old session acted as the new account). A stored user's session stored
    without one (signed in before sessions kept it) is ended."""

    @property
    def can_edit(self) -> bool:
        return self.role == "admin"

    @property
    def manages_users(self) -> bool:
        """Dashboard users are managed by an admin of every team only."""
        return self.can_edit and self.teams is None

    def may_see(self, team: str) -> bool:
        return self.teams is None or team in self.teams

    @property
    def every_team(self) -> bool:
        """Sees every team, and what they all share (breakers, the process's counters, the
        cached answers of a route whose cache is global): a principal of some teams neither
        sees nor changes those."""
        return self.teams is None

    @property
    def scope(self) -> tuple[str, ...] | None:
        """The teams whose records every figure shown to it sums, as the ledger's reads take
        them (sorted); None: every team's."""
        return None if self.teams is None else tuple(sorted(self.teams))


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle_s: float = 30 * 60.0
    max_s: float = 12 * 3600.0


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: str
    principal: Principal
    csrf: str
    created: float
    last_seen: float


def credential_of(secret_hash: str) -> str:
    """:attr:`Principal.credential` of a password hash or key hash (16 hex characters)."""
    return hashlib.sha256(secret_hash.encode()).hexdigest()[:16]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def new_session(principal: Principal, now: float) -> tuple[str, Session]:
    """A fresh session and the token to give the browser (shown nowhere else)."""
    token = new_token()
    return token, Session(token_hash(token), principal, new_token(), now, now)


def session_state(
    s: Session, now: float, policy: SessionPolicy
) -> Literal["ok", "idle", "expired"]:
    if now >= s.created + policy.max_s:
        return "expired"
    if now >= s.last_seen + policy.idle_s:
        return "idle"
    return "ok"


def needs_touch(s: Session, now: float) -> bool:
    return now - s.last_seen >= TOUCH_EVERY_S


__all__ = [
    "ROLES",
    "Principal",
    "Role",
    "Session",
    "SessionPolicy",
    "credential_of",
    "needs_touch",
    "new_session",
    "new_token",
    "session_state",
    "token_hash",
]
