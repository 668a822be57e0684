"""Reload: a new config applies atomically to new requests (keys, routes, chains, prices,
budgets, cache settings); requests in flight finish on the old one; an invalid file changes
nothing and is logged with its problems. Also through SIGHUP on ``trioproxy serve``."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from tests.fixtures_gateway import start_gateway, start_simulator
from tests.proc import GatewayProcess, to_toml
from tests.rawhttp import post
from trioproxy.config import hash_key, load_settings
from trioproxy.config.model import Settings
from trioproxy.edge.reload import ReloadSource
from trioproxy.simulator.faults import Fault

OLD_KEY, NEW_KEY = "tp-reload-old-0123456789", "tp-reload-new-0123456789"
CAPPED_KEY = "tp-reload-capped-0123456789"
MSGS = [{"role": "user", "content": "hi"}]


def cfg(
    state: Path, sims: dict[str, str], route_to: str, key: str, capped: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "storage": {"state_dir": str(state)},
        **{
            f"providers.{n}": {"kind": "openai", "base_url": u, "api_key_env": "SIMKEY"}
            for n, u in sims.items()
        },
        **{
            f"models.m-{n}": {"provider": n, "input_per_mtok": p, "output_per_mtok": p}
            for n, p in (("a", 1000), ("b", 2000))
            if n in sims
        },
        "routes.chat": {"chains": {"default": [{"model": f"m-{route_to}"}]}},
        "api_keys": [
            {"name": "k", "key_sha256": hash_key(key), "team": "t1", "user": "u1", "admin": True}
        ],
    }
    if capped:  # a team whose daily budget is smaller than any request's worst case
        capped_key = {"name": "c", "key_sha256": hash_key(CAPPED_KEY), "team": "t2", "user": "u2"}
        out["api_keys"].append(capped_key)
        out["budgets"] = {"teams": {"t2": {"daily_usd": 0.000001}}}
    return out


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_reload_applies_to_new_requests_and_in_flight_ones_finish_on_the_old(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv("SIMKEY", "x")
    slow = await start_simulator(nursery, Fault(tokens=60, chunk_ms=30))  # ~2 s streams
    fast = await start_simulator(nursery, Fault(tokens=5))
    sims = {"a": slow.url, "b": fast.url}
    path = tmp_path / "trioproxy.toml"
    path.write_text(to_toml(cfg(tmp_path, sims, "a", OLD_KEY)))
    g = await start_gateway(nursery, load_settings(path), config_path=str(path))
    in_flight: list[Any] = []

    async def old_stream() -> None:
        body = {"model": "chat", "messages": MSGS, "stream": True}
        in_flight.append(await post(g.url, "/v1/chat/completions", body, auth(OLD_KEY)))

    async with trio.open_nursery() as clients:
        clients.start_soon(old_stream)
        with trio.fail_after(20):
            while slow.sim.stats.requests < 1:
                await trio.sleep(0.01)
        # new key, the route now goes to m-b at twice the price, a budget for the team
        path.write_text(to_toml(cfg(tmp_path, sims, "b", NEW_KEY, capped=True)))
        with caplog.at_level(logging.INFO, "trioproxy"):
            assert await g.app.reload() is True
        assert "config reloaded" in caplog.text
        async with httpx.AsyncClient(base_url=g.url, timeout=30) as c:
            body = {"model": "chat", "messages": MSGS, "max_tokens": 5}
            r = await c.post("/v1/chat/completions", json=body, headers=auth(OLD_KEY))
            assert r.status_code == 401  # the old key is gone
            r = await c.post("/v1/chat/completions", json=body, headers=auth(NEW_KEY))
            assert r.status_code == 200 and r.headers["x-trioproxy-target"] == "m-b"
            r = await c.post("/v1/chat/completions", json=body, headers=auth(CAPPED_KEY))
            assert r.status_code == 429  # a new key under a new, tiny budget
            assert r.json()["error"]["code"] == "budget_exceeded"
        assert not in_flight  # the old stream is still running while all that happened
    (old,) = in_flight
    assert old.status == 200 and old.complete and b"data: [DONE]" in old.body
    assert old.headers["x-trioproxy-target"] == "m-a"
    with trio.fail_after(20):  # the handler records after the last byte is sent
        while not any(r.request_id == old.headers["x-request-id"] for r in g.sink.records):
            await trio.sleep(0.01)
    records = {r.request_id: r for r in g.sink.records if r.kind == "request"}
    old_rec = records[old.headers["x-request-id"]]
    assert (old_rec.target, old_rec.outcome) == ("m-a", "served")
    new_rec = next(r for r in records.values() if r.target == "m-b")
    assert new_rec.cost_micros == (new_rec.input_tokens + new_rec.output_tokens) * 2000  # new price

    # an invalid file: every problem logged, nothing changes
    path.write_text(to_toml(cfg(tmp_path, sims, "zzz", OLD_KEY)).replace('"SIMKEY"', "3"))
    caplog.clear()
    assert await g.app.reload() is False
    assert "reload refused" in caplog.text
    problems = [r for r in caplog.records if r.getMessage().startswith("reload refused")]
    fields = problems[0].fields  # type: ignore[attr-defined]
    assert any("m-zzz" in p for p in fields["problems"]), fields
    assert any("api_key_env" in p for p in fields["problems"]), fields
    async with httpx.AsyncClient(base_url=g.url, timeout=30) as c:
        r = await c.get("/v1/models", headers=auth(NEW_KEY))
        assert r.status_code == 200 and "chat" in r.text


async def test_two_reloads_apply_the_newer_file_last(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP 1 reads file F1 and is slow to finish (here: its read is held); the file
    changes to F2 (a key revoked) and SIGHUP 2 comes. F2 must be what runs at the end: two
    reloads at once applied F2, then F1 (the revoked key worked again until the next SIGHUP).
    """
    monkeypatch.setenv("SIMKEY", "x")
    sim = await start_simulator(nursery, Fault(tokens=5))
    path = tmp_path / "trioproxy.toml"
    path.write_text(to_toml(cfg(tmp_path, {"a": sim.url}, "a", OLD_KEY)))
    g = await start_gateway(nursery, load_settings(path), config_path=str(path))
    real = g.app.reload_source
    assert real is not None
    first_read, second_applied = threading.Event(), threading.Event()
    loads: list[str] = []

    def load() -> Settings:
        settings = real.load()
        loads.append(next(iter(settings.api_keys)))
        if len(loads) == 1:
            first_read.set()
            # a reload that runs beside this one applies F2 meanwhile; one held back (the
            # fix) does not, and this bound runs out
            second_applied.wait(2)
        return settings

    def admission(settings: Settings) -> Any:
        if len(loads) == 2:
            second_applied.set()
        return real.admission(settings)

    g.app.reload_source = ReloadSource(load, admission)
    async with trio.open_nursery() as signals:
        path.write_text(to_toml(cfg(tmp_path, {"a": sim.url}, "a", NEW_KEY)))  # F1
        signals.start_soon(g.app.reload)
        await trio.to_thread.run_sync(first_read.wait, 10)
        path.write_text(to_toml(cfg(tmp_path, {"a": sim.url}, "a", CAPPED_KEY)))  # F2
        signals.start_soon(g.app.reload)
    assert loads == [hash_key(NEW_KEY), hash_key(CAPPED_KEY)]
    assert list(g.app.settings.api_keys) == [hash_key(CAPPED_KEY)]


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_reloads_a_running_serve(
    nursery: trio.Nursery, tmp_path: Path, workers: int
) -> None:
    sim = await start_simulator(nursery, Fault(tokens=5))
    config = cfg(tmp_path, {"a": sim.url}, "a", OLD_KEY)
    gw = GatewayProcess(config, tmp_path, {"SIMKEY": "x"}, workers)
    await gw.start()
    try:
        body = {"model": "chat", "messages": MSGS}
        assert (await post(gw.url, "/v1/chat/completions", body, auth(OLD_KEY))).status == 200
        gw.path.write_text(to_toml(cfg(tmp_path, {"a": sim.url}, "a", NEW_KEY)))
        gw.signal(signal.SIGHUP)
        children = workers + 1  # the control plane reloads too
        with trio.fail_after(20):  # applied by every worker
            while gw.log.read_text().count('"config reloaded"') < children:
                await trio.sleep(0.05)
        assert (await post(gw.url, "/v1/chat/completions", body, auth(NEW_KEY))).status == 200
        assert (await post(gw.url, "/v1/chat/completions", body, auth(OLD_KEY))).status == 401
        gw.path.write_text("[storage]\nstate_dir = 3\n")  # invalid: refused, logged
        gw.signal(signal.SIGHUP)
        with trio.fail_after(20):
            while gw.log.read_text().count('"reload refused') < children:
                await trio.sleep(0.05)
        assert (await post(gw.url, "/v1/chat/completions", body, auth(NEW_KEY))).status == 200
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.kill()
    lines = [orjson.loads(x) for x in gw.log.read_text().splitlines() if x.startswith("{")]
    reloads = [
        x
        for x in lines
        if x["msg"] in ("config reloaded",) or x["msg"].startswith("reload refused")
    ]
    assert [x["level"] for x in reloads] == ["info"] * (workers + 1) + ["error"] * (workers + 1)
    assert any("storage.state_dir" in p for p in reloads[-1]["problems"])
    print("\n" + "\n".join(orjson.dumps(x).decode() for x in reloads))


async def test_a_reload_keeps_the_dashboard_keys_and_their_ttl(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reloaded key ring still asks the admin store (a dashboard-made key worked until the
    first SIGHUP, then was a 401) and keeps ``server.key_cache_ttl_s`` (a restart setting)."""
    from trioproxy.admin.keys import StoredKey

    monkeypatch.setenv("SIMKEY", "x")
    sim = await start_simulator(nursery, Fault(tokens=2))
    path = tmp_path / "trioproxy.toml"
    path.write_text(to_toml({**cfg(tmp_path, {"a": sim.url}, "a", OLD_KEY),
                             "server": {"key_cache_ttl_s": 2.5}}))  # fmt: skip
    g = await start_gateway(nursery, load_settings(path), config_path=str(path))
    store = g.app.keys.source
    assert store is not None and g.app.keys.known.ttl_s == 2.5
    made = "tp-made-in-the-dashboard-before-the-reload"
    assert await store.add_key(StoredKey(hash_key(made), "bot", "t1", "ann"))  # type: ignore[attr-defined]
    path.write_text(to_toml(cfg(tmp_path, {"a": sim.url}, "a", NEW_KEY)))
    assert await g.app.reload() is True
    assert g.app.keys.source is store and g.app.keys.known.ttl_s == 2.5
    async with httpx.AsyncClient(base_url=g.url, timeout=30) as c:
        r = await c.get("/v1/models", headers=auth(made))
        assert r.status_code == 200


async def test_a_reload_keeps_the_workers_streams_and_its_feature_names(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload makes new handlers; what is the worker's stays one: the streams being served
    (a stream begun before the reload was no longer counted in trioproxy_open_streams, and one
    begun after it was never journaled by the progress service, which ran on the first
    handler's registry), and a team's distinct features per hour (each endpoint counted its
    own, from 0 again at each reload)."""
    monkeypatch.setenv("SIMKEY", "x")
    slow = await start_simulator(nursery, Fault(tokens=200, chunk_ms=20))  # ~4 s streams
    path = tmp_path / "trioproxy.toml"
    path.write_text(to_toml(cfg(tmp_path, {"a": slow.url}, "a", OLD_KEY)))
    g = await start_gateway(nursery, load_settings(path), config_path=str(path))
    g.app.features.per_hour = 2
    progress, done = g.app.progress, trio.Event()
    streams: list[Any] = []

    async def stream(key: str) -> None:
        body = {"model": "chat", "messages": MSGS, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        headers = {**auth(key), "x-trioproxy-feature": "f-stream"}
        streams.append(await post(g.url, "/v1/chat/completions", body, headers))
        if len(streams) == 2:
            done.set()

    async with httpx.AsyncClient(base_url=g.url, timeout=30) as c:
        headers = {**auth(OLD_KEY), "x-trioproxy-feature": "f-before"}
        r = await c.post("/v1/chat/completions", headers=headers,
                         json={"model": "chat", "messages": MSGS, "max_tokens": 2})  # fmt: skip
        assert r.status_code == 200
        nursery.start_soon(stream, OLD_KEY)
        with trio.fail_after(20):
            while not progress.note():  # the first stream's first content
                await trio.sleep(0.01)
        path.write_text(to_toml(cfg(tmp_path, {"a": slow.url}, "a", NEW_KEY)))
        assert await g.app.reload() is True
        nursery.start_soon(stream, NEW_KEY)
        with trio.fail_after(20):  # both streams in the worker's one registry, both journaled
            while len(progress) < 2 or not progress.note():
                await trio.sleep(0.01)
        assert g.app.chat.progress is progress and len(progress) == 2
        # the team's hour has named f-before and f-stream: a third name is "other", on any
        # endpoint, after the reload too
        headers = {**auth(NEW_KEY), "x-trioproxy-feature": "f-after"}
        r = await c.post("/v1/messages/count_tokens", headers=headers,
                         json={"model": "chat", "messages": MSGS})  # fmt: skip
        assert r.status_code == 200, r.text
    with trio.fail_after(30):
        await done.wait()
    assert all(s.status == 200 and s.complete for s in streams)
    with trio.fail_after(20):  # the caller has the last byte before the handler leaves the registry
        while len(progress):
            await trio.sleep(0.01)
    with trio.fail_after(20):
        while len([r for r in g.sink.records if r.kind == "request"]) < 4:
            await trio.sleep(0.01)
    features = [r.feature for r in g.sink.records if r.kind == "request"]
    assert features.count("f-before") == 1 and features.count("f-stream") == 2
    assert "f-after" not in features and "other" in features, features


async def test_a_reload_that_turns_a_cache_on_says_it_needs_a_restart(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A gateway started without a cache has no cache stores to serve from: a reload that
    gives a route one cannot apply it (it said needs_restart: [] and answered 'off')."""
    monkeypatch.setenv("SIMKEY", "x")
    sim = await start_simulator(nursery, Fault(tokens=5))
    path = tmp_path / "trioproxy.toml"
    path.write_text(to_toml(cfg(tmp_path, {"a": sim.url}, "a", OLD_KEY)))
    g = await start_gateway(nursery, load_settings(path), config_path=str(path))
    assert g.app.cache is None
    cached = cfg(tmp_path, {"a": sim.url}, "a", OLD_KEY)
    cached["routes.chat"]["cache"] = {"exact_ttl_s": 60}
    path.write_text(to_toml(cached))
    with caplog.at_level(logging.INFO, "trioproxy"):
        assert await g.app.reload() is True
    assert "reload: [routes.*.cache] changed; applied at the next restart" in caplog.text
    (done,) = [r for r in caplog.records if r.getMessage() == "config reloaded"]
    assert done.fields["needs_restart"] == ["routes.*.cache"]  # type: ignore[attr-defined]
