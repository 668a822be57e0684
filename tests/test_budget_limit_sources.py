"""A run-time edit of a team limit overrides that limit only: the other keeps following the
config across reloads, the Budgets page and the admin API say where each comes from, and
"config" drops an override (audited). The form and the config share one rule for a limit."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.dash_fixtures import Dash, sign_in, start_dash
from tests.fixtures_gateway import DEMO_KEY
from tests.test_budget_store import open_redis_store
from tests.test_config import EXAMPLE, EXAMPLE_ENV
from tests.test_dashboard_handlers import HX, access, row, text
from trioproxy.budget.claims import Claim
from trioproxy.budget.memory_store import MemoryStore
from trioproxy.budget.overrides import limits_entry
from trioproxy.budget.sqlite_store import SqliteStore
from trioproxy.budget.store import FROM_CONFIG, BudgetStore, TeamLimits
from trioproxy.config.budgets import BudgetsConfig, TeamBudget, budget_warnings
from trioproxy.config.load import check_config
from trioproxy.config.model import Settings
from trioproxy.edge.reload import ReloadSource, reload_from
from trioproxy.server.factory import admission

M = 1_000_000
T0 = 1_795_000_000.0
ADMIN = {"Authorization": f"Bearer {DEMO_KEY}"}
BUDGET = "/admin/api/budgets/demo"
FOLLOW = TeamLimits(FROM_CONFIG, FROM_CONFIG)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, nursery: trio.Nursery, redis_url: str
) -> AsyncIterator[BudgetStore]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        s = SqliteStore(str(tmp_path / "budget.db"))
        yield s
        s.close()
    else:
        yield await open_redis_store(nursery, redis_url)


def claim(period: str, amount: int, config_limit: int) -> Claim:
    bucket = "team:a:day:2026-11-22" if period == "daily" else "team:a:month:2026-11"
    return Claim(bucket, amount, config_limit, None, T0 + 3600, ("a", period))


async def test_each_limit_field_is_an_override_of_its_own(store: BudgetStore) -> None:
    """The daily limit edited: the monthly claim is still checked against the config's limit
    (its own ``limit``), whatever it is now; "config" drops the daily override too."""
    old, new = await store.update_team_limits("a", {"daily": 50})
    assert (old, new) == (FOLLOW, TeamLimits(50, FROM_CONFIG))
    assert await store.get_team_limits("a") == TeamLimits(50, FROM_CONFIG)
    # the config's monthly limit (a reload: 30 now) binds, not "no limit"
    denial = await store.reserve("r1", [claim("monthly", 40, 30)], now=T0, lease_s=60)
    assert denial is not None and denial.limit == 30
    assert await store.reserve("r2", [claim("monthly", 20, 30)], now=T0, lease_s=60) is None
    # the daily override binds whatever the config says
    denial = await store.reserve("r3", [claim("daily", 60, 1000)], now=T0, lease_s=60)
    assert denial is not None and denial.limit == 50
    old, new = await store.update_team_limits("a", {"daily": FROM_CONFIG})
    assert (old, new) == (TeamLimits(50, FROM_CONFIG), FOLLOW)
    assert await store.reserve("r4", [claim("daily", 60, 1000)], now=T0, lease_s=60) is None


def with_demo_budget(daily: float, monthly: float) -> Any:
    def adjust(s: Settings) -> Settings:
        team = TeamBudget("demo", daily_usd=daily, monthly_usd=monthly)
        return dataclasses.replace(s, budgets=BudgetsConfig(teams={"demo": team}))

    return adjust


async def reload_with(d: Dash, daily: float, monthly: float) -> None:
    """A config reload that changes only the demo team's limits (the same budget store)."""
    assert d.gw.admission is not None
    gate = d.gw.admission.gate
    new = with_demo_budget(daily, monthly)(d.gw.settings)
    source = ReloadSource(
        load=lambda: new,
        admission=lambda s: admission(s, gate.store, gate.alerts, gate.limits._calls.recovery),
    )
    assert await reload_from(d.gw, source)


async def in_force(d: Dash) -> tuple[int | None, int | None]:
    assert d.gw.admission is not None
    got = await d.gw.admission.gate.team_limits("demo")
    return got.daily_micros, got.monthly_micros


async def test_a_reload_applies_the_limits_not_edited_at_run_time(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue: monthly 200 -> 250 in the file (applied), daily set through the API, monthly
    -> 300 in the file: it stayed $250. Now 300 applies; a reload changing the daily limit
    says the override keeps it; "config" drops the override (audited, with the source)."""
    d = await start_dash(nursery, with_demo_budget(20, 200))
    c = d.app.test_client()
    await reload_with(d, 20, 250)
    assert await in_force(d) == (20 * M, 250 * M)
    r = await c.put(BUDGET, json={"daily_usd": 24}, headers=ADMIN)
    assert r.status_code == 200
    body = await r.get_json()
    assert body["source"]["daily_usd"]["source"] == "run time"
    assert body["source"]["daily_usd"]["by"] is not None
    assert body["source"]["monthly_usd"] == {"source": "config", "by": None, "at": None}
    caplog.set_level(logging.WARNING, "trioproxy")
    await reload_with(d, 20, 300)
    assert await in_force(d) == (24 * M, 300 * M)
    assert not [r for r in caplog.records if "keeps its run-time" in r.getMessage()]
    await reload_with(d, 30, 300)  # the daily limit changed in the file: kept, and said so
    assert await in_force(d) == (24 * M, 300 * M)
    kept = [r.getMessage() for r in caplog.records if "keeps its run-time" in r.getMessage()]
    assert len(kept) == 1 and "demo" in kept[0] and "daily" in kept[0]
    assert "config $30" in kept[0] and "in force $24" in kept[0]
    # back to the config's daily limit, through the API
    r = await c.put(BUDGET, json={"daily_usd": "config"}, headers=ADMIN)
    assert r.status_code == 200
    assert (await r.get_json())["source"]["daily_usd"]["source"] == "config"
    assert await in_force(d) == (30 * M, 300 * M)
    await reload_with(d, 35, 300)
    assert await in_force(d) == (35 * M, 300 * M)
    lines = await access(d).store.audit_log(action="budget.set")
    assert (lines[0].old, lines[0].new) == (
        "daily $24, monthly $300 (config)",
        "daily $30 (config), monthly $300 (config)",
    )


async def test_the_budgets_page_shows_sources_and_drops_an_override(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery, with_demo_budget(20, 200))
    c = d.app.test_client()
    csrf = await sign_in(c)
    page = row(await text(await c.get("/budgets")), "demo")
    assert "Daily: config" in page and "Monthly: config" in page and "Use config" not in page
    r = await c.post("/budgets/demo", form={"daily_usd": "24", "csrf": csrf}, headers=HX)
    assert r.status_code == 200
    fragment = await text(r)
    assert re.search(r"Daily: edited at run time by alice, \d{4}-\d\d-\d\d \d\d:\d\d UTC", fragment)
    assert "Monthly: config" in fragment
    assert fragment.count('name="use_config" value="daily_usd"') == 1  # the button's form
    # the button's form: CSRF-checked like the others
    refused = await c.post("/budgets/demo", form={"use_config": "daily_usd"}, headers=HX)
    assert refused.status_code in (400, 403) and await in_force(d) == (24 * M, 200 * M)
    r = await c.post("/budgets/demo", form={"use_config": "daily_usd", "csrf": csrf}, headers=HX)
    assert r.status_code == 200 and "Daily: config" in await text(r)
    assert await in_force(d) == (20 * M, 200 * M)


async def test_the_form_and_the_config_share_the_limit_rules(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery, with_demo_budget(20, 200))
    c = d.app.test_client()
    csrf = await sign_in(c)
    r = await c.post("/budgets/demo", form={"daily_usd": "0", "csrf": csrf}, headers=HX)
    assert r.status_code == 400 and "must be &gt; 0" in await text(r)
    assert (await c.put(BUDGET, json={"monthly_usd": 0}, headers=ADMIN)).status_code == 400
    # daily above monthly: saved with the warning check-config gives for the same limits
    r = await c.post("/budgets/demo", form={"daily_usd": "500", "monthly_usd": "100",
                                            "csrf": csrf}, headers=HX)  # fmt: skip
    assert r.status_code == 200 and await in_force(d) == (500 * M, 100 * M)
    assert "the monthly limit stops the team first" in await text(r)
    r = await c.put(BUDGET, json={"daily_usd": 400}, headers=ADMIN)
    assert any("monthly limit stops" in w for w in (await r.get_json())["warnings"])
    config = BudgetsConfig(teams={"demo": TeamBudget("demo", 500, 100)})
    assert [w for w in budget_warnings(config) if "monthly limit stops the team first" in w]
    assert budget_warnings(BudgetsConfig(teams={"demo": TeamBudget("demo", 5, 100)})) == []


async def test_a_refused_save_keeps_what_was_typed(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery, with_demo_budget(20, 200))
    c = d.app.test_client()
    csrf = await sign_in(c)
    form = {"daily_usd": "31", "orig_daily_usd": "20", "monthly_usd": "", "orig_monthly_usd":
            "200", "clear_monthly_usd": "on", "alert_pct": "150", "csrf": csrf}  # fmt: skip
    r = await c.post("/budgets/demo", form=form, headers=HX)
    assert r.status_code == 400
    fragment = await text(r)
    assert 'value="31"' in fragment and 'name="clear_monthly_usd" form="f-' in fragment
    assert re.search(r'name="clear_monthly_usd"[^>]*checked', fragment)
    assert 'name="orig_daily_usd" form="f-' in fragment and 'value="20"' in fragment
    assert 'value="150"' in fragment and await in_force(d) == (20 * M, 200 * M)


def test_check_config_refuses_a_zero_limit_and_warns_of_daily_above_monthly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same rules as the form's, from the file."""
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    text = EXAMPLE.read_text()
    assert "monthly_usd = 200.0" in text and "monthly_usd = 1000.0" in text
    above = tmp_path / "above.toml"
    above.write_text(text.replace("monthly_usd = 1000.0", "monthly_usd = 10.0", 1))
    assert check_config(str(above)) == 0
    assert "the monthly limit stops the team first" in capsys.readouterr().err
    zero = tmp_path / "zero.toml"
    zero.write_text(text.replace("monthly_usd = 200.0", "monthly_usd = 0", 1))
    assert check_config(str(zero)) == 1
    assert "monthly_usd: must be > 0" in capsys.readouterr().err


async def test_a_rebuilt_redis_state_keeps_following_the_config(
    nursery: trio.Nursery, redis_url: str
) -> None:
    """The durable copy of a daily-only edit, written back by a rebuild: the monthly limit
    still follows the config (it was not written as 'no limit')."""
    store = await open_redis_store(nursery, redis_url)
    await store.write_overrides(dict([limits_entry("a", 50, FROM_CONFIG)]))
    assert await store.get_team_limits("a") == TeamLimits(50, FROM_CONFIG)
    denial = await store.reserve("r1", [claim("monthly", 40, 30)], now=T0, lease_s=60)
    assert denial is not None and denial.limit == 30
