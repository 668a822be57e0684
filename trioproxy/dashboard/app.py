"""``create_dashboard(gateway)``: the Quart-Trio app behind every non-/v1 path.

Mounted as ``gateway.inner = create_dashboard(gateway)``; the gateway keeps the
proxy endpoints, ``/healthz`` and ``/readyz`` and hands every other HTTP request
here.

**Lifespan.** The app registers no ``before_serving``/``while_serving``/
``after_serving`` hooks and starts no background tasks, so it needs no ASGI
lifespan: a request is served entirely by ``TrioASGIHTTPConnection`` (its own
per-request nursery). Quart-Trio's lifespan would only set ``app.nursery`` (for
``add_background_task``), run those hooks, and create ``shutdown_event``; none
is used here, and the tests pin that (see ``test_dashboard_needs_no_lifespan``).

**State.** Sessions, sign-in failures, users, API keys, the audit log, alerts and heartbeats
live in the admin store (:mod:`trioproxy.admin.store`): in PostgreSQL when
``storage.database_url`` is set (shared by every instance), else ``admin.sqlite3`` in
``storage.state_dir`` (shared by the worker processes of a host). Quart's own signed session
is unused. The ``dashboard-store`` service closes it when the app stops.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, cast
from zoneinfo import ZoneInfo

from quart import Response, g, request
from quart_trio import QuartTrio

from trioproxy.dashboard import (
    alerts_page,
    api,
    freshness,
    guard,
    keys_page,
    pages,
    requests_page,
    spend_page,
    users_page,
)
from trioproxy.dashboard.access import CSRF_FIELD, CSRF_HEADER, Access
from trioproxy.dashboard.edits import usd_text
from trioproxy.dashboard.paths import asset_dir, session_secret
from trioproxy.dashboard.wiring import hold_store, open_admin_store
from trioproxy.edge.admin_guard import CHALLENGE
from trioproxy.edge.app import ASGIApp, Gateway

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


def usd(value: float | None, digits: int = 6) -> str:
    """``$1,234.50`` with ``digits`` decimals, more (up to 6, the µUSD) when fewer would hide
    the amount: a $0.00001 limit is never shown as $0.00."""
    if value is None:
        return "-"
    if digits < 6 and round(value, digits) != round(value, 6):
        return "$" + f"{value:,.6f}".rstrip("0")
    return f"${value:,.{digits}f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def count(value: int | None) -> str:
    """A count with thousands separators: ``100,000``."""
    return "-" if value is None else f"{value:,}"


def size(value: int | None) -> str:
    """A size in bytes for people: ``17.5 KiB``, ``256 MiB``; under 1 KiB in bytes."""
    if value is None:
        return "-"
    if value < 1024:
        return f"{value} byte" + ("" if value == 1 else "s")
    amount = float(value)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        amount /= 1024
        if round(amount, 1) < 1024 or unit == "TiB":
            break
    return f"{amount:,.1f}".removesuffix(".0") + " " + unit


def plain(value: float | None) -> str:
    """A USD amount for an input field: up to 6 decimals, no exponent, no trailing zeros."""
    return "" if value is None else f"{value:.6f}".rstrip("0").rstrip(".")


def localtime(ts: float, tz: ZoneInfo) -> str:
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def create_dashboard(gateway: Gateway, *, heartbeat: bool = True) -> QuartTrio:
    """The app over ``gateway``; ``heartbeat``: this process is also a data-plane worker (it
    beats in the admin store; the control-plane process does not)."""
    app = QuartTrio(
        __name__,
        static_folder=str(asset_dir("static")),
        static_url_path="/static",
        template_folder=str(asset_dir("templates")),
    )
    app.config.update(
        SECRET_KEY=session_secret(gateway.settings.storage.state_dir),
        MAX_CONTENT_LENGTH=MAX_BODY,
    )
    acc = Access(gateway, open_admin_store(gateway))
    app.extensions["trioproxy_access"] = acc
    # /metrics's wrong admin keys count in the store, with the rest
    gateway.key_guard = acc.key_guard
    app.jinja_env.filters["usd"] = usd
    app.jinja_env.filters["percent"] = percent
    app.jinja_env.filters["localtime"] = localtime
    app.jinja_env.filters["plain"] = plain
    app.jinja_env.filters["count"] = count
    app.jinja_env.filters["size"] = size
    app.jinja_env.filters["micros"] = usd_text
    app.jinja_env.autoescape = True
    me = freshness.worker_id()
    hold_store(gateway, acc.store, lambda: acc.clock(), heartbeat=heartbeat)

    async def stale_banner() -> str | None:
        return await freshness.banner(gateway, acc.store, acc.clock(), me)

    app.jinja_env.globals["stale_banner"] = stale_banner

    @app.after_request
    async def security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        )
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        if response.status_code == 401:  # as /metrics's: every 401 of the admin port has one
            response.headers.setdefault("WWW-Authenticate", CHALLENGE)
        return response

    @app.context_processor
    async def who() -> dict[str, Any]:
        return {
            "principal": g.get("principal"),
            "csrf": g.get("csrf"),
            "csrf_field": CSRF_FIELD,
            "csrf_header": CSRF_HEADER,
        }

    guard.install(app, acc)
    api.install(app, acc)
    pages.install(app, acc)
    spend_page.install(app, acc, pages.PAGES)
    keys_page.install(app, acc, pages.PAGES)
    users_page.install(app, acc, pages.PAGES)
    alerts_page.install(app, acc, pages.PAGES)
    requests_page.install(app, acc, pages.PAGES)
    return app


def mount_dashboard(gateway: Gateway, *, heartbeat: bool = True) -> QuartTrio:
    """``gateway.inner = create_dashboard(gateway)``, typed: Quart declares its ASGI
    signature with hypercorn's types, the gateway with plain mappings."""
    app = create_dashboard(gateway, heartbeat=heartbeat)
    gateway.inner = cast(ASGIApp, app)
    return app


__all__ = ["create_dashboard", "mount_dashboard"]
