"""Who may use the dashboard and the admin API: holders of an admin API key.

* API clients send ``Authorization: Bearer <admin key>`` on every request.
* Browsers log in once with a form posting the key; the session cookie (signed,
  HttpOnly, SameSite=Strict) holds the key's SHA-256, re-checked against the
  config on every request.
* An unknown key gets 401, a valid non-admin key 403; an anonymous page visit is
  redirected to the login form (an htmx request gets ``HX-Redirect``).
* CSRF: besides SameSite=Strict, a state-changing request riding on the session
  cookie must carry ``HX-Request: true``, a header a cross-site form cannot send
  (and a cross-site script cannot send without a CORS preflight we never grant).
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from quart import Quart, Response, g, jsonify, redirect, render_template, request, session
from quart.typing import ResponseReturnValue

from trioproxy.config.model import ApiKeyConfig
from trioproxy.edge.app import Gateway
from trioproxy.errors import GatewayError

LOGIN = "/login"
API_PREFIX = "/admin/api/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_KEY = "key_sha256"


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


def check_key(gw: Gateway, key: str) -> ApiKeyConfig:
    """The key's config; raises ``GatewayError`` (401) for an unknown key."""
    return gw.keys.authenticate({b"authorization": f"Bearer {key}".encode("utf-8", "replace")})


def session_admin(gw: Gateway) -> ApiKeyConfig | None:
    digest = session.get(SESSION_KEY)
    key = gw.settings.api_keys.get(digest) if isinstance(digest, str) else None
    if key is None or not key.admin:
        session.clear()
        return None
    return key


def _refuse(status: int, message: str) -> Response:
    if request.path.startswith(API_PREFIX) or request.headers.get("HX-Request") != "true":
        return json_error(status, message)
    return Response(message, status=status, content_type="text/plain; charset=utf-8")


def install(app: Quart, gw: Gateway) -> None:
    """Register the guard that runs before every route, and the login/logout routes."""

    @app.before_request
    async def guard() -> ResponseReturnValue | None:
        path = request.path
        if path == LOGIN or path.startswith("/static/"):
            return None
        auth = request.headers.get("Authorization")
        if auth is not None:
            try:
                key = gw.keys.authenticate({b"authorization": auth.encode("latin-1", "replace")})
            except GatewayError as err:
                return json_error(401, err.message)
            if not key.admin:
                return json_error(403, f"API key {key.name!r} is not an admin key.")
            g.admin = key
            return None
        admin = session_admin(gw)
        if admin is None:
            if path.startswith(API_PREFIX):
                return json_error(401, "Send 'Authorization: Bearer <admin key>'.")
            target = login_url(request.full_path if request.query_string else path)
            if request.headers.get("HX-Request") == "true":
                return Response("", status=401, headers={"HX-Redirect": target})
            return redirect(target, 303)
        if request.method not in SAFE_METHODS and request.headers.get("HX-Request") != "true":
            return _refuse(403, "A browser-session request that changes state needs HX-Request.")
        g.admin = admin
        return None

    @app.get(LOGIN)
    async def login_form() -> ResponseReturnValue:
        return await render_template("login.html", next=local_target(request.args.get("next")))

    @app.post(LOGIN)
    async def login() -> ResponseReturnValue:
        form = await request.form
        target = local_target(form.get("next"))
        try:
            key = check_key(gw, form.get("key", "").strip())
        except GatewayError:
            page = await render_template("login.html", next=target, error="Unknown API key.")
            return page, 401
        if not key.admin:
            error = f"Key {key.name!r} is not an admin key."
            return await render_template("login.html", next=target, error=error), 403
        session.clear()
        session[SESSION_KEY] = key.key_hash
        session.permanent = True
        return redirect(target, 303)

    @app.post("/logout")
    async def logout() -> ResponseReturnValue:
        session.clear()
        return Response("", status=200, headers={"HX-Redirect": LOGIN})


__all__ = ["API_PREFIX", "LOGIN", "install", "json_error", "local_target"]
