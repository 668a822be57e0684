"""Who may use the dashboard and the admin API, and how they sign in and out.

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
  :mod:`trioproxy.edge.admin_guard`) is a failure of its address too (:meth:`Access.admit`).
  Behind a reverse proxy the address is the one it names, when it is one of
  ``dashboard.trusted_proxies`` (:mod:`trioproxy.edge.client_address`).
* A refused request that carries a body has its body read (bounded) before the answer,
  or else its connection is closed, so the connection's next request is never stuck
  behind unread bytes.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import trio
from quart import Quart, Response, g, jsonify, redirect, render_template, request
from quart.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers.response import Response as WerkzeugResponse

from trioproxy.admin.passwords import hash_password, verify_password
from trioproxy.admin.sessions import (
    Principal,
    SessionPolicy,
    credential_of,
    needs_touch,
    new_session,
    new_token,
    session_state,
    token_hash,
)
from trioproxy.admin.store import AdminStore, StoreError
from trioproxy.admin.throttle import (
    DEVICE_TTL_S,
    FailureLog,
    Seen,
    SignInLimits,
    address_subject,
    known_place,
)
from trioproxy.config.model import DashboardConfig
from trioproxy.edge.app import Gateway
from trioproxy.edge.client_address import scope_client
from trioproxy.errors import ErrorKind, GatewayError

log = logging.getLogger(__name__)
AnyResponse = Response | WerkzeugResponse
"""What Quart's ``redirect`` (werkzeug) and our own answers (Quart) have in common."""

LOGIN = "/login"
LOGOUT = "/logout"
API_PREFIX = "/admin/api/"
POLL_PREFIX = "/panel/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
COOKIE = "trioproxy_session"
DEVICE_COOKIE = "trioproxy_device"
"""A browser that signed in as a user before (:mod:`trioproxy.admin.throttle`)."""
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
DRAIN_TIMEOUT_S = 2.0
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
    """The dashboard's access rules over the running config and the admin store; also the
    gateway's :class:`~trioproxy.edge.admin_guard.KeyGuard` once mounted (the admin port's
    wrong admin keys count per address in the store, with the failed sign-ins)."""

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
        return {s: seen for s in subjects if (seen := self.local.seen(s, since)) is not None}

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

    def _done_checking(self, subjects: list[str]) -> None:
        self.checking.subtract(subjects)
        for s in subjects:
            if self.checking[s] <= 0:
                del self.checking[s]

    async def admit(self, addr: str) -> int | None:
        """:meth:`KeyGuard.admit`: an admin key may be tried from ``addr`` (None), or the
        seconds to wait."""
        subject = address_subject(addr)
        now = self.clock()
        seen = (await self.failures([subject], now)).get(subject)
        wait = self.limits.block.retry_after(seen, now, checking=self.checking[subject])
        if wait is None:
            self.checking[subject] += 1  # no checkpoint since the count: counted at once
        return wait

    async def settle(self, addr: str, *, failed: bool) -> None:
        subject = address_subject(addr)
        try:
            if failed:
                await self.record_failure([subject], self.clock())
        finally:
            self._done_checking([subject])

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


def cross_site() -> bool:
    """The browser says the request comes from another origin (``Sec-Fetch-Site``, which
    every current browser sends and a page cannot forge): SameSite cookies decide when a
    cookie is sent, not whether another site's form may set one, so a sign-in from there is
    refused. Without the header (curl, a script) nothing is assumed: only a browser can be
    made to sign in on someone's behalf."""
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


def json_error(status: int, message: str) -> Response:
    response = jsonify({"error": {"message": message, "status": status}})
    response.status_code = status
    return response


def local_target(raw: str | None) -> str:
    """Where to go after login: a path on this site only (no open redirect)."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    parts = urlsplit(raw)
    return "/" if parts.scheme or parts.netloc else raw


def login_url(target: str) -> str:
    return f"{LOGIN}?next={quote(local_target(target), safe='/')}"


def _page_target() -> str:
    """The page the user was on: for an htmx request, the page that made it (never a panel)."""
    if request.headers.get("HX-Request") == "true":
        current = urlsplit(request.headers.get("HX-Current-URL", "/"))
        path = current.path + (f"?{current.query}" if current.query else "")
    else:
        path = request.full_path if request.query_string else request.path
    return "/" if path.startswith(POLL_PREFIX) else path


def _is_form() -> bool:
    return request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data")


def has_body() -> bool:
    length = request.headers.get("Content-Length")
    return bool(length and length != "0") or "chunked" in request.headers.get(
        "Transfer-Encoding", ""
    )


async def drained(response: AnyResponse) -> AnyResponse:
    """Read a refused request's body before answering; if that fails, close the connection."""
    if has_body():
        try:
            with trio.move_on_after(DRAIN_TIMEOUT_S) as scope:
                await request.get_data(cache=False)
            if scope.cancelled_caught:
                response.headers["Connection"] = "close"
        except RequestEntityTooLarge:
            response.headers["Connection"] = "close"
    return response


async def refuse(status: int, message: str) -> AnyResponse:
    if request.path.startswith(API_PREFIX) or request.headers.get("HX-Request") != "true":
        if (
            request.path.startswith(API_PREFIX)
            or request.accept_mimetypes.best == "application/json"
        ):
            return await drained(json_error(status, message))
        page = await render_template("error.html", status=status, message=message)
        return await drained(Response(page, status=status, content_type="text/html"))
    return await drained(Response(message, status=status, content_type="text/plain"))


def set_cookie(response: AnyResponse, acc: Access, token: str) -> None:
    response.set_cookie(
        COOKIE, token, max_age=int(acc.cfg.session_max_s), httponly=True,
        samesite="Strict", secure=acc.cfg.secure_cookies, path="/",
    )  # fmt: skip


def clear_cookie(response: AnyResponse, acc: Access) -> None:
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="Strict", secure=acc.cfg.secure_cookies
    )


def client_addr(acc: Access) -> str:
    """The client's address: the TCP peer's, or the one a trusted proxy names."""
    return scope_client(request.scope, acc.cfg.trusted_proxies)


def set_device_cookie(response: AnyResponse, acc: Access, token: str) -> None:
    response.set_cookie(
        DEVICE_COOKIE, token, max_age=int(DEVICE_TTL_S), httponly=True, samesite="Strict",
        secure=acc.cfg.secure_cookies, path=LOGIN,
    )  # fmt: skip


def install(app: Quart, acc: Access) -> None:
    """The guard that runs before every route, and the sign-in and sign-out routes."""

    @app.before_request
    async def guard() -> ResponseReturnValue | None:
        path = request.path
        g.principal, g.csrf = None, None
        if path == LOGIN or path.startswith("/static/"):
            return None
        auth = request.headers.get("Authorization")
        if auth is not None and auth.partition(" ")[0].lower() == "bearer":
            # only Bearer is an admin key: another scheme is a proxy's in front (nginx's
            # auth_basic sends Basic on every request) and the cookie decides, as without it
            return await bearer(auth)
        if path.startswith(API_PREFIX):  # admin keys only: a signed-in browser's session is
            # not enough (it reached every team's budgets, spend and cache, whatever its teams)
            return await drained(json_error(401, "Send 'Authorization: Bearer <admin key>'."))
        token = request.cookies.get(COOKIE)
        session = await acc.store.get_session(token_hash(token)) if token else None
        now = acc.clock()
        principal = None
        if session is not None and session_state(session, now, acc.policy) == "ok":
            principal = await acc.current(session.principal)
        if principal is None:  # signed out, expired, or no longer let in by the config
            if session is not None:
                await acc.store.revoke_session(session.id_hash)
            target = login_url(_page_target())
            if request.headers.get("HX-Request") == "true":
                return await drained(Response("", status=401, headers={"HX-Redirect": target}))
            return await drained(redirect(target, 303))
        assert session is not None
        g.principal, g.csrf = principal, session.csrf
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER)
            if sent is None:
                sent = (await request.form).get(CSRF_FIELD) if _is_form() else None
            if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                return await refuse(403, "This form is out of date: reload the page and retry.")
            if path != LOGOUT and not principal.can_edit:
                return await refuse(403, "Viewers cannot change anything; ask an admin.")
        if not path.startswith(POLL_PREFIX) and needs_touch(session, now):
            await acc.store.touch_session(session.id_hash, now)
        return None

    async def bearer(auth: str) -> ResponseReturnValue | None:
        """An admin key: its principal (None: go on), or the refusal; a wrong key counts as
        a failure of the address, and an address at its limit is refused whatever it sends."""
        addr = client_addr(acc)
        wait = await acc.admit(addr)
        if wait is not None:
            acc.gw.prometheus.admin_auth_throttled("address")
            log.warning("admin key refused (throttled): addr=%s path=%s", addr, request.path)
            message = (
                f"Too many failed sign-ins or admin keys from this address; retry in {wait} s."
            )
            response = json_error(429, message)
            response.headers["Retry-After"] = str(wait)
            return await drained(response)
        refused: GatewayError | None = None
        try:  # the config's keys only: the store's are no admin's
            key = acc.gw.keys.authenticate({b"authorization": auth.encode("latin-1", "replace")})
        except GatewayError as err:
            refused = err
        finally:
            wrong = refused is not None and refused.kind is ErrorKind.INVALID_API_KEY
            await acc.settle(addr, failed=wrong)
        if refused is not None:
            why = ""
            if refused.kind is ErrorKind.INVALID_API_KEY:
                log.warning("admin port: wrong admin key: addr=%s path=%s", addr, request.path)
                acc.gw.prometheus.admin_auth_failure("admin_key")
                why = (" This port takes an admin key only: a key of the config file with "
                       "admin = true (keys made on the dashboard call the data port).")  # fmt: skip
            return await drained(json_error(401, refused.message + why))
        if not key.admin:
            return await drained(json_error(403, f"API key {key.name!r} is not an admin key."))
        g.principal = Principal(f"key:{key.name}", "admin", None, "api-key",
                                credential_of(key.key_hash))  # fmt: skip
        return None

    @app.get(LOGIN)
    async def login_form() -> ResponseReturnValue:
        return await render_template("login.html", next=local_target(request.args.get("next")))

    @app.post(LOGIN)
    async def login() -> ResponseReturnValue:
        if cross_site():  # login CSRF: another site signing this browser in as its account
            return await render_template(
                "login.html", next="/", error="Sign in from this page, not another site."
            ), 403
        form = await request.form
        target = local_target(form.get("next"))
        name = form.get("user", "").strip()
        password = form.get("password", "")
        addr = client_addr(acc)
        cookie, place = await acc.device_of(name, addr)
        device = cookie or place
        now = acc.clock()
        limits = acc.limits
        rules = limits.rules(addr, name, device)  # admin-key sign-ins: by address only
        subjects = list(rules)
        seen = await acc.failures(subjects, now)
        refusal = limits.refusal(rules, seen, acc.checking, now)
        if refusal is not None:
            acc.gw.prometheus.admin_auth_throttled(refusal.limit)
            log.warning("dashboard sign-in refused (throttled: %s): user=%r addr=%s",
                        refusal.limit, name, addr)  # fmt: skip
            wait = refusal.wait_s
            error = (
                f"Too many failed sign-ins as {name}; try again in {wait} s."
                if refusal.limit == "user"
                else f"Too many failed sign-ins; try again in {wait} s."
            )
            page = await render_template("login.html", next=target, user=name, error=error)
            return Response(page, status=429, headers={"Retry-After": str(wait)})
        acc.checking.update(subjects)  # no checkpoint since the count: counted at once
        try:
            principal = (
                await acc.password_user(name, password) if name else acc.key_principal(password)
            )
            if principal is None:
                acc.gw.prometheus.admin_auth_failure("password" if name else "admin_key")
                await acc.record_failure(subjects, now)
        finally:
            acc._done_checking(subjects)
        if principal is None:
            log.warning("dashboard sign-in failed: user=%r addr=%s", name, addr)
            error = "Wrong user name or password." if name else "Not an admin API key."
            return await render_template("login.html", next=target, user=name, error=error), 401
        token, session = new_session(principal, now)
        await acc.store.create_session(session, purge_before=now - acc.cfg.session_max_s)
        log.info("dashboard sign-in: user=%r role=%s addr=%s", principal.name, principal.role, addr)
        response = redirect(target, 303)
        set_cookie(response, acc, token)
        if name:  # this browser, and this place, are the user's now (a new token each time)
            device_token = new_token()
            purge = now - DEVICE_TTL_S
            await acc.store.add_device(token_hash(device_token), name, now, replaces=cookie,
                                       purge_before=purge)  # fmt: skip
            here = known_place(name, addr)
            await acc.store.add_device(here, name, now, replaces=here, purge_before=purge)
            if device is not None:
                await acc.store.clear_failures(f"device:{device}")
            set_device_cookie(response, acc, device_token)
        return response

    @app.post(LOGOUT)
    async def logout() -> ResponseReturnValue:
        token = request.cookies.get(COOKIE)
        if token:
            await acc.store.revoke_session(token_hash(token))
        log.info("dashboard sign-out: user=%r", g.principal.name if g.principal else None)
        response: AnyResponse = redirect(LOGIN, 303)
        if request.headers.get("HX-Request") == "true":
            response = Response("", status=200, headers={"HX-Redirect": LOGIN})
        clear_cookie(response, acc)
        return response


__all__ = [
    "API_PREFIX",
    "COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LOGIN",
    "Access",
    "install",
    "json_error",
    "local_target",
    "refuse",
]
