"""The dashboard's request helpers: its error answers (JSON for the admin API and API
clients, a page for a browser, plain text for htmx), where to go after sign-in (a path on
this site only), and the refused request's body: read (bounded) before the answer, or else
its connection is closed, so the connection's next request is never stuck behind unread
bytes.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import trio
from quart import Response, jsonify, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers.response import Response as WerkzeugResponse

AnyResponse = Response | WerkzeugResponse
"""What Quart's ``redirect`` (werkzeug) and our own answers (Quart) have in common."""

LOGIN = "/login"
API_PREFIX = "/admin/api/"
DRAIN_TIMEOUT_S = 2.0


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


__all__ = [
    "API_PREFIX",
    "LOGIN",
    "AnyResponse",
    "cross_site",
    "drained",
    "has_body",
    "json_error",
    "local_target",
    "login_url",
    "refuse",
]
