"""Who may use the dashboard and the admin API, and how they sign in and out: the rules, and
:class:`Access`, which holds them (the guard before every route and the sign-in and sign-out
routes that apply them: :mod:`trioproxy.dashboard.guard`).

* **API clients** send ``Authorization: Bearer <admin API key>`` on every request (an
  admin principal named ``key:<name>``); no cookie, no CSRF token. Another scheme (``Basic``
  from a reverse proxy's own sign-in in front) is no admin key: it is ignored, and the
  session cookie decides.
* **Browsers** sign in with a user name and password (users from ``[dashboard.users]``
  or created by an admin on the Users page), or with an admin API key as the password
  and no user name. The session lives in the shared admin store (:mod:`trioproxy.admin`);
  the cookie holds a random token only (HttpOnly, SameSite=Strict, ``Secure`` when
  ``dashboard.secure_cookies``). Logout deletes the session on every worker.
* Sessions end ``session_idle_s`` after the last user action (polls do not count) and
  ``session_max_s`` after sign-in, whatever happens. A session is bound to the credential it
  signed in with (a digest of the password or key hash): a new password or key, or another
  account taking the name, ends it.
* **CSRF**: every state-changing request riding on a session carries the session's
  token, as the ``csrf`` form field or the ``X-CSRF-Token`` header (htmx sends it).
* **Roles**: ``viewer`` reads; ``admin`` also changes. A user limited to some teams
  sees and changes only those.
* **Failed sign-ins** are logged, counted in ``/metrics``
  (``trioproxy_admin_auth_failures_total``, ``..._throttled_total``) and throttled
  (:mod:`trioproxy.admin.throttle`): a client address is blocked (429) at ``login_attempts``
  failures per ``login_window_s``; a user name from all addresses is never blocked, only
  delayed (after its first ``login_attempts`` failures, each holds its next sign-in back 1,
  2, 4, 8, then 10 s: a correct password waits seconds at most), and a browser that signed
  in as that user before (its device cookie, ``trioproxy_device``) or an address it signed
  in from is not delayed by the name's failures, only limited by its own. A wrong admin
  key (``Bearer``, on the admin API, any page, or ``/metrics``:
  :mod:`trioproxy.edge.admin_guard`) is a failure of its address too
  (:attr:`Access.key_guard`).
  Behind a reverse proxy the address is the one it names, when it is one of
  ``dashboard.trusted_proxies`` (:mod:`trioproxy.edge.client_address`).
* A refused request that carries a body has its body read (bounded) before the answer,
  or else its connection is closed, so the connection's next request is never stuck
  behind unread bytes (:func:`trioproxy.dashboard.http_helpers.drained`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from quart import request

from trioproxy.admin.passwords import hash_password, verify_password
from trioproxy.admin.sessions import (
    Principal,
    SessionPolicy,
    credential_of,
    token_hash,
)
from trioproxy.admin.store import AdminStore, StoreError
from trioproxy.admin.throttle import (
    DEVICE_TTL_S,
    FailureLog,
    Seen,
    SignInLimits,
    known_place,
)
from trioproxy.config.model import DashboardConfig
from trioproxy.edge.admin_guard import KeyThrottle
from trioproxy.edge.app import Gateway
from trioproxy.errors import GatewayError

log = logging.getLogger(__name__)

COOKIE = "trioproxy_session"
DEVICE_COOKIE = "trioproxy_device"
"""A browser that signed in as a user before (:mod:`trioproxy.admin.throttle`)."""
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
STORE_DOWN_LOG_S = 60.0
"""At most one line per this many seconds says the store does not count failures."""
HASHING_AT_ONCE = 4
"""Password hashes a control plane computes at once (the rest wait their turn)."""
_DUMMY_HASH = (
    "scrypt$14$8$1$30303030303030303030303030303030"
    "$f7c61a752e08010ded9c40f55120bc9ef4e6ac59597cf08870746192c45a2052"
)
"""Verified against when the user name is unknown, so both cases take the same time:
``hash_password("not a password", salt=b"0" * 16)`` at the current cost (a test checks it),
written out so that importing the dashboard runs no scrypt (~50 ms of CPU and 16 MB of memory
at once in every control-plane start; its peak RSS was 70 MB for an idle 56 MB)."""


@dataclass
class Access:
    """The dashboard's access rules over the running config and the admin store; its
    :attr:`key_guard` is the gateway's :class:`~trioproxy.edge.admin_guard.KeyGuard` once
    mounted (the admin port's wrong admin keys count per address in the store, with the
    failed sign-ins)."""

    gw: Gateway
    store: AdminStore
    clock: Callable[[], float] = time.time
    checking: Counter[str] = field(default_factory=Counter)
    """Per throttle subject, the sign-ins (and admin keys) being verified now."""
    local: FailureLog = field(default_factory=FailureLog)
    """The failures this process recorded, counted instead of the store's while it does
    not answer (the admin API and /metrics go on throttled: only sign-in needs the store)."""
    store_down_logged: float = -math.inf
    hashing: trio.CapacityLimiter = field(
        default_factory=lambda: trio.CapacityLimiter(HASHING_AT_ONCE)
    )
    """Password hashes computed at once (sign-ins, the Users page): each holds scrypt's 16 MiB
    in a thread; trio's default allowed 40 (640 MiB from a burst of sign-ins)."""
    key_guard: KeyThrottle = field(init=False)
    """The admin port's throttle of wrong admin keys over :meth:`failures` (the store's counts,
    with the sign-ins') and :attr:`checking`: the gateway's ``key_guard`` once mounted."""

    def __post_init__(self) -> None:
        self.key_guard = KeyThrottle(
            self, lambda: self.limits.block, lambda: self.clock(), self.checking
        )

    async def hash_check(self, password: str, encoded: str) -> bool:
        """:func:`~trioproxy.admin.passwords.verify_password` in a thread, at most
        :data:`HASHING_AT_ONCE` at a time."""
        return await trio.to_thread.run_sync(
            verify_password, password, encoded, limiter=self.hashing
        )

    async def new_hash(self, password: str) -> str:
        """:func:`~trioproxy.admin.passwords.hash_password` in a thread, as :meth:`hash_check`."""
        return await trio.to_thread.run_sync(hash_password, password, limiter=self.hashing)

    @property
    def cfg(self) -> DashboardConfig:
        """The running config's ``[dashboard]`` (a reload's, once applied)."""
        return self.gw.settings.dashboard

    @property
    def policy(self) -> SessionPolicy:
        return SessionPolicy(self.cfg.session_idle_s, self.cfg.session_max_s)

    @property
    def limits(self) -> SignInLimits:
        return SignInLimits(self.cfg.login_attempts, self.cfg.login_window_s)

    async def password_user(self, name: str, password: str) -> Principal | None:
        """The principal for a correct user name and password, else None (same time either way)."""
        configured = self.cfg.users.get(name)
        if configured is not None:
            encoded, role, teams = configured.password_hash, configured.role, configured.teams
        else:
            stored = await self.store.user(name)
            if stored is None or stored.disabled:
                encoded, role, teams = _DUMMY_HASH, "viewer", None
            else:
                encoded, role, teams = stored.password_hash, stored.role, stored.teams
        ok = await self.hash_check(password, encoded)
        known = configured is not None or encoded is not _DUMMY_HASH
        if not (ok and known):
            return None
        return Principal(name, role, teams, "password", credential_of(encoded))

    async def current(self, p: Principal) -> Principal | None:
        """A session's principal as the config and the store say now, or None when they no
        longer let it in: a config user removed or changed by a reload (or between two runs),
        an API key no longer admin, a stored user gone or disabled. Every session is bound to
        the credential it signed in with (:attr:`Principal.credential`): a new password, or
        another account of the same name (a config user removed, then a stored one created
        with that name), ends it; an old session never acts as the new account."""
        if p.via == "api-key":
            name = p.name.removeprefix("key:")
            admin = any(
                k.name == name and k.admin and credential_of(k.key_hash) == p.credential
                for k in self.gw.settings.api_keys.values()
            )
            return p if admin else None  # (a rotated key: its sessions end)
        configured = self.cfg.users.get(p.name)
        if configured is not None:
            credential = credential_of(configured.password_hash)
            if credential != p.credential:  # a new password: sign in with it
                return None
            now = Principal(p.name, configured.role, configured.teams, "password", credential)
            return p if now == p else now
        stored = await self.store.user(p.name)
        if stored is None or stored.disabled:
            return None
        credential = credential_of(stored.password_hash)
        if credential != p.credential:  # another password, or another user of that name
            return None
        now = Principal(p.name, stored.role, stored.teams, "password", credential)
        return p if now == p else now

    async def failures(self, subjects: list[str], now: float) -> dict[str, Seen]:
        """Per subject, its failures in the window; this process's own when the store does
        not answer."""
        since = now - self.limits.window_s
        try:
            return await self.store.failures(subjects, since)
        except (StoreError, trio.TooSlowError) as exc:
            self._store_down(exc)
        return self.local.seen_of(subjects, since)

    async def record_failure(self, subjects: list[str], now: float) -> None:
        self.local.record(subjects, now)
        try:
            await self.store.record_failure(subjects, now, keep_after=now - self.limits.window_s)
        except (StoreError, trio.TooSlowError) as exc:
            self._store_down(exc)

    def _store_down(self, exc: BaseException) -> None:
        now = self.clock()
        if now - self.store_down_logged >= STORE_DOWN_LOG_S:
            self.store_down_logged = now
            log.warning("admin store: failed authentications counted in this process only "
                        "(%s: %s)", type(exc).__name__, exc)  # fmt: skip

    async def device_of(self, name: str, addr: str) -> tuple[str | None, str | None]:
        """Whether the attempt comes from one of ``name``'s devices: (the hash of its device
        cookie if it is one of the user's, the user's known place if ``addr`` is one)."""
        if not name:
            return None, None
        since = self.clock() - DEVICE_TTL_S
        token = request.cookies.get(DEVICE_COOKIE)
        if token and len(token) <= 128:
            digest = token_hash(token)
            if await self.store.device_user(digest, since) == name:
                return digest, None
        place = known_place(name, addr)
        return None, place if await self.store.device_user(place, since) == name else None

    def key_principal(self, key: str) -> Principal | None:
        """An admin API key used as a password (no user name)."""
        try:
            found = self.gw.keys.authenticate(
                {b"authorization": f"Bearer {key}".encode("utf-8", "replace")}
            )
        except GatewayError:
            return None
        if not found.admin:
            return None
        return Principal(
            f"key:{found.name}", "admin", None, "api-key", credential_of(found.key_hash)
        )


__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "DEVICE_COOKIE",
    "Access",
]
