"""Two gateway instances (different state directories, as on two hosts) sharing one PostgreSQL:
the admin store lives there, so a key created on one authenticates on the other at once, a
revoke holds on both, a user created on one signs in on the other, and both list the audit."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import trio
from quart_trio import QuartTrio

from tests.dash_fixtures import PASSWORDS, Dash, settings_for, sign_in
from tests.fixtures_gateway import start_simulator
from tests.test_dashboard_handlers import access, chat, secret_of, text
from trioproxy.admin.pg_engine import PgEngine
from trioproxy.config.model import Secret, Settings
from trioproxy.server.factory import build_gateway


async def start_on(
    nursery: trio.Nursery, sim_url: str, pg_url: str,
    adjust: Callable[[Settings], Settings] | None = None,
) -> Dash:  # fmt: skip
    settings = settings_for(sim_url)
    if adjust is not None:
        settings = adjust(settings)
    storage = dataclasses.replace(settings.storage, database_url=Secret(pg_url))
    settings = dataclasses.replace(settings, storage=storage)
    gw = build_gateway(settings)
    await gw.services.start_all(nursery)
    gw.ready = True
    assert isinstance(gw.inner, QuartTrio)
    return Dash(gw, gw.inner, settings, sim_url)


async def test_two_instances_on_one_postgres_share_keys_users_and_audit(
    nursery: trio.Nursery, pg_url: str
) -> None:
    sim = await start_simulator(nursery)
    one, two = await start_on(nursery, sim.url, pg_url), await start_on(nursery, sim.url, pg_url)
    assert one.settings.storage.state_dir != two.settings.storage.state_dir
    assert isinstance(access(one).store.engine, PgEngine)
    c1, c2 = one.app.test_client(), two.app.test_client()
    csrf1 = await sign_in(c1)
    csrf2 = await sign_in(c2)

    form = {"name": "shared-bot", "team": "search", "user": "", "feature": "nightly",
            "routes": "chat", "priority": "low", "rpm": "", "tpm": "", "csrf": csrf1}  # fmt: skip
    r = await c1.post("/keys", form=form)
    assert r.status_code == 201
    secret = secret_of(await text(r))
    assert await chat(two, "made on the other instance", key=secret) == 200
    assert 'data-key="shared-bot"' in await text(await c2.get("/keys"))

    r = await c2.post("/keys/shared-bot/revoke", form={"csrf": csrf2})
    assert r.status_code == 200
    assert await chat(one, "revoked on the other instance", key=secret) == 401
    assert await chat(two, "revoked here", key=secret) == 401

    r = await c1.post("/users", form={"name": "hana", "password": "hana-password-12",
                                      "role": "viewer", "teams": "", "csrf": csrf1})  # fmt: skip
    assert r.status_code == 201
    hana = two.app.test_client()
    await sign_in(hana, "hana", "hana-password-12")
    assert (await hana.get("/spend")).status_code == 200

    for c in (c1, c2):
        log = await text(await c.get("/audit"))
        assert "key.create" in log and "key.revoke" in log and "user.create" in log
        assert log.count('class="team">shared-bot<') == 2


async def test_a_user_of_no_team_opens_the_alerts_page_on_postgres(
    nursery: trio.Nursery, pg_url: str
) -> None:
    """``teams = []`` made the alert list ``team IN ()``: a syntax error on PostgreSQL, so the
    page was a 500 for such a user (a review)."""

    def with_nora(settings: Settings) -> Settings:
        users = settings.dashboard.users
        nora = dataclasses.replace(users["victor"], name="nora", teams=frozenset())
        dashboard = dataclasses.replace(settings.dashboard, users={**users, "nora": nora})
        return dataclasses.replace(settings, dashboard=dashboard)

    sim = await start_simulator(nursery)
    d = await start_on(nursery, sim.url, pg_url, with_nora)
    await access(d).store.record_alert(1.0, "demo", "team:demo:day:x", "threshold", 0.8, 8, 10,
                                       "no webhook")  # fmt: skip
    nora = d.app.test_client()
    await sign_in(nora, "nora", PASSWORDS["victor"])
    for path in ("/alerts", "/panel/alerts"):
        r = await nora.get(path)
        assert r.status_code == 200, path
        assert 'data-team="demo"' not in await text(r)
    alice = d.app.test_client()
    await sign_in(alice)
    assert 'data-team="demo"' in await text(await alice.get("/alerts"))
