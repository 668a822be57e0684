"""The guard that runs before every dashboard and admin API route (an admin key, or a
session with its CSRF token and role), and the sign-in and sign-out routes, applying the
rules of :mod:`trioproxy.dashboard.access`.
"""

from __future__ import annotations

import hmac
import logging
from urllib.parse import urlsplit

from quart import Quart, Response, g, redirect, render_template, request
from quart.typing import ResponseReturnValue

from trioproxy.admin.sessions import (
    Principal,
    credential_of,
    needs_touch,
    new_session,
    new_token,
    session_state,
    token_hash,
)
from trioproxy.admin.throttle import DEVICE_TTL_S, done_checking, known_place
from trioproxy.dashboard.access import COOKIE, CSRF_FIELD, CSRF_HEADER, DEVICE_COOKIE, Access
from trioproxy.dashboard.http_helpers import (
    API_PREFIX,
    LOGIN,
    AnyResponse,
    cross_site,
    drained,
    json_error,
    local_target,
    login_url,
    refuse,
)
from trioproxy.edge.client_address import scope_client
from trioproxy.errors import ErrorKind, GatewayError

log = logging.getLogger(__name__)

LOGOUT = "/logout"
POLL_PREFIX = "/panel/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
        wait = await acc.key_guard.admit(addr)
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
        headers = {b"authorization": auth.encode("latin-1", "replace")}
        try:  # the config's keys only: the store's are no admin's
            key = await acc.key_guard.checked(addr, lambda: acc.gw.keys.authenticate(headers))
        except GatewayError as err:
            refused = err
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
            done_checking(acc.checking, subjects)
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


__all__ = ["install"]
