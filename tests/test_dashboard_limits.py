"""Editing alert thresholds, users' token windows and keys' RPM / TPM in place, like
budgets: blank keeps, "no limit" removes, bounds give 400 next to the field, every change
is audited, and the gateway enforces the new value."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection

import trio

from tests.dash_fixtures import READER_KEY, Dash, page_ok, sign_in, start_dash
from tests.fixtures_gateway import DEMO_KEY
from tests.test_dashboard_handlers import HX, chat, limits, row, text
from trioproxy.admin.db import StoreError
from trioproxy.budget.overrides import limits_entry
from trioproxy.budget.policy import KeyLimits, Policy, threshold_entry
from trioproxy.budget.store import FROM_CONFIG


async def policy(d: Dash) -> Policy:
    assert d.gw.admission is not None
    return Policy.decode(await d.gw.admission.gate.store.get_policy())


def audit_rows(html: str) -> list[tuple[str, str, str, str]]:
    return re.findall(
        r'<td data-label="Action">([^<]*)</td>\s*<td data-label="What" class="team">([^<]*)</td>'
        r'\s*<td data-label="Before" class="old">([^<]*)</td>\s*'
        r'<td data-label="After" class="new">([^<]*)</td>',
        html,
    )


async def test_alert_threshold_is_edited_in_place_and_audited(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    await c.post("/budgets/demo", form={"daily_usd": "5", "csrf": csrf})
    r = await c.post("/budgets/demo", form={"alert_pct": "50", "csrf": csrf}, headers=HX)
    fragment = await text(r)
    assert r.status_code == 200 and "Saved." in fragment
    assert re.search(r'name="alert_pct"[^>]*value="50"', fragment, re.S)
    assert (await policy(d)).thresholds == {"demo": 0.5}
    assert (await limits(d)) == (5_000_000, None)  # the limits untouched
    # blank keeps; out of bounds: 400 next to the field, nothing written (not even daily)
    r = await c.post("/budgets/demo", form={"daily_usd": "6", "alert_pct": "150", "csrf": csrf},
                     headers=HX)  # fmt: skip
    fragment = await text(r)
    assert r.status_code == 400 and "from 1 to 100" in fragment
    assert re.search(r'name="alert_pct"[^>]*aria-invalid="true"', fragment, re.S)
    assert (await limits(d)) == (5_000_000, None)
    # explicit removal: no alerts
    r = await c.post("/budgets/demo", form={"clear_alert_pct": "on", "csrf": csrf})
    assert r.status_code == 200 and "<html" in await text(r)
    assert (await policy(d)).thresholds == {"demo": None}
    assert 'placeholder="off"' in row(await text(await c.get("/budgets")), "demo")
    bearer = {"Authorization": f"Bearer {DEMO_KEY}"}
    api = d.app.test_client()
    r = await api.put("/admin/api/budgets/demo", json={"alert_threshold": 0.9}, headers=bearer)
    assert r.status_code == 200 and (await r.get_json())["alert_threshold"] == 0.9
    r = await api.put("/admin/api/budgets/demo", json={"alert_threshold": 2}, headers=bearer)
    assert r.status_code == 400 and "alert_threshold" in (await r.get_json())["error"]["fields"]
    log = audit_rows(await text(await c.get("/audit?action=budget.alert")))
    assert log == [
        ("budget.alert", "demo", "off", "90%"),
        ("budget.alert", "demo", "50%", "off"),
        ("budget.alert", "demo", "80%", "50%"),
    ]


async def test_user_token_windows_are_edited_in_place_and_enforced(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    page = await text(await c.get("/budgets"))
    assert 'data-user="rita"' in page and 'data-user="demo"' in page
    assert "within 2.0 s" in page  # says when a change takes effect on other workers
    r = await c.post("/windows/rita", form={"tokens": "1", "window_s": "60", "csrf": csrf})
    assert r.status_code == 200 and "Saved." in await text(r)
    window = (await policy(d)).windows["rita"]
    assert window is not None and (window.tokens, window.window_s) == (1, 60)
    assert await chat(d, "too many tokens for rita", key=READER_KEY) == 429
    # blank keeps the other field; a bad value is 400 next to its field
    r = await c.post("/windows/rita", form={"window_s": "0", "csrf": csrf}, headers=HX)
    page = await text(r)
    assert r.status_code == 400 and "between 1 and" in page
    assert re.search(r'name="window_s"[^>]*aria-invalid="true"', page, re.S)
    r = await c.post("/windows/rita", form={"tokens": "1,000,000", "csrf": csrf})
    window = (await policy(d)).windows["rita"]
    assert window is not None and (window.tokens, window.window_s) == (1_000_000, 60)
    assert await chat(d, "fits now", key=READER_KEY) == 200
    r = await c.post("/windows/rita", form={"clear_tokens": "on", "csrf": csrf})
    assert r.status_code == 200 and (await policy(d)).windows["rita"] is None
    r = await c.post("/windows/nobody", form={"tokens": "5", "csrf": csrf})
    assert r.status_code == 404 and "unknown user" in await text(r)
    # an admin limited to team ops edits ops' users only
    tess = d.app.test_client()
    tcsrf = await sign_in(tess, "tess")
    assert 'data-user="demo"' not in await page_ok(tess, "/budgets")
    r = await tess.post("/windows/demo", form={"tokens": "5", "csrf": tcsrf})
    assert r.status_code == 404
    # nor by a key of hers made for demo's user: it would spend demo's window, and the window
    # was then hers to edit (a review: she set it to 1 token and demo's own key got 429s)
    form = {"name": "grab", "team": "ops", "user": "demo", "csrf": tcsrf}
    r = await tess.post("/keys", form=form)
    assert r.status_code == 403 and "teams you do not manage" in await text(r)
    r = await tess.post("/windows/demo", form={"tokens": "1", "csrf": tcsrf})
    assert r.status_code == 404 and (await policy(d)).windows.get("demo") is None
    r = await tess.post("/keys", form={**form, "name": "own", "user": "olga"})
    assert r.status_code == 201  # a user of her teams alone is hers
    log = audit_rows(await text(await c.get("/audit?action=window.")))
    assert log[-1] == ("window.set", "rita", "none", "1 tokens / 60 s")
    assert log[0] == ("window.set", "rita", "1,000,000 tokens / 60 s", "none")
    r = await d.app.test_client().put(
        "/admin/api/windows/rita",
        json={"tokens": 0},
        headers={"Authorization": f"Bearer {DEMO_KEY}"},
    )
    assert r.status_code == 400


async def test_the_default_window_binds_every_user_without_their_own(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    assert 'data-user="*"' in await page_ok(c, "/budgets")
    r = await c.post("/windows/*", form={"tokens": "1", "window_s": "60", "csrf": csrf})
    assert r.status_code == 200 and "Saved." in await text(r)
    window = (await policy(d)).windows["*"]
    assert window is not None and (window.tokens, window.window_s) == (1, 60)
    assert await chat(d, "rita has no window of her own", key=READER_KEY) == 429
    await c.post("/windows/rita", form={"tokens": "1,000,000", "window_s": "60", "csrf": csrf})
    assert await chat(d, "her own window wins", key=READER_KEY) == 200
    r = await c.post("/windows/*", form={"tokens": "0", "csrf": csrf}, headers=HX)
    page = await text(r)
    assert r.status_code == 400 and "between 1 and" in page
    assert re.search(r'name="tokens"[^>]*aria-invalid="true"', page, re.S)
    # it binds every team's users: an admin limited to some teams neither sees nor sets it
    tess = d.app.test_client()
    tcsrf = await sign_in(tess, "tess")
    assert 'data-user="*"' not in await page_ok(tess, "/budgets")
    r = await tess.post("/windows/*", form={"tokens": "5", "csrf": tcsrf})
    assert r.status_code == 403 and "an admin of every team sets it" in await text(r)
    window = (await policy(d)).windows["*"]
    assert window is not None and window.tokens == 1
    log = audit_rows(await text(await c.get("/audit?action=window.")))
    assert ("window.set", "*", "none", "1 tokens / 60 s") in log


async def test_key_rates_are_edited_in_place_and_enforced(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    r = await c.post("/keys/reader/limits", form={"rpm": "1", "csrf": csrf}, headers=HX)
    page = await text(r)
    assert r.status_code == 200 and "Saved." in page
    assert (await policy(d)).rates["reader"].rpm == 1
    assert await chat(d, "first this minute", key=READER_KEY) == 200
    assert await chat(d, "second this minute", key=READER_KEY) == 429
    r = await c.post("/keys/reader/limits", form={"tpm": "0", "rpm": "", "csrf": csrf})
    page = await text(r)
    assert r.status_code == 400 and "between 1 and" in page
    assert re.search(r'name="tpm"[^>]*aria-invalid="true"', page, re.S)
    assert (await policy(d)).rates["reader"].tpm is None
    r = await c.post("/keys/reader/limits", form={"clear_rpm": "on", "csrf": csrf})
    assert r.status_code == 200 and (await policy(d)).rates["reader"].rpm is None
    assert (await c.post("/keys/nope/limits", form={"rpm": "1", "csrf": csrf})).status_code == 404
    viewer = d.app.test_client()
    vcsrf = await sign_in(viewer, "victor")
    r = await viewer.post("/keys/reader/limits", form={"rpm": "5", "csrf": vcsrf})
    assert r.status_code == 403
    log = audit_rows(await text(await c.get("/audit?action=key.limits")))
    assert log == [
        ("key.limits", "reader", "rpm 1, tpm -", "rpm -, tpm -"),
        ("key.limits", "reader", "rpm -, tpm -", "rpm 1, tpm -"),
    ]


async def test_json_api_and_a_store_outage(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    api = d.app.test_client()
    bearer = {"Authorization": f"Bearer {DEMO_KEY}"}
    r = await api.put("/admin/api/keys/reader/limits", json={"rpm": 30, "tpm": 9000},
                      headers=bearer)  # fmt: skip
    assert r.status_code == 200 and (await policy(d)).rates["reader"] == KeyLimits(30, 9000)
    r = await api.put("/admin/api/keys/reader/limits", json={"tpm": None}, headers=bearer)
    assert r.status_code == 200 and (await policy(d)).rates["reader"] == KeyLimits(30, None)
    r = await api.put("/admin/api/keys/reader/limits", json={"rpm": "lots"}, headers=bearer)
    assert r.status_code == 400 and "rpm" in (await r.get_json())["error"]["fields"]
    r = await api.put("/admin/api/keys/nope/limits", json={"rpm": 1}, headers=bearer)
    assert r.status_code == 404
    r = await api.put("/admin/api/windows/rita", json={"tokens": 500, "window_s": 60},
                      headers=bearer)  # fmt: skip
    window = (await policy(d)).windows["rita"]
    assert r.status_code == 200 and window is not None and window.tokens == 500
    r = await api.put("/admin/api/windows/nobody", json={"tokens": 5}, headers=bearer)
    assert r.status_code == 404

    # the budget store stops answering: a change is a 503 saying so, and nothing is audited
    assert d.gw.admission is not None
    gate = d.gw.admission.gate
    calls = gate._calls
    calls.outage = dataclasses.replace(calls.outage, probe_after_s=3600.0)
    calls._mark_down("test: the store is gone")
    c = d.app.test_client()
    csrf = await sign_in(c)
    before = await text(await c.get("/audit"))
    for path, form in (("/budgets/demo", {"daily_usd": "3"}),
                       ("/budgets/demo", {"alert_pct": "70"}),
                       ("/windows/rita", {"tokens": "7"}),
                       ("/keys/reader/limits", {"rpm": "7"})):  # fmt: skip
        r = await c.post(path, form={**form, "csrf": csrf})
        assert r.status_code == 503, path
        assert "budget store unavailable" in (await text(r)).lower(), path
    assert await text(await c.get("/audit")) == before


def shown(fragment: str, name: str) -> str:
    found = re.search(rf'name="{name}"[^>]*value="([^"]*)"', fragment, re.S)
    assert found is not None, f"no pre-filled {name}"
    return found.group(1)


async def test_saving_one_field_of_a_row_keeps_a_change_made_meanwhile(
    nursery: trio.Nursery,
) -> None:
    """The row's inputs are pre-filled; a Save sends them all. One sent back as it was shown
    keeps, so a change made elsewhere after the page was loaded is not written back over."""
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    r = await c.post("/budgets/demo", form={"daily_usd": "5", "monthly_usd": "50", "csrf": csrf})
    assert r.status_code == 200
    page = row(await text(await c.get("/budgets")), "demo")
    form = {name: shown(page, name) for name in ("daily_usd", "monthly_usd", "alert_pct")}
    form |= {f"orig_{name}": value for name, value in form.items()}
    assert form["daily_usd"] == "5" and form["monthly_usd"] == "50"
    api = d.app.test_client()  # meanwhile another admin lowers the daily limit
    r = await api.put("/admin/api/budgets/demo", json={"daily_usd": 2},
                      headers={"Authorization": f"Bearer {DEMO_KEY}"})  # fmt: skip
    assert r.status_code == 200 and (await limits(d)) == (2_000_000, 50_000_000)
    r = await c.post("/budgets/demo", form={**form, "alert_pct": "60", "csrf": csrf})
    assert r.status_code == 200
    assert (await limits(d)) == (2_000_000, 50_000_000)  # not written back to 5
    assert (await policy(d)).thresholds == {"demo": 0.6}
    r = await c.post("/budgets/demo", form={**form, "daily_usd": "7", "csrf": csrf})
    assert r.status_code == 200 and (await limits(d)) == (7_000_000, 50_000_000)  # typed: set


class _Log:
    """An override log (the admin store's part) that is slow, then fails."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.saved: list[tuple[str, str]] = []
        self.error: StoreError | None = None

    async def save_override(
        self, name: str, value: str, *, fields: Collection[str] | None = None
    ) -> None:
        await trio.sleep(self.delay_s)  # the slowness under test: past the store call timeout
        if self.error is not None:
            raise self.error
        self.saved.append((name, value))

    async def overrides(self) -> dict[str, str]:
        return dict(self.saved)


async def test_the_durable_copy_is_saved_outside_the_store_timeout_and_its_failure_said(
    nursery: trio.Nursery,
) -> None:
    """A slow admin store is no budget store outage (the edit applies, is saved and audited,
    200); an admin store that fails leaves the applied change audited and says the durable
    copy is missing (503 with that message, not a 500)."""
    d = await start_dash(nursery)
    assert d.gw.admission is not None
    gate = d.gw.admission.gate
    log = _Log(delay_s=gate.outage.call_timeout_s * 3)
    gate.limits.save_override = log.save_override  # type: ignore[method-assign]  # the recovery's log
    c = d.app.test_client()
    csrf = await sign_in(c)
    r = await c.post("/budgets/demo", form={"daily_usd": "5", "alert_pct": "50", "csrf": csrf})
    assert r.status_code == 200, await text(r)
    assert log.saved == [  # (the monthly limit not edited: it follows the config)
        limits_entry("demo", 5_000_000, FROM_CONFIG),
        threshold_entry("demo", 0.5),
    ]
    log.error = StoreError("admin store: OperationalError: database is locked")
    r = await c.post("/budgets/demo", form={"daily_usd": "4", "csrf": csrf})
    body = await text(r)
    assert r.status_code == 503 and "did not save its durable copy" in body
    assert "database is locked" in body and "budget store unavailable" not in body.lower()
    assert (await limits(d)) == (4_000_000, None)  # applied
    r = await c.post("/windows/rita", form={"tokens": "7", "csrf": csrf})
    assert r.status_code == 503 and "did not save its durable copy" in await text(r)
    window = (await policy(d)).windows["rita"]
    assert window is not None and window.tokens == 7
    rows = audit_rows(await text(await c.get("/audit")))
    assert ("budget.set", "demo", "daily $5", "daily $4") in [
        (a, w, o.split(",")[0], n.split(",")[0]) for a, w, o, n in rows
    ]
    assert any(a == "window.set" and w == "rita" for a, w, _, _ in rows), rows


async def test_an_admin_of_some_teams_reads_their_audit_entries_only(
    nursery: trio.Nursery,
) -> None:
    """The audit log showed every team's changes (budgets, keys, flushes) to an admin of
    team ops alone (a review)."""
    d = await start_dash(nursery)
    alice = d.app.test_client()
    csrf = await sign_in(alice)
    for team, usd in (("demo", "7.5"), ("ops", "3")):
        r = await alice.post(f"/budgets/{team}", form={"daily_usd": usd, "csrf": csrf})
        assert r.status_code == 200
    r = await alice.post("/keys", form={"name": "demo-bot", "team": "demo", "csrf": csrf})
    assert r.status_code == 201
    r = await alice.post("/cache/flush", form={"team": "demo", "route": "chat", "csrf": csrf})
    everything = audit_rows(await text(await alice.get("/audit")))
    assert {a for a, *_ in everything} >= {"budget.set", "key.create", "cache.flush"}
    tess = d.app.test_client()
    await sign_in(tess, "tess")
    seen = audit_rows(await text(await tess.get("/audit")))
    assert seen == [
        (
            "budget.set",
            "ops",
            "daily none (config), monthly none (config)",
            "daily $3, monthly none (config)",
        )
    ]
