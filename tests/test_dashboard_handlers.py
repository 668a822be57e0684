"""Every dashboard page, form and error path through Quart's test client (no HTTP server):
sign-in, sessions, CSRF, roles, budget edits and the audit log."""

from __future__ import annotations

import dataclasses
import logging
import re

import pytest
import trio

from tests.chat_client import asgi_chat, chat_body
from tests.dash_fixtures import PASSWORDS, Dash, csrf_of, sign_in, start_dash, trip_a_breaker
from tests.fixtures_gateway import DEMO_KEY
from trioproxy.admin.passwords import hash_password
from trioproxy.admin.throttle import Seen, Throttle
from trioproxy.config import hash_key
from trioproxy.dashboard.access import COOKIE, Access

HX = {"HX-Request": "true"}


def access(d: Dash) -> Access:
    acc = d.app.extensions["trioproxy_access"]
    assert isinstance(acc, Access)
    return acc


async def text(r: object) -> str:
    return await r.get_data(as_text=True)  # type: ignore[attr-defined, no-any-return]


async def limits(d: Dash, team: str = "demo") -> tuple[int | None, int | None]:
    assert d.gw.admission is not None
    gate = d.gw.admission.gate
    got = await gate.store.get_team_limits(team)
    if got is None:
        return (None, None)
    in_force = gate.limits.resolved(team, got)  # (a field without override: the config's)
    return in_force.daily_micros, in_force.monthly_micros


def row(html: str, team: str) -> str:
    found = re.search(rf'<tr id="t-[0-9a-f]+" data-team="{team}">(.*?)</tr>', html, re.S)
    assert found is not None, f"no row for {team}"
    return found.group(1)


# --- sign-in -------------------------------------------------------------------------


async def test_sign_in_pages_and_redirects(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    r = await c.get("/providers?x=1")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/providers%3Fx%3D1"
    form = await text(await c.get(r.headers["location"]))
    assert 'name="next" value="/providers?x=1"' in form and 'name="password"' in form
    # an htmx poll after the session ended goes back to the page, never to the panel
    r = await c.get("/panel/overview", headers={**HX, "HX-Current-URL": "http://h/cache?a=1"})
    assert r.status_code == 401 and r.headers["HX-Redirect"] == "/login?next=/cache%3Fa%3D1"
    r = await c.post("/login", form={"user": "alice", "password": PASSWORDS["alice"],
                                     "next": "//evil.example/x"})  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie and "Max-Age=43200" in cookie
    for page in ("/", "/budgets", "/providers", "/cache", "/audit"):
        got = await c.get(page)
        assert got.status_code == 200, page
        assert "alice · admin" in await text(got)
    for panel in ("overview", "providers", "cache", "budgets"):
        assert (await c.get(f"/panel/{panel}")).status_code == 200
    assert (await c.get("/nope")).status_code == 404
    assert (await c.get("/panel/nope")).status_code == 404


async def test_secure_cookie_when_configured(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery, secure_cookies=True)
    c = d.app.test_client()
    r = await c.post("/login", form={"user": "alice", "password": PASSWORDS["alice"]})
    assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


async def test_api_key_sign_in_and_bearer_api(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    r = await c.post("/login", form={"user": "", "password": "tp-reader-key-not-admin"})
    assert r.status_code == 401 and "Not an admin API key" in await text(r)
    r = await c.post("/login", form={"user": "", "password": DEMO_KEY})
    assert r.status_code == 303
    assert "key:demo · admin" in await text(await c.get("/"))
    api = d.app.test_client()
    assert (await api.get("/admin/api/budgets/demo")).status_code == 401
    bearer = {"Authorization": f"Bearer {DEMO_KEY}"}
    assert (await api.get("/admin/api/budgets/demo", headers=bearer)).status_code == 200
    reader = {"Authorization": "Bearer tp-reader-key-not-admin"}
    assert (await api.get("/admin/api/budgets/demo", headers=reader)).status_code == 403
    # a key the config does not hold (e.g. one made on the dashboard): told where it belongs
    unknown = {"Authorization": "Bearer tp-made-on-the-dashboard"}
    r = await api.get("/admin/api/budgets/demo", headers=unknown)
    assert r.status_code == 401 and "admin = true" in (await r.get_json())["error"]["message"]


async def test_only_a_bearer_authorization_is_an_admin_key(nursery: trio.Nursery) -> None:
    """nginx's auth_basic in front sends 'Authorization: Basic ...' on every request: a
    signed-in browser's every page was a 401 (the header was taken for an admin key). Only
    the Bearer scheme (any case) is; another is ignored and the session cookie decides."""
    d = await start_dash(nursery)
    c = d.app.test_client()
    await sign_in(c, "victor")
    for auth in ("Basic dXNlcjpwYXNz", 'Digest username="u"', "Negotiate abc"):
        r = await c.get("/budgets", headers={"Authorization": auth})
        assert r.status_code == 200 and "victor · viewer" in await text(r), auth
        api = await d.app.test_client().get(
            "/admin/api/budgets/demo", headers={"Authorization": auth}
        )
        assert api.status_code == 401, auth  # the API takes a Bearer admin key only
    bare = d.app.test_client()
    r = await bare.get("/budgets", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")  # no session
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = await bare.get(
            "/admin/api/budgets/demo", headers={"Authorization": f"{scheme} {DEMO_KEY}"}
        )
        assert r.status_code == 200, scheme
    r = await c.get("/budgets", headers={"Authorization": "Bearer tp-wrong"})
    assert r.status_code == 401  # a Bearer key is the key's answer, whatever the cookie


async def test_failed_sign_ins_are_logged_and_throttled(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    d = await start_dash(nursery, login_attempts=3, login_window_s=60)
    acc = access(d)
    now = [1_000_000.0]
    acc.clock = lambda: now[0]
    c = d.app.test_client()
    caplog.set_level(logging.WARNING, "trioproxy.dashboard.guard")
    for _ in range(3):
        r = await c.post("/login", form={"user": "alice", "password": "wrong"})
        assert r.status_code == 401 and "Wrong user name or password" in await text(r)
    assert sum("sign-in failed: user='alice'" in m for m in caplog.messages) == 3
    r = await c.post("/login", form={"user": "alice", "password": PASSWORDS["alice"]})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) == 60
    assert "set-cookie" not in r.headers and any("throttled" in m for m in caplog.messages)
    # the client address is throttled too: another user name from it is refused
    r = await c.post("/login", form={"user": "victor", "password": PASSWORDS["victor"]})
    assert r.status_code == 429
    # an unknown user costs a failure like a wrong password (no user enumeration)
    now[0] += 61
    r = await c.post("/login", form={"user": "nobody", "password": "x"})
    assert r.status_code == 401 and "Wrong user name or password" in await text(r)
    r = await c.post("/login", form={"user": "alice", "password": PASSWORDS["alice"]})
    assert r.status_code == 303


async def test_password_hashes_are_computed_a_few_at_a_time(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each scrypt holds 16 MiB in a thread: a burst of sign-ins ran up to trio's 40 threads at
    once (640 MiB); at most HASHING_AT_ONCE run now, the rest wait their turn."""
    import threading

    from trioproxy.dashboard import access as access_module

    d = await start_dash(nursery)
    acc = access(d)
    release, lock, running, peak = threading.Event(), threading.Lock(), [0], [0]

    def held(password: str, encoded: str) -> bool:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(30)
        with lock:
            running[0] -= 1
        return False

    monkeypatch.setattr(access_module, "verify_password", held)
    burst = 10
    async with trio.open_nursery() as signs:
        for i in range(burst):
            signs.start_soon(acc.password_user, "alice" if i % 2 else f"nobody{i}", "guess")
        with trio.fail_after(20):  # the hashing threads are busy, the rest wait their turn
            while acc.hashing.statistics().tasks_waiting < burst - access_module.HASHING_AT_ONCE:
                await trio.sleep(0.01)
        assert acc.hashing.borrowed_tokens == access_module.HASHING_AT_ONCE
        release.set()
    assert peak[0] == access_module.HASHING_AT_ONCE


async def test_guesses_sent_side_by_side_are_throttled_too(nursery: trio.Nursery) -> None:
    """30 wrong passwords at once, 3 allowed: each was counted, then its scrypt check ran in
    a thread, and only then was its failure written, so all 30 were checked (401)."""
    d = await start_dash(nursery, login_attempts=3, login_window_s=60)
    c = d.app.test_client()
    codes: list[int] = []

    async def guess(i: int) -> None:
        r = await c.post("/login", form={"user": "alice", "password": f"guess-{i}"})
        codes.append(r.status_code)

    async with trio.open_nursery() as burst:
        for i in range(30):
            burst.start_soon(guess, i)
    assert sorted(codes) == [401] * 3 + [429] * 27
    assert not access(d).checking  # nothing left counted as being checked
    r = await c.post("/login", form={"user": "alice", "password": PASSWORDS["alice"]})
    assert r.status_code == 429  # the three failures hold the window


def test_a_subject_being_checked_counts_before_its_failure_is_written() -> None:
    throttle = Throttle(attempts=3, window_s=60)
    assert throttle.retry_after(None, 100.0, checking=2) is None
    assert throttle.retry_after(None, 100.0, checking=3) == 1
    assert throttle.retry_after(Seen(2, 90.0, 95.0), 100.0, checking=1) == 1
    assert throttle.retry_after(Seen(3, 90.0, 95.0), 100.0, checking=0) == 50


# --- sessions ------------------------------------------------------------------------


async def test_logout_revokes_the_session_on_the_server(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    r = await c.post("/login", form={"user": "alice", "password": PASSWORDS["alice"]})
    token = r.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    csrf = csrf_of(await text(await c.get("/budgets")))
    copy = d.app.test_client()
    copy.set_cookie("localhost", COOKIE, token)
    assert (await copy.get("/")).status_code == 200
    assert (await c.post("/logout", form={})).status_code == 403  # no CSRF token: refused
    r = await c.post("/logout", form={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert (await copy.get("/")).status_code == 303  # the copied cookie is dead too
    assert (await c.get("/")).status_code == 303


async def test_absolute_and_idle_lifetimes(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery, session_idle_s=600, session_max_s=3600)
    acc = access(d)
    now = [5_000_000.0]
    acc.clock = lambda: now[0]
    c = d.app.test_client()
    await sign_in(c)
    # polls every 5 minutes are not activity: the session idles out after 10 minutes
    now[0] += 300
    assert (await c.get("/panel/overview", headers=HX)).status_code == 200
    now[0] += 301
    r = await c.get("/panel/overview", headers=HX)
    assert r.status_code == 401 and "HX-Redirect" in r.headers
    # user activity keeps a session alive, but never past the absolute lifetime
    await sign_in(c)
    for _ in range(7):
        now[0] += 500
        assert (await c.get("/budgets")).status_code == 200
    now[0] += 500  # 4,000 s after sign-in
    assert (await c.get("/budgets")).status_code == 303


# --- CSRF and roles --------------------------------------------------------------------


async def test_every_change_needs_the_sessions_csrf_token(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    r = await c.post("/budgets/demo", form={"daily_usd": "5"})
    assert r.status_code == 403 and (await limits(d)) == (None, None)
    r = await c.post("/budgets/demo", form={"daily_usd": "5", "csrf": "forged"})
    assert r.status_code == 403 and (await limits(d)) == (None, None)
    r = await c.put("/admin/api/budgets/demo", json={"daily_usd": 5})
    assert r.status_code == 401  # the admin API takes admin keys only, not a session
    r = await c.post("/cache/flush", form={"team": "demo", "route": "chat"})
    assert r.status_code == 403
    other = d.app.test_client()
    other_csrf = await sign_in(other)
    assert other_csrf != csrf
    r = await c.post("/budgets/demo", form={"daily_usd": "5", "csrf": other_csrf})
    assert r.status_code == 403  # tokens are per session
    r = await c.post("/budgets/demo", form={"daily_usd": "5"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and (await limits(d)) == (5_000_000, None)


async def test_viewers_read_and_team_limited_admins_see_their_teams(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    viewer = d.app.test_client()
    csrf = await sign_in(viewer, "victor")
    page = await text(await viewer.get("/budgets"))
    # a viewer's values are text, not inputs that ignore typing, and the page says why
    assert ">Save<" not in page and "readonly" not in page
    assert set(re.findall(r'<input[^>]*name="([^"]+)"', page)) == {"csrf"}  # the logout form's
    assert 'id="read-only"' in page and "Viewer: read only" in page
    assert 'class="limit read-only"><span class="muted">no limit</span></td>' in page
    assert "A blank field keeps its value" not in page  # an editor's hint
    r = await viewer.post("/budgets/demo", form={"daily_usd": "1", "csrf": csrf})
    assert r.status_code == 403 and "Viewers cannot change" in await text(r)
    assert (await limits(d)) == (None, None)
    assert (await viewer.post("/logout", form={"csrf": csrf})).status_code == 303

    tess = d.app.test_client()
    csrf = await sign_in(tess, "tess")
    page = await text(await tess.get("/budgets"))
    assert 'data-team="ops"' in page and 'data-team="demo"' not in page
    assert 'data-team="demo"' not in await text(await tess.get("/"))
    r = await tess.post("/budgets/demo", form={"daily_usd": "1", "csrf": csrf})
    assert r.status_code == 404 and (await limits(d)) == (None, None)
    r = await tess.post("/budgets/ops", form={"daily_usd": "1", "csrf": csrf})
    assert r.status_code == 200 and (await limits(d, "ops")) == (1_000_000, None)
    # her session does not open the admin API (it read and flushed every team's: a review)
    api = {"X-CSRF-Token": csrf}
    assert (await tess.get("/admin/api/budgets/demo")).status_code == 401
    assert (await tess.get("/admin/api/spend?by=team")).status_code == 401
    r = await tess.post("/admin/api/cache/flush", json={"team": "demo", "route": "chat"},
                        headers=api)  # fmt: skip
    assert r.status_code == 401


async def test_a_config_change_reaches_signed_in_sessions(nursery: trio.Nursery) -> None:
    """A reload (or a restart) that demotes, limits or removes a config user, or takes an
    API key's admin away, holds for sessions signed in before it: the principal captured at
    sign-in edited on for up to session_max_s (12 h), and a removed user could sign in."""
    d = await start_dash(nursery)
    tess, alice, keyed = d.app.test_client(), d.app.test_client(), d.app.test_client()
    tcsrf = await sign_in(tess, "tess")
    await sign_in(alice)
    kcsrf = await sign_in(keyed, "", DEMO_KEY)
    users = dict(d.gw.settings.dashboard.users)
    users["tess"] = dataclasses.replace(users["tess"], role="viewer")
    del users["alice"]
    keys = {h: dataclasses.replace(k, admin=False) if k.name == "demo" else k
            for h, k in d.gw.settings.api_keys.items()}  # fmt: skip
    dashboard = dataclasses.replace(d.gw.settings.dashboard, users=users)
    d.gw.settings = dataclasses.replace(d.gw.settings, dashboard=dashboard, api_keys=keys)
    r = await tess.post("/budgets/ops", form={"daily_usd": "1", "csrf": tcsrf})
    assert r.status_code == 403 and "Viewers cannot change" in await text(r)
    assert (await alice.get("/budgets")).status_code == 303  # to the sign-in page
    r = await keyed.post("/budgets/demo", form={"daily_usd": "1", "csrf": kcsrf})
    assert r.status_code == 303 and (await limits(d)) == (None, None)
    r = await d.app.test_client().post(
        "/login", form={"user": "alice", "password": PASSWORDS["alice"], "next": "/"}
    )
    assert r.status_code == 401  # removed: no new sign-in either


# --- budgets ------------------------------------------------------------------------


async def test_editing_one_limit_keeps_the_other_and_is_audited(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    r = await c.post("/budgets/demo", form={"daily_usd": "5", "monthly_usd": "100", "csrf": csrf})
    assert r.status_code == 200 and (await limits(d)) == (5_000_000, 100_000_000)
    page = await text(r)  # no htmx: the whole page, the message in the row
    assert "<html" in page and "Saved." in row(page, "demo")
    assert 'value="5"' in row(page, "demo") and 'value="100"' in row(page, "demo")
    # only the daily field: the monthly limit stays (the data loss)
    r = await c.post("/budgets/demo", form={"daily_usd": "7", "monthly_usd": "", "csrf": csrf},
                     headers=HX)  # fmt: skip
    fragment = await text(r)
    assert r.status_code == 200 and fragment.lstrip().startswith("<tr")
    assert "Saved." in fragment and "Dismiss" in fragment
    assert (await limits(d)) == (7_000_000, 100_000_000)
    # removing a limit is explicit
    r = await c.post("/budgets/demo", form={"clear_monthly_usd": "on", "csrf": csrf})
    assert r.status_code == 200 and (await limits(d)) == (7_000_000, None)
    # the messages stay until dismissed: the budgets page does not poll
    assert 'hx-trigger="every' not in await text(await c.get("/budgets"))
    dismissed = await text(await c.get("/budgets/row/demo", headers=HX))
    assert "Saved." not in dismissed and 'data-team="demo"' in dismissed

    audit = await text(await c.get("/audit"))
    rows = re.findall(r'<td data-label="Before" class="old">([^<]*)</td>\s*'
                      r'<td data-label="After" class="new">([^<]*)</td>', audit)  # fmt: skip
    assert rows == [
        ("daily $7, monthly $100", "daily $7, monthly none"),
        ("daily $5, monthly $100", "daily $7, monthly $100"),
        ("daily none (config), monthly none (config)", "daily $5, monthly $100"),
    ]
    assert audit.count('<td data-label="Who">alice</td>') == 3
    assert "budget.set" in await text(await c.get("/audit?action=budget."))
    assert "budget.set" not in await text(await c.get("/audit?action=cache."))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1e13", "at most 1,000,000,000 USD"),
        ("-3", "non-negative"),
        ("lots", "must be a number"),
        ("nan", "finite"),
        ("inf", "finite"),
        ("1" * 400, "at most 1,000,000,000 USD"),
        ("0.0000001", "at most 6 decimals"),
        ("12.345678999999999999999999999999", "at most 6 decimals"),  # was 12.345679
    ],
)
async def test_bad_limits_are_400_next_to_their_field(
    nursery: trio.Nursery, value: str, message: str
) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    await c.post("/budgets/demo", form={"daily_usd": "5", "monthly_usd": "50", "csrf": csrf})
    r = await c.post("/budgets/demo", form={"daily_usd": "6", "monthly_usd": value, "csrf": csrf},
                     headers=HX)  # fmt: skip
    fragment = await text(r)
    assert r.status_code == 400
    assert re.search(r'name="monthly_usd"[^>]*aria-invalid="true"', fragment, re.S)
    assert not re.search(r'name="daily_usd"[^>]*aria-invalid', fragment, re.S)
    assert message in fragment
    assert (await limits(d)) == (5_000_000, 50_000_000)  # nothing written, not even daily
    api = await c.put("/admin/api/budgets/demo", json={"monthly_usd": value},
                      headers={"Authorization": f"Bearer {DEMO_KEY}"})  # fmt: skip
    assert api.status_code == 400
    assert message in (await api.get_json())["error"]["fields"]["monthly_usd"]


async def test_unknown_teams_are_refused(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    r = await c.post("/budgets/alpah", form={"daily_usd": "5", "csrf": csrf})
    assert r.status_code == 404 and "Unknown team &#39;alpah&#39;" in await text(r)
    assert (await limits(d, "alpah")) == (None, None)
    bearer = {"Authorization": f"Bearer {DEMO_KEY}"}
    api = d.app.test_client()
    r = await api.put("/admin/api/budgets/alpah", json={"daily_usd": 5}, headers=bearer)
    assert r.status_code == 404 and "unknown team" in (await r.get_json())["error"]["message"]
    assert (await api.get("/admin/api/budgets/alpah", headers=bearer)).status_code == 404
    r = await api.post("/admin/api/cache/flush", json={"team": "alpah", "route": "chat"},
                       headers=bearer)  # fmt: skip
    assert r.status_code == 404
    r = await c.post("/cache/flush", form={"team": "alpah", "route": "chat", "csrf": csrf})
    assert r.status_code == 404 and "unknown team" in await text(r)
    # the JSON API: a key left out keeps, null removes, unknown fields are refused
    r = await api.put("/admin/api/budgets/demo", json={"monthly_usd": 9}, headers=bearer)
    assert r.status_code == 200 and (await limits(d)) == (None, 9_000_000)
    r = await api.put("/admin/api/budgets/demo", json={"daily_usd": 2}, headers=bearer)
    assert (await r.get_json())["monthly_usd"] == 9 and (await limits(d)) == (2_000_000, 9_000_000)
    r = await api.put("/admin/api/budgets/demo", json={"daily": 2}, headers=bearer)
    assert r.status_code == 400
    r = await api.put("/admin/api/budgets/demo", json={"daily_usd": None}, headers=bearer)
    assert r.status_code == 200 and (await limits(d)) == (None, 9_000_000)
    log = await text(await c.get("/audit"))
    assert "key:demo" in log and "alpah" not in log


async def test_cache_flush_form_without_javascript_is_audited(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    r = await c.post("/cache/flush", form={"team": "demo", "route": "chat", "csrf": csrf})
    page = await text(r)
    assert r.status_code == 200 and "<html" in page and "Flushed 0 exact" in page
    assert "cache.flush" in await text(await c.get("/audit"))


# --- spend ------------------------------------------------------------------------------


async def chat(d: Dash, content: str, key: str = DEMO_KEY) -> int:
    """One request through the gateway's own ASGI app (the proxy path, not the dashboard)."""
    return (await asgi_chat(d.gw, key, chat_body(content))).status_code


async def ledger_has(d: Dash, requests: int) -> None:
    from trioproxy.dashboard.snapshot import ledger_of

    backend = ledger_of(d.gw)
    assert backend is not None
    with trio.fail_after(15):  # the ledger writes in batches
        while True:
            rows = await backend.query_hours(by=["team"], first_hour=0, end_hour=2**40)
            if sum(r.requests for r in rows) >= requests:
                return
            await trio.sleep(0.05)


async def test_spend_page_counts_spend_refusals_and_exports_csv(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    assert await chat(d, "one") == 200
    assert await chat(d, "two", key="tp-reader-key-not-admin") == 200
    c = d.app.test_client()
    csrf = await sign_in(c)
    await c.post("/budgets/demo", form={"daily_usd": "0.000001", "csrf": csrf})
    assert await chat(d, "refused") == 429
    await ledger_has(d, 3)

    page = await text(await c.get("/spend?by=team"))
    demo = re.search(r'<tr data-team="demo">(.*?)</tr>', page.split("Outcomes per team")[1], re.S)
    assert demo is not None
    assert re.search(r'class="num ok">1<', demo.group(1))
    assert re.search(r'class="num refused level-alert">1<', demo.group(1))
    assert "<svg" in page and "<rect" in page and "Daily spend by team" in page
    assert 'data-value="demo"' in page and 'data-value="ops"' in page
    assert "Projected month-end" in page

    for by in ("feature", "user", "key", "model", "route"):
        r = await c.get(f"/spend?by={by}")
        assert r.status_code == 200, by
    assert 'data-value="reader"' in await text(await c.get("/spend?by=key"))
    for bad in ("by=colour", "start=2026-13-01", "start=2026-01-10&end=2026-01-01",
                "start=2025-01-01&end=2026-01-01"):  # fmt: skip
        r = await c.get(f"/spend?{bad}")
        assert r.status_code == 400 and 'role="alert"' in await text(r), bad
        assert (await c.get(f"/spend.csv?{bad}")).status_code == 400

    r = await c.get("/spend.csv?by=team")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in r.headers["Content-Disposition"]
    lines = (await text(r)).splitlines()
    assert lines[0] == "day,by,value,requests,input_tokens,output_tokens,cost_usd,saved_usd"
    per_team = {line.split(",")[2]: int(line.split(",")[3]) for line in lines[1:]}
    assert per_team == {"demo": 2, "ops": 1}

    tess = d.app.test_client()  # limited to team ops: sees only ops
    await sign_in(tess, "tess")
    page = await text(await tess.get("/spend?by=team"))
    assert 'data-value="ops"' in page and 'data-value="demo"' not in page
    assert "demo" not in await text(await tess.get("/spend.csv"))


async def test_spend_shows_counts_as_the_overview_does(nursery: trio.Nursery) -> None:
    """Spend's table showed 2814 input tokens where Overview showed 2,814."""
    d = await start_dash(nursery)
    assert await chat(d, "word " * 1500) == 200
    await ledger_has(d, 1)
    c = d.app.test_client()
    await sign_in(c)
    overview = re.search(r'<tr data-team="demo">(.*?)</tr>', await text(await c.get("/")), re.S)
    assert overview is not None
    cells = re.search(r'data-label="Input tokens today" class="num">([^<]*)<', overview.group(1))
    assert cells is not None and re.fullmatch(r"\d{1,3}(,\d{3})+", cells.group(1)), cells
    page = await text(await c.get("/spend?by=team"))
    spend = re.search(r'<tr data-value="demo">(.*?)</tr>', page, re.S)
    assert spend is not None
    assert f'data-label="Input tokens" class="num">{cells.group(1)}<' in spend.group(1)


# --- keys -------------------------------------------------------------------------------


def secret_of(html: str) -> str:
    found = re.search(r'<code id="new-secret">([^<]+)</code>', html)
    assert found is not None, "no secret shown"
    return found.group(1)


async def test_keys_create_use_rotate_revoke(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    page = await text(await c.get("/keys"))
    assert 'data-config-key="demo"' in page and 'data-config-key="reader"' in page
    form = {"name": "ci-bot", "team": "search", "user": "", "feature": "nightly",
            "routes": "chat", "priority": "low", "rpm": "100", "tpm": "", "csrf": csrf}  # fmt: skip
    r = await c.post("/keys", form=form)
    assert r.status_code == 201
    created = await text(r)
    secret = secret_of(created)
    assert secret.startswith("tp-") and 'data-key="ci-bot"' in created
    assert secret not in await text(await c.get("/keys"))  # shown once only
    assert secret not in (
        d.settings.storage.state_dir
        and open(  # noqa: ASYNC230
            f"{d.settings.storage.state_dir}/admin.sqlite3", "rb"
        )
        .read()
        .decode("latin-1")
    )
    assert await chat(d, "from the new key", key=secret) == 200
    assert "search" in await text(await c.get("/budgets"))  # a team with a key is known

    r = await c.post("/keys", form=form)  # the name is taken
    assert r.status_code == 400 and "already has this name" in await text(r)

    r = await c.post("/keys/ci-bot/rotate", form={"csrf": csrf})
    assert r.status_code == 200
    rotated = secret_of(await text(r))
    assert rotated != secret
    assert await chat(d, "old secret", key=secret) == 401
    assert await chat(d, "new secret", key=rotated) == 200

    r = await c.post("/keys/ci-bot/revoke", form={"csrf": csrf})
    assert r.status_code == 200 and "revoked" in await text(r)
    assert await chat(d, "revoked", key=rotated) == 401
    assert (await c.post("/keys/ci-bot/revoke", form={"csrf": csrf})).status_code == 404
    assert (await c.post("/keys/demo/revoke", form={"csrf": csrf})).status_code == 404
    log = await text(await c.get("/audit?action=key."))
    assert log.count('class="team">ci-bot<') == 3 and "key.rotate" in log and "key.revoke" in log


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "letters, digits"),
        ("name", "demo", "already has this name"),
        ("team", "bad team", "letters, digits"),
        ("rpm", "-1", "between 1"),
        ("tpm", "lots", "whole number"),
        ("routes", "nope", "unknown routes"),
        ("priority", "urgent", "low, medium or high"),
    ],
)
async def test_bad_key_forms_are_400_next_to_the_field(
    nursery: trio.Nursery, field: str, value: str, message: str
) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    form = {"name": "k1", "team": "t1", "priority": "medium", "csrf": csrf, field: value}
    r = await c.post("/keys", form=form)
    assert r.status_code == 400 and message in await text(r)
    assert 'id="new-secret"' not in await text(r)
    assert access(d).store is not None and await access(d).store.api_keys() == []


async def test_viewers_and_other_teams_cannot_make_keys(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    viewer = d.app.test_client()
    csrf = await sign_in(viewer, "victor")
    assert "Create a key" not in await text(await viewer.get("/keys"))
    r = await viewer.post("/keys", form={"name": "x", "team": "ops", "csrf": csrf})
    assert r.status_code == 403
    tess = d.app.test_client()
    csrf = await sign_in(tess, "tess")
    page = await text(await tess.get("/keys"))
    assert 'data-config-key="reader"' in page and 'data-config-key="demo"' not in page
    r = await tess.post("/keys", form={"name": "x", "team": "demo", "csrf": csrf})
    assert r.status_code == 403 and await access(d).store.api_keys() == []
    r = await tess.post("/keys", form={"name": "x", "team": "ops", "csrf": csrf})
    assert r.status_code == 201


# --- providers --------------------------------------------------------------------------


async def test_breaker_shows_time_open_and_next_probe_and_resets_audited(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery)
    target = await trip_a_breaker(d)
    viewer = d.app.test_client()
    viewer_csrf = await sign_in(viewer, "victor")
    c = d.app.test_client()
    csrf = await sign_in(c)
    page = await text(await c.get("/providers"))
    row = re.search(rf'<tr data-target="{target}">(.*?)</tr>', page, re.S)
    assert row is not None and 'class="breaker-open">open<' in row.group(1)
    probe = re.search(r'class="num probe">(\d+) s<', row.group(1))
    assert probe is not None and 0 < int(probe.group(1)) <= d.settings.breaker.cooldown_s
    assert re.search(r'class="num opened">\d+ s<', row.group(1))
    r = await viewer.post(f"/providers/{target}/reset", form={"csrf": viewer_csrf})
    assert r.status_code == 403
    assert (await c.post("/providers/nope/reset", form={"csrf": csrf})).status_code == 404
    r = await c.post(f"/providers/{target}/reset", form={"csrf": csrf}, headers=HX)
    assert r.status_code == 200 and "reset: closed" in await text(r)
    assert 'class="breaker-closed">closed<' in await text(r)
    log = await text(await c.get("/audit?action=breaker."))
    assert f'class="team">{target}<' in log and "open, 5 failures" in log


async def test_a_rotated_password_or_key_ends_the_sessions_signed_in_with_it(
    nursery: trio.Nursery,
) -> None:
    """A config user's new password hash, or an admin key's new secret under the same name,
    applied by a reload: sessions signed in with the old one end (a leaked credential's
    sessions kept working up to 12 h after it was rotated); other sessions go on."""
    d = await start_dash(nursery)
    alice, victor, keyed = d.app.test_client(), d.app.test_client(), d.app.test_client()
    acsrf = await sign_in(alice)
    await sign_in(victor, "victor")
    kcsrf = await sign_in(keyed, "", DEMO_KEY)
    users = dict(d.gw.settings.dashboard.users)
    users["alice"] = dataclasses.replace(
        users["alice"], password_hash=hash_password("alice-new-password-1", log2_n=10)
    )
    keys = {}
    for k in d.gw.settings.api_keys.values():
        if k.name == "demo":
            k = dataclasses.replace(k, key_hash=hash_key("tp-rotated-demo-key-0123456789"))
        keys[k.key_hash] = k
    dashboard = dataclasses.replace(d.gw.settings.dashboard, users=users)
    d.gw.settings = dataclasses.replace(d.gw.settings, dashboard=dashboard, api_keys=keys)
    r = await alice.post("/budgets/demo", form={"daily_usd": "3", "csrf": acsrf})
    assert r.status_code == 303 and (await limits(d)) == (None, None)  # to the sign-in page
    r = await keyed.post("/budgets/demo", form={"daily_usd": "4", "csrf": kcsrf})
    assert r.status_code == 303 and (await limits(d)) == (None, None)
    assert (await victor.get("/budgets")).status_code == 200  # unchanged: still in
    assert await sign_in(d.app.test_client(), "alice", "alice-new-password-1")  # the new one


async def test_another_site_cannot_sign_this_browser_in(nursery: trio.Nursery) -> None:
    """Login CSRF: a form on another site posting a valid account's password signed the
    victim's browser in as that account (the session cookie set by a cross-site response).
    The browser's own page, or a client without fetch metadata, still signs in."""
    d = await start_dash(nursery)
    form = {"user": "victor", "password": PASSWORDS["victor"], "next": "/keys"}
    c = d.app.test_client()
    r = await c.post("/login", form=form, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    assert (await c.get("/budgets")).status_code == 303  # not signed in
    r = await c.post("/login", form=form, headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 303 and COOKIE in r.headers.get("set-cookie", "")
    assert (await d.app.test_client().post("/login", form=form)).status_code == 303


async def test_failures_from_other_addresses_do_not_lock_a_user_or_admin_keys_out(
    nursery: trio.Nursery,
) -> None:
    """login_attempts failures for a user name, each from another address, locked its owner
    out from their own address (anyone could, with ten requests); wrong admin keys (no user
    name) locked every admin-key sign-in out. Then 10 x login_attempts from all addresses
    refused the right password for the whole window. A user name's failures from all
    addresses delay its sign-ins now, by seconds (admin keys count by address only)."""
    d = await start_dash(nursery, login_attempts=3, login_window_s=60)
    now = [1_000_000.0]
    access(d).clock = lambda: now[0]

    async def login(user: str, password: str, addr: str) -> int:
        r = await d.app.test_client().post(
            "/login", form={"user": user, "password": password, "next": "/"},
            scope_base={"client": (addr, 1234)},
        )  # fmt: skip
        return r.status_code

    for i in range(3):
        assert await login("victor", "wrong", f"10.0.0.{i}") == 401
        assert await login("", "tp-not-a-key", f"10.0.1.{i}") == 401
    assert await login("", DEMO_KEY, "192.168.1.6") == 303
    assert await login("victor", PASSWORDS["victor"], "192.168.1.5") == 429  # 1 s after
    now[0] += 1
    assert await login("victor", PASSWORDS["victor"], "192.168.1.5") == 303
    for i in range(3, 100):  # spread over many addresses, each as soon as it may
        now[0] += 10
        assert await login("victor", "wrong", f"10.0.2.{i}") == 401
    assert await login("victor", "wrong", "10.0.3.1") == 429  # one guess per 10 s at most
    now[0] += 10
    assert await login("victor", PASSWORDS["victor"], "192.168.1.5") == 303


async def test_cursors_and_periods_out_of_range_are_no_500(nursery: trio.Nursery) -> None:
    """A cursor past the stores' INTEGER or a datetime, or a period further back than a
    datetime goes, was a 500 (the API's as HTML): a cursor that is not one is the first page,
    a period the API cannot read is a 400 in JSON."""
    d = await start_dash(nursery)
    c = d.app.test_client()
    await sign_in(c)
    big = "99999999999999999999999"
    for path in (f"/alerts?before={big}", f"/audit?before={big}", f"/audit?before=-{big}",
                 f"/panel/alerts?before={big}", "/requests?before=1e300~x",
                 "/requests?before=-1e300~x", "/requests.csv?before=1e308~zz"):  # fmt: skip
        assert (await c.get(path)).status_code in (200, 400), path  # the first page, or why
    api = d.app.test_client()
    r = await api.get(
        "/admin/api/spend?since=99999999999d", headers={"Authorization": f"Bearer {DEMO_KEY}"}
    )
    assert r.status_code == 400 and "too far back" in (await r.get_json())["error"]["message"]


async def test_a_team_admin_cannot_take_another_teams_revoked_key_name_or_user(
    nursery: trio.Nursery,
) -> None:
    """The audit log finds a key's and a user's entries by name: a team admin who made a key
    with the name (or for the user) of another team's revoked key read that team's history
    (its limits, its user's window) and took its overrides on."""
    d = await start_dash(nursery)
    a, t = d.app.test_client(), d.app.test_client()
    acsrf, tcsrf = await sign_in(a), await sign_in(t, "tess")
    form = {"csrf": acsrf, "name": "billing", "team": "demo", "user": "dana"}
    assert (await a.post("/keys", form=form)).status_code == 201
    assert (await a.post("/keys/billing/revoke", form={"csrf": acsrf})).status_code == 200
    r = await t.post("/keys", form={"csrf": tcsrf, "name": "billing", "team": "ops", "user": "tia"})
    assert r.status_code == 400 and "key had this name" in await text(r)
    r = await t.post(
        "/keys", form={"csrf": tcsrf, "name": "ops-bill", "team": "ops", "user": "dana"}
    )
    assert r.status_code == 403
    assert "billing" not in await text(await t.get("/audit"))
    r = await a.post("/keys", form={**form, "name": "billing"})  # its own team may, again
    assert r.status_code == 201
