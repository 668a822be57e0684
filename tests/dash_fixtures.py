"""The dashboard under Quart's test client: a real gateway (demo config over the simulator,
SQLite budget store, durable ledger, admin store), its services running in the test's
nursery, no HTTP server in between."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from quart_trio import QuartTrio

from tests.fixtures_gateway import DEMO_KEY, start_simulator
from trioproxy.admin.passwords import hash_password
from trioproxy.config import demo_settings, hash_key
from trioproxy.config.model import ApiKeyConfig, DashboardConfig, DashboardUser, Settings
from trioproxy.edge.app import Gateway
from trioproxy.server.factory import build_gateway

READER_KEY = "tp-reader-key-not-admin"
PASSWORDS = {"alice": "alice-password-1", "victor": "victor-password-1", "tess": "tess-pw-1"}
_HASHES = {name: hash_password(pw, log2_n=10) for name, pw in PASSWORDS.items()}


@dataclass
class Dash:
    gw: Gateway
    app: QuartTrio
    settings: Settings
    sim_url: str


def settings_for(sim_url: str, **dashboard: Any) -> Settings:
    settings = demo_settings(sim_url, DEMO_KEY, state_dir=tempfile.mkdtemp(prefix="tp-dash-"))
    reader = ApiKeyConfig(
        name="reader", key_hash=hash_key(READER_KEY), team="ops", user="rita", admin=False
    )
    users = {
        "alice": DashboardUser("alice", _HASHES["alice"], "admin"),
        "victor": DashboardUser("victor", _HASHES["victor"], "viewer"),
        "tess": DashboardUser("tess", _HASHES["tess"], "admin", frozenset({"ops"})),
    }
    cfg = dataclasses.replace(DashboardConfig(users=users), **dashboard)
    return dataclasses.replace(
        settings, api_keys={**settings.api_keys, reader.key_hash: reader}, dashboard=cfg
    )


async def start_dash(
    nursery: trio.Nursery, adjust: Callable[[Settings], Settings] | None = None, **dashboard: Any
) -> Dash:
    """``adjust``: changes the settings before the gateway is built."""
    sim = await start_simulator(nursery)
    settings = settings_for(sim.url, **dashboard)
    if adjust is not None:
        settings = adjust(settings)
    gw = build_gateway(settings)
    await gw.services.start_all(nursery)
    gw.ready = True
    assert isinstance(gw.inner, QuartTrio)
    return Dash(gw, gw.inner, settings, sim.url)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


async def sign_in(client: Any, user: str = "alice", password: str | None = None) -> str:
    """Sign in through the form; returns the session's CSRF token (read from a page)."""
    r = await client.post(
        "/login", form={"user": user, "password": password or PASSWORDS[user], "next": "/"}
    )
    assert r.status_code == 303, await r.get_data(as_text=True)
    page = await client.get("/budgets")
    assert page.status_code == 200
    return csrf_of(await page.get_data(as_text=True))


async def trip_a_breaker(d: Dash) -> str:
    """Open the breaker of the first model's target (its failure threshold reached); its name."""
    target = sorted(d.settings.models)[0]
    for _ in range(d.settings.breaker.failure_threshold):
        await d.gw.breakers.report(target, trio.current_time(), ok=False)
    return target


__all__ = ["PASSWORDS", "READER_KEY", "Dash", "csrf_of", "sign_in", "start_dash", "trip_a_breaker"]


def cell(html: str, row_attr: str, cls: str) -> str:
    """The text of the ``num <cls>`` cell in the table row ``<tr <row_attr>>``."""
    row = re.search(rf"<tr {row_attr}>(.*?)</tr>", html, re.S)
    assert row is not None, f"no row {row_attr}"
    found = re.search(rf'<td[^>]*class="num {cls}">([^<]*)</td>', row.group(1))
    assert found is not None, f"no {cls} cell in {row_attr}"
    return found.group(1).strip()


async def page_ok(client: Any, path: str, **kwargs: Any) -> str:
    """GET ``path`` and its text, which must be the page itself (200): an assertion that
    something is absent from it would pass on an error page or a sign-in redirect too."""
    r = await client.get(path, **kwargs)
    assert r.status_code == 200, (path, r.status_code)
    return await r.get_data(as_text=True)  # type: ignore[no-any-return]
