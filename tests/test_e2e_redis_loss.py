"""A non-persistent Redis killed (-9) and restarted empty under load: the gateway notices
the lost state (its epoch), rebuilds it from the ledger and its journal, and the team's
budget holds across the restart; afterwards the store's spend equals the ledger's to
the µUSD.

Without the rebuild the restarted Redis would count from $0 and admit the whole limit
again: the load here spends over 60 % of the limit before the kill and keeps asking
until the budget refuses, so the ledger would end near 160 % of the limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import trio

from tests.fixtures_gateway import start_simulator
from tests.fixtures_servers import RedisServer
from tests.proc import to_toml
from tests.rawhttp import post_json
from tests.settings_factory import KEY
from trioproxy.budget.periods import period_at
from trioproxy.budget.policy import window_entry
from trioproxy.budget.recovery import Recovery
from trioproxy.config import hash_key, load_settings, parse_settings
from trioproxy.config.model import Settings, UserWindow
from trioproxy.edge.app import Gateway
from trioproxy.httpd import open_tcp_socket
from trioproxy.ledger.service import LedgerService
from trioproxy.server.factory import build_gateway
from trioproxy.server.sockets import Bound
from trioproxy.server.worker import serve_gateway
from trioproxy.simulator.faults import Fault

# $1000 per 1M tokens = 1000 µUSD a token; "hi" is bounded at 6 tokens, max_tokens 10:
# a request reserves at most 16,000 µUSD and costs what the simulator reports.
WORST = 16_000
LIMIT_USD = 60 * WORST / 1e6
WORKERS = 6
BODY = {"model": "r", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


def settings(sim_url: str, state_dir: str, redis_url: str) -> Settings:
    return parse_settings(
        {
            "storage": {"state_dir": state_dir, "redis_url": redis_url},
            "providers": {"p": {"kind": "openai", "base_url": sim_url, "api_key_env": "K"}},
            "models": {"m": {"provider": "p", "input_per_mtok": 1000, "output_per_mtok": 1000}},
            "routes": {"r": {"chains": {"default": [{"model": "m"}]}}},
            "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1"}],
            "budgets": {"teams": {"t1": {"daily_usd": LIMIT_USD}}, "store_timeout_s": 2.0},
        },
        env={"K": "x"},
    )


class Load:
    """``WORKERS`` callers in a loop on one key; statuses kept per phase."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.phase = "before"
        self.statuses: dict[str, list[int]] = {"before": [], "after": []}
        self.refusals_in_a_row = 0
        self.stop = False
        self.down = False
        """Set while Redis is dead."""
        self.answered_down: set[int] = set()
        """The callers that asked and got their answer while Redis was dead."""

    async def worker(self, n: int) -> None:
        while not self.stop and self.refusals_in_a_row < 3 * WORKERS:  # all refused: done
            asked_down = self.down
            status, body = await post_json(self.url, "/v1/chat/completions", BODY,
                                           {"authorization": f"Bearer {KEY}"})  # fmt: skip
            if asked_down and self.down:
                self.answered_down.add(n)
            self.statuses[self.phase].append(status)
            code = orjson.loads(body)["error"]["code"] if status != 200 else ""
            if self.phase == "after" and code == "budget_exceeded":
                self.refusals_in_a_row += 1
            elif status == 200:
                self.refusals_in_a_row = 0

    async def run(self, until: Callable[[], bool] | None = None) -> None:
        """Until the budget refuses everyone, or ``until()`` holds (then the callers stop)."""
        async with trio.open_nursery() as load:
            for n in range(WORKERS):
                load.start_soon(self.worker, n)
            if until is not None:
                with trio.fail_after(120):
                    while not until():
                        await trio.sleep(0.01)
                self.stop = True

    def spent_over_60_percent(self) -> bool:
        return self.statuses["before"].count(200) >= 36


async def serve(nursery: trio.Nursery, cfg: Settings) -> tuple[str, Gateway, trio.Event]:
    app = build_gateway(cfg)  # with the real SQLite ledger
    bound = Bound(open_tcp_socket("127.0.0.1", 0, reuse_port=False),
                  open_tcp_socket("127.0.0.1", 0, reuse_port=False))  # fmt: skip
    shutdown = trio.Event()
    await nursery.start(partial(serve_gateway, app, bound, shutdown=shutdown))
    return f"http://127.0.0.1:{bound.port}", app, shutdown


async def check_store_equals_ledger(app: Gateway) -> int:
    """Once every reservation is settled and every record written: the team's spend in
    the store and in the ledger, equal to the µUSD. Returns it."""
    assert app.admission is not None
    gate = app.admission.gate
    rec, ledger = gate.recovery, app._ledger
    assert rec is not None and isinstance(ledger, LedgerService) and ledger.writer is not None
    writer = ledger.writer
    with trio.fail_after(30):
        while rec.holding or writer.statistics().written < writer.statistics().submitted:
            await trio.sleep(0.01)
    now = time.time()
    day = period_at("day", now, ZoneInfo("UTC"))
    rows = await writer.backend.request_spend(since=day.start, until=now + 60)
    in_ledger = sum(cost for _, _, team, _, cost, _ in rows if team == "t1")
    assert await gate.store.usage(f"team:t1:day:{day.name}", now=now) == in_ledger
    return in_ledger


def recovery_of(app: Gateway) -> Recovery:
    assert app.admission is not None and app.admission.gate.recovery is not None
    return app.admission.gate.recovery


async def test_redis_killed_and_restarted_empty_under_load(
    nursery: trio.Nursery, redis_server: RedisServer, redis_url: str, tmp_path: object
) -> None:
    """One gateway keeps serving through the kill: its journal and the ledger restore it."""
    sim = await start_simulator(nursery, Fault(tokens=10))
    url, app, _ = await serve(nursery, settings(sim.url, str(tmp_path), redis_url))
    rec = recovery_of(app)
    load = Load(url)
    async with trio.open_nursery() as running:
        running.start_soon(load.run)
        with trio.fail_after(120):  # spend over 60 % of the limit, then kill Redis
            while not load.spent_over_60_percent():
                await trio.sleep(0.01)
        await trio.to_thread.run_sync(redis_server.stop)  # SIGKILL, no RDB, no AOF
        load.phase, load.down = "after", True
        with trio.fail_after(60):  # no request waits on the outage: every caller is answered
            while len(load.answered_down) < WORKERS:  # while Redis is still dead
                await trio.sleep(0.01)
        load.down = False
        await trio.to_thread.run_sync(redis_server.start)  # empty
        with trio.fail_after(120):  # at start-up (empty), and after the restart
            while rec.stats.rebuilds < 2:
                await trio.sleep(0.01)
        # the load goes on until the restored budget refuses it
    assert rec.stats.rebuilds == 2
    after = load.statuses["after"]
    assert set(after) <= {200, 429, 503}, after
    assert after.count(200) > 0  # admission came back after the rebuild
    spent = await check_store_equals_ledger(app)
    assert 0.6 * LIMIT_USD * 1e6 < spent <= LIMIT_USD * 1e6  # never over, across the restart


async def test_redis_and_gateway_restarted_rebuild_from_the_ledger_alone(
    nursery: trio.Nursery, redis_server: RedisServer, redis_url: str, tmp_path: object
) -> None:
    """Redis killed and the gateway restarted too (a host reboot): no journal survives; the
    new gateway's start-up rebuilds the day's spend from the ledger alone."""
    sim = await start_simulator(nursery, Fault(tokens=10))
    cfg = settings(sim.url, str(tmp_path), redis_url)
    async with trio.open_nursery() as first:
        url, _, shutdown = await serve(first, cfg)
        load = Load(url)
        await load.run(until=load.spent_over_60_percent)
        shutdown.set()  # drains and flushes the ledger
    await trio.to_thread.run_sync(redis_server.stop)
    await trio.to_thread.run_sync(redis_server.start)  # empty
    url, app, _ = await serve(nursery, cfg)
    rec = recovery_of(app)
    assert rec.stats.rebuilds == 1 and rec.stats.last_replayed == 0  # the ledger alone
    before = await check_store_equals_ledger(app)
    assert before > 0.6 * LIMIT_USD * 1e6
    load.url, load.phase, load.stop = url, "after", False
    await load.run()  # until the budget refuses: only what was left of it is spent
    assert before < await check_store_equals_ledger(app) <= LIMIT_USD * 1e6
    app.sample_metrics()  # the journal kept every settled reservation (none dropped)
    assert b"trioproxy_budget_journal_dropped_total 0.0" in app.prometheus.render()[0]


KEY2 = "tp-redis-loss-second-0123456789"


def windows_config(sim_url: str, state_dir: str, redis_url: str, *, u1: bool) -> dict[str, Any]:
    """Two keys (users u1 and u2); ``u1``: u1 has a token window of its own."""
    budgets: dict[str, Any] = {"store_timeout_s": 2.0}
    if u1:
        budgets["users"] = {"u1": {"tokens": 100_000, "window_s": 3600}}
    return {
        "storage": {"state_dir": state_dir, "redis_url": redis_url},
        "providers.p": {"kind": "openai", "base_url": sim_url, "api_key_env": "K"},
        "models.m": {"provider": "p", "input_per_mtok": 1000, "output_per_mtok": 1000},
        "routes.r": {"chains": {"default": [{"model": "m"}]}},
        "api_keys": [
            {"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1"},
            {"name": "k2", "key_sha256": hash_key(KEY2), "team": "t2", "user": "u2"},
        ],
        "budgets": budgets,
    }


async def test_windows_set_by_a_reload_or_at_run_time_are_rebuilt(
    nursery: trio.Nursery, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """u1's window came with a reload, u2's is the default window an admin set at run time
    (``window:*``): both are full of what the ledger holds, and a lost state is rebuilt with
    them (the rebuild read the windows of the config the process started with, and none of
    the run-time ones: both came back empty, and each user could spend their window again)."""
    monkeypatch.setenv("K", "x")
    sim = await start_simulator(nursery, Fault(tokens=10))
    path = tmp_path / "trioproxy.toml"
    path.write_text(to_toml(windows_config(sim.url, str(tmp_path), redis_url, u1=False)))
    app = build_gateway(load_settings(path), config_path=str(path))
    bound = Bound(open_tcp_socket("127.0.0.1", 0, reuse_port=False),
                  open_tcp_socket("127.0.0.1", 0, reuse_port=False))  # fmt: skip
    await nursery.start(partial(serve_gateway, app, bound, shutdown=trio.Event()))
    url = f"http://127.0.0.1:{bound.port}"
    rec = recovery_of(app)
    assert rec.overrides is not None  # the dashboard's admin store keeps run-time overrides
    path.write_text(to_toml(windows_config(sim.url, str(tmp_path), redis_url, u1=True)))
    assert await app.reload() is True
    assert app.admission is not None
    gate = app.admission.gate
    everyone = window_entry("*", UserWindow("*", 100_000, 3600))
    await gate.set_policy(*everyone)  # as the admin API's PUT /admin/api/windows/*
    await gate.save_override(*everyone)
    for _ in range(3):
        for key in (KEY, KEY2):
            status, _ = await post_json(url, "/v1/chat/completions", BODY,
                                        {"authorization": f"Bearer {key}"})  # fmt: skip
            assert status == 200
    ledger = app._ledger
    assert isinstance(ledger, LedgerService) and ledger.writer is not None
    writer = ledger.writer
    with trio.fail_after(30):  # every reservation settled, every record written
        while rec.holding or writer.statistics().written < writer.statistics().submitted:
            await trio.sleep(0.01)
    rows = await writer.backend.request_spend(since=time.time() - 3600, until=time.time() + 60)
    tokens = {u: sum(t for _, _, _, user, _, t in rows if user == u) for u in ("u1", "u2")}
    assert tokens["u1"] > 0 and tokens["u2"] > 0
    for user in ("u1", "u2"):  # the store's windows before the loss: the ledger's tokens
        assert await gate.store.usage(f"user:{user}", now=time.time()) == tokens[user]
    rebuilds = rec.stats.rebuilds
    await gate.store._client.execute("FLUSHALL")  # type: ignore[attr-defined]
    with trio.fail_after(30):  # the next admission finds the state lost; the rebuild follows
        while rec.stats.rebuilds == rebuilds:
            await post_json(url, "/v1/chat/completions", BODY, {"authorization": f"Bearer {KEY}"})
            await trio.sleep(0.05)
        await rec.wait_restored()
    now = time.time()
    assert await gate.store.usage("user:u1", now=now) >= tokens["u1"]  # (+ the probes')
    assert await gate.store.usage("user:u2", now=now) == tokens["u2"]  # not 0
