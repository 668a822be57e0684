"""The admin port's authentication: wrong admin keys throttled per address on the admin API
and ``/metrics`` (with the failed sign-ins), through the admin port's own ASGI app (the
gateway's ``/metrics`` and probes, then the dashboard) over an in-process transport."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.dash_fixtures import PASSWORDS, READER_KEY, Dash, start_dash
from tests.fixtures_gateway import DEMO_KEY
from tests.test_dashboard_handlers import access
from trioproxy.admin.store import StoreError
from trioproxy.admin.throttle import Throttle
from trioproxy.config.load import config_warnings
from trioproxy.edge.admin_guard import LocalKeyGuard
from trioproxy.server.admin import AdminApp

ADMIN = {"Authorization": f"Bearer {DEMO_KEY}"}
WRONG = {"Authorization": "Bearer tp-a-guess-0123456789"}


def admin_port(d: Dash, addr: str) -> httpx.AsyncClient:
    """A client of the admin port's app, its requests coming from ``addr``."""
    transport = httpx.ASGITransport(app=AdminApp(d.gw), client=(addr, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://admin")


async def mocked_clock(d: Dash) -> list[float]:
    now = [1_000_000.0]
    access(d).clock = lambda: now[0]
    return now


async def test_wrong_admin_keys_are_throttled_per_address_on_the_api_and_metrics(
    nursery: trio.Nursery,
) -> None:
    """300 wrong Bearer keys on /admin/api and /metrics took 5.8 s, none refused. Now they
    count per address with the failed sign-ins (login_attempts per login_window_s): then
    429 with Retry-After whatever the address sends, the right key too; other addresses go
    on; a request without a key is no guess."""
    d = await start_dash(nursery, login_attempts=3, login_window_s=60)
    now = await mocked_clock(d)
    async with admin_port(d, "10.9.0.1") as c, admin_port(d, "10.9.0.2") as other:
        for _ in range(5):  # no key: refused, not counted
            assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers=ADMIN)).status_code == 200
        assert (await c.get("/metrics", headers=WRONG)).status_code == 401
        assert (await c.get("/admin/api/budgets/demo", headers=WRONG)).status_code == 401
        assert (await c.get("/budgets", headers=WRONG)).status_code == 401  # any page
        for path in ("/metrics", "/admin/api/budgets/demo"):
            for headers in (WRONG, ADMIN):
                r = await c.get(path, headers=headers)
                assert r.status_code == 429 and r.headers["retry-after"] == "60", (path, r.text)
                assert r.json()["error"]["status"] == 429
        form = {"user": "alice", "password": PASSWORDS["alice"]}
        assert (await c.post("/login", data=form)).status_code == 429  # one count per address
        assert (await other.get("/metrics", headers=ADMIN)).status_code == 200
        assert (await other.get("/admin/api/budgets/demo", headers=ADMIN)).status_code == 200
        now[0] += 61
        assert (await c.get("/admin/api/budgets/demo", headers=ADMIN)).status_code == 200
        assert (await c.get("/metrics", headers=ADMIN)).status_code == 200


async def test_admin_keys_sent_side_by_side_are_counted_before_they_are_checked(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery, login_attempts=3, login_window_s=60)
    codes: list[int] = []
    async with admin_port(d, "10.9.1.1") as c:

        async def guess(i: int) -> None:
            path = "/metrics" if i % 2 else "/admin/api/budgets/demo"
            headers = {"Authorization": f"Bearer tp-guess-{i}"}
            codes.append((await c.get(path, headers=headers)).status_code)

        async with trio.open_nursery() as burst:
            for i in range(30):
                burst.start_soon(guess, i)
    assert sorted(codes) == [401] * 3 + [429] * 27
    assert not access(d).checking


async def test_wrong_admin_keys_stay_throttled_while_the_admin_store_does_not_answer(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin API and /metrics do not need the admin store: while it is down they go on,
    counting the failures in the process."""
    d = await start_dash(nursery, login_attempts=3, login_window_s=60)
    store = access(d).store

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("admin store: OperationalError: no route to host")

    monkeypatch.setattr(store, "failures", down)
    monkeypatch.setattr(store, "record_failure", down)
    async with admin_port(d, "10.9.2.1") as c:
        assert (await c.get("/metrics", headers=ADMIN)).status_code == 200
        for _ in range(3):
            assert (await c.get("/metrics", headers=WRONG)).status_code == 401
        assert (await c.get("/admin/api/budgets/demo", headers=ADMIN)).status_code == 429


async def test_without_the_dashboard_metrics_counts_wrong_keys_in_the_process() -> None:
    now = [100.0]
    guard = LocalKeyGuard(lambda: Throttle(attempts=2, window_s=30), clock=lambda: now[0])
    for _ in range(2):
        assert await guard.admit("a") is None
        await guard.settle("a", failed=True)
    assert await guard.admit("a") == 30
    assert await guard.admit("b") is None  # another address; being checked now
    assert await guard.admit("b") is None
    assert await guard.admit("b") == 1  # two being checked, each a failure to be
    await guard.settle("b", failed=False)
    await guard.settle("b", failed=False)
    now[0] += 20
    assert await guard.admit("a") == 10
    now[0] += 10.5  # both failures out of the window
    assert await guard.admit("a") is None


def test_check_config_warns_of_short_admin_keys(tmp_path: Path) -> None:
    data = {
        "api_keys": [
            {"name": "ops", "key_env": "OPS", "admin": True},
            {"name": "long", "key_env": "LONG", "admin": True},
            {"name": "bot", "key_env": "BOT"},  # not an admin key: the data port's
            {"name": "hashed", "key_sha256": "ab" * 32, "admin": True},  # cannot be seen
        ]
    }
    env = {"OPS": "sk-ops-short", "LONG": "x" * 32, "BOT": "short"}
    warnings = config_warnings(data, env)
    assert len(warnings) == 1 and warnings[0].startswith(
        "api_keys[0].key_env: the admin key in OPS is 12 characters"
    )


# --- one error shape -------------------------------------------------------------------


def error_of(r: httpx.Response) -> dict[str, Any]:
    """The admin port's error body, which must be {"error": {"message", "status"}} only."""
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "status"}, body
    assert body["error"]["status"] == r.status_code
    return body["error"]  # type: ignore[no-any-return]


async def test_the_admin_ports_errors_have_one_shape_and_401s_a_challenge(
    nursery: trio.Nursery,
) -> None:
    """/metrics answered in the OpenAI error shape, /admin/api in its own, neither 401 with
    WWW-Authenticate; HEAD /metrics went to the dashboard (303 to the sign-in page)."""
    d = await start_dash(nursery)
    reader = {"Authorization": f"Bearer {READER_KEY}"}
    async with admin_port(d, "10.9.3.1") as c:
        for path in ("/metrics", "/admin/api/budgets/demo"):
            for headers in ({}, WRONG):
                r = await c.get(path, headers=headers)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
                error_of(r)
            r = await c.get(path, headers=reader)
            assert r.status_code == 403 and "not an admin key" in error_of(r)["message"].lower()
        r = await c.head("/metrics", headers=ADMIN)
        assert r.status_code == 200 and r.content == b""
        assert r.headers["content-type"].startswith("text/plain")
        assert int(r.headers["content-length"]) > 0
        r = await c.head("/metrics")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = await c.post("/metrics", headers=ADMIN)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
        error_of(r)
        # a page's 401 carries the challenge too (a wrong password, an htmx poll signed out)
        r = await c.post("/login", data={"user": "alice", "password": "wrong"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = await c.get("/panel/overview", headers={"HX-Request": "true"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        d.gw.inner = None  # the dashboard not mounted: the admin port's own 404
        r = await c.get("/budgets")
        assert r.status_code == 404 and "Unknown path" in error_of(r)["message"]


async def test_head_metrics_over_http(nursery: trio.Nursery) -> None:
    """The admin port's server (hypercorn) answers HEAD /metrics without a body."""
    from tests.test_dashboard import start

    g = await start(nursery)
    async with httpx.AsyncClient(base_url=g.admin_url, timeout=30) as c:
        get = await c.get("/metrics", headers=ADMIN)
        head = await c.head("/metrics", headers=ADMIN)
        assert get.status_code == head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
        assert (await c.get("/healthz")).status_code == 200  # the connection went on


# --- the sign-in throttle: delays for a user name, trusted proxies, metrics ---------------


async def sign_in_as(c: Any, user: str, password: str, addr: str) -> Any:
    return await c.post("/login", form={"user": user, "password": password, "next": "/"},
                        scope_base={"client": (addr, 1234)})  # fmt: skip


async def test_a_spread_attack_delays_the_right_password_by_seconds_and_a_known_browser_not_at_all(
    nursery: trio.Nursery,
) -> None:
    """A review kept root out of the dashboard from ten addresses (one IPv6 /64 is enough):
    at 10 x login_attempts failures from all addresses the right password was refused for
    the whole window. It waits seconds now; from the user's own browser (its device cookie)
    or a place it signed in from, not at all."""
    d = await start_dash(nursery, login_attempts=3, login_window_s=300)
    now = await mocked_clock(d)
    laptop = d.app.test_client()
    r = await sign_in_as(laptop, "alice", PASSWORDS["alice"], "192.0.2.7")
    assert r.status_code == 303
    cookies = r.headers.getlist("set-cookie")
    attacker = d.app.test_client()
    for i in range(40):  # a wrong password as soon as it may be tried, each from a new address
        r = await sign_in_as(attacker, "alice", "guess", f"2001:db8:{i}::1")
        if r.status_code == 429:
            assert 1 <= int(r.headers["Retry-After"]) <= 10
            now[0] += int(r.headers["Retry-After"])
            r = await sign_in_as(attacker, "alice", "guess", f"2001:db8:{i}::2")
        assert r.status_code == 401
    # a new browser at a new place: told to wait seconds (not the window), then let in
    r = await sign_in_as(d.app.test_client(), "alice", PASSWORDS["alice"], "198.18.0.1")
    assert r.status_code == 429 and "Too many failed sign-ins as alice" in await r.get_data(True)
    wait = int(r.headers["Retry-After"])
    assert 1 <= wait <= 10
    now[0] += wait
    r = await sign_in_as(d.app.test_client(), "alice", PASSWORDS["alice"], "198.18.0.1")
    assert r.status_code == 303
    assert (await sign_in_as(attacker, "alice", "guess", "2001:db8:99::1")).status_code == 401
    # the name is held at its delay again: alice's laptop, elsewhere, goes in at once
    r = await sign_in_as(laptop, "alice", PASSWORDS["alice"], "203.0.113.50")
    assert r.status_code == 303
    # and so does any browser at a place she signed in from
    r = await sign_in_as(d.app.test_client(), "alice", PASSWORDS["alice"], "192.0.2.7")
    assert r.status_code == 303
    # the laptop's own wrong passwords are limited by its own count
    for _ in range(3):
        assert (await sign_in_as(laptop, "alice", "typo", "203.0.113.51")).status_code == 401
    r = await sign_in_as(laptop, "alice", PASSWORDS["alice"], "203.0.113.52")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) == 300
    device = next(c for c in cookies if c.startswith("trioproxy_device="))
    assert "Path=/login" in device and "HttpOnly" in device and "SameSite=Strict" in device


async def test_behind_a_trusted_proxy_each_client_counts_by_its_own_address(
    nursery: trio.Nursery,
) -> None:
    """Behind a TLS reverse proxy every client had the proxy's address: 10 bad requests
    locked the whole dashboard out, the admin key's sign-in too. With the proxy trusted, the
    client is the address it names in X-Forwarded-For; from anyone else the header is
    ignored."""
    d = await start_dash(nursery, login_attempts=3, trusted_proxies=("10.0.0.1/32",))
    await mocked_clock(d)

    def via_proxy(client: str) -> dict[str, str]:
        return {"X-Forwarded-For": f"198.51.100.77, {client}"}  # the left part: forgeable

    async with admin_port(d, "10.0.0.1") as proxy, admin_port(d, "192.0.2.1") as direct:
        for _ in range(3):
            form = {"user": "victor", "password": "wrong"}
            r = await proxy.post("/login", data=form, headers=via_proxy("203.0.113.5"))
            assert r.status_code == 401
        form = {"user": "alice", "password": PASSWORDS["alice"]}
        r = await proxy.post("/login", data=form, headers=via_proxy("203.0.113.5"))
        assert r.status_code == 429
        r = await proxy.post("/login", data=form, headers=via_proxy("203.0.113.6"))
        assert r.status_code == 303
        key = {"user": "", "password": DEMO_KEY}
        assert (await proxy.post("/login", data=key)).status_code == 303  # the proxy itself
        assert (
            await proxy.get("/metrics", headers=ADMIN | via_proxy("203.0.113.6"))
        ).status_code == 200
        assert (
            await proxy.get("/metrics", headers=ADMIN | via_proxy("203.0.113.5"))
        ).status_code == 429
        # not from the proxy: the header is the client's own word, and ignored
        for _ in range(3):
            r = await direct.get("/metrics", headers=WRONG | via_proxy("203.0.113.8"))
            assert r.status_code == 401
        assert (await direct.get("/metrics", headers=ADMIN)).status_code == 429
        assert (
            await proxy.get("/metrics", headers=ADMIN | via_proxy("203.0.113.8"))
        ).status_code == 200


async def test_failed_authentications_are_counted_in_metrics(nursery: trio.Nursery) -> None:
    from tests.test_metrics import parse

    d = await start_dash(nursery, login_attempts=2, login_window_s=60)
    await mocked_clock(d)
    async with admin_port(d, "192.0.2.1") as c, admin_port(d, "192.0.2.2") as scraper:
        assert (await c.post("/login", data={"user": "alice", "password": "x"})).status_code == 401
        assert (await c.get("/admin/api/budgets/demo", headers=WRONG)).status_code == 401
        assert (await c.get("/metrics", headers=WRONG)).status_code == 429
        assert (await c.post("/login", data={"user": "", "password": "x"})).status_code == 429
        got = parse((await scraper.get("/metrics", headers=ADMIN)).text)
    failures = "trioproxy_admin_auth_failures_total"
    throttled = "trioproxy_admin_auth_throttled_total"
    assert got[(failures, frozenset({("kind", "password")}))] == 1
    assert got[(failures, frozenset({("kind", "admin_key")}))] == 1
    assert got[(throttled, frozenset({("limit", "address")}))] == 2
