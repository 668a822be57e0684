"""/metrics: prometheus-client families with Prometheus names, exact values (no %g), summed
across worker processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures_gateway import start_simulator
from tests.proc import GatewayProcess, workers_of
from tests.rawhttp import post
from tests.test_e2e_processes import AUTH, MSGS, config
from trioproxy.config import hash_key
from trioproxy.edge.metrics import Metrics
from trioproxy.ledger.record import UsageRecord
from trioproxy.simulator.faults import Fault

Sample = tuple[str, frozenset[tuple[str, str]]]
POOR_KEY = "tp-poor-team-0123456789"


def parse(text: str) -> dict[Sample, float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_large_values_render_exactly() -> None:
    m = Metrics()
    rec = UsageRecord(
        ts=0.0, request_id="r", kind="request", key_name="k", team="t", user="u", feature="f",
        route="chat", target="m", input_tokens=12_345_678, output_tokens=1, cost_micros=1_234_567_890,
    )  # fmt: skip
    m.observe(rec)
    m.requests.labels("chat", "m", "200", "off").inc(1_000_000)
    text = m.render()[0].decode()
    got = parse(text)
    labels = frozenset({"route": "chat", "target": "m", "status": "200", "cache": "off"}.items())
    assert got[("trioproxy_requests_total", labels)] == 1_000_001
    tokens = frozenset({"route": "chat", "target": "m", "type": "input"}.items())
    assert got[("trioproxy_tokens_total", tokens)] == 12_345_678
    cost = frozenset({"team": "t", "route": "chat"}.items())
    assert got[("trioproxy_cost_microusd_total", cost)] == 1_234_567_890
    assert "trioproxy_requests_total" in text and "%g" not in text


def test_records_summed_between_flushes_render_as_one_by_one() -> None:
    """Records add to in-process sums that a flush writes at once (one write per series and
    bucket): the histograms' buckets, counts and sums and the counters come out as if every
    value had been observed on its own, bucket edges included (``le`` is inclusive)."""
    m = Metrics()
    route = frozenset({"route": "chat"}.items())
    for ms in (5.0, 10.0, 10.0, 300.0, 400_000.0):  # 10 ms is on the 0.01 s edge
        m.observe(UsageRecord(ts=0.0, request_id="r", kind="request", key_name="k", team="t",
                              user="u", feature="f", route="chat", target="m", input_tokens=3,
                              output_tokens=2, cost_micros=7, latency_ms=ms))  # fmt: skip
    assert m.dirty.is_set()
    got = parse(m.render()[0].decode())
    assert not m.dirty.is_set()

    def bucket(le: str) -> float:
        return got[("trioproxy_request_duration_seconds_bucket", route | {("le", le)})]

    assert bucket("0.01") == 3 and bucket("0.25") == 3 and bucket("0.5") == 4
    assert bucket("300.0") == 4 and bucket("+Inf") == 5
    assert got[("trioproxy_request_duration_seconds_count", route)] == 5
    assert got[("trioproxy_request_duration_seconds_sum", route)] == sum(
        ms / 1000 for ms in (5.0, 10.0, 10.0, 300.0, 400_000.0)
    )
    req = frozenset({"route": "chat", "target": "m", "status": "200", "cache": "off"}.items())
    assert got[("trioproxy_requests_total", req)] == 5
    cost = frozenset({"team": "t", "route": "chat"}.items())
    assert got[("trioproxy_cost_microusd_total", cost)] == 35
    m.flush()  # nothing pending: nothing changes
    assert parse(m.render()[0].decode()) == got


def read_access(log: Path) -> list[dict[str, Any]]:
    return [
        orjson.loads(x) for x in log.read_text().splitlines()
        if x.startswith("{") and '"trioproxy.access"' in x
    ]  # fmt: skip


async def access_lines(log: Path, at_least: int) -> list[dict[str, Any]]:
    """The access lines once ``at_least`` are there (a request logs just after its answer)."""
    with trio.move_on_after(20):
        while True:
            lines = read_access(log)
            if len(lines) >= at_least:
                return lines
            await trio.sleep(0.05)
    return lines


async def test_two_workers_scrape_exact_totals(nursery: trio.Nursery, tmp_path: Path) -> None:
    sim = await start_simulator(nursery, Fault(tokens=7))
    cfg = config({"p": sim.url}, tmp_path, budgets={"teams": {"t2": {"daily_usd": 0.0000001}}})
    cfg["api_keys"][0]["admin"] = True
    cfg["api_keys"].append({"name": "poor", "key_sha256": hash_key(POOR_KEY), "team": "t2",
                            "user": "u2"})  # fmt: skip
    gw = GatewayProcess(cfg, tmp_path, {"SIMKEY": "x"}, workers=2)
    await gw.start()
    sent = 0
    try:
        # rounds of 20 until both workers have served some (the kernel picks the worker)
        while sent < 400 and len({a["pid"] for a in await access_lines(gw.log, sent)}) < 2:
            async with trio.open_nursery() as clients:
                for i in range(20):
                    body = {"model": "p", "messages": MSGS, "stream": i % 4 == 0}
                    clients.start_soon(post, gw.url, "/v1/chat/completions", body, AUTH)
            sent += 20
        async with trio.open_nursery() as clients:
            for _ in range(5):
                poor = {"authorization": f"Bearer {POOR_KEY}"}
                body = {"model": "p", "messages": MSGS, "max_tokens": 50}
                clients.start_soon(post, gw.url, "/v1/chat/completions", body, poor)
        access = await access_lines(gw.log, sent + 5)
        scrapes = []
        req = frozenset({"route": "p", "target": "m-p", "status": "200", "cache": "off"}.items())
        refused = frozenset({"route": "p", "target": "", "status": "429", "cache": "off"}.items())
        async with httpx.AsyncClient(base_url=gw.admin_url, timeout=30) as c:
            # a worker writes a request's counts on its next scheduler turn after the access
            # line: on a loaded box (load average 12 on 2 cores) that turn can come after the
            # scrape. Wait until the totals are in, then every scrape must show them exactly.
            with trio.fail_after(30):
                while True:
                    got = parse((await c.get("/metrics", headers=AUTH)).text)
                    if (
                        got.get(("trioproxy_requests_total", req)) == sent
                        and got.get(("trioproxy_requests_total", refused)) == 5
                    ):
                        break
                    await trio.sleep(0.05)
            for _ in range(6):  # a new connection each: whichever worker answers, same totals
                scrapes.append(await c.get("/metrics", headers={**AUTH, "connection": "close"}))
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.kill()
    served = [a for a in access if a["status"] == 200]
    assert len(served) == sent and len({a["pid"] for a in access}) == 2  # both workers served
    want_in = sum(a["input_tokens"] for a in served)
    want_out = sum(a["output_tokens"] for a in served)
    want_cost = sum(round(a["cost_usd"] * 1e6) for a in served)
    for r in scrapes:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        got = parse(r.text)
        assert got[("trioproxy_requests_total", req)] == sent
        assert got[("trioproxy_requests_total", refused)] == 5
        assert (
            got[("trioproxy_refusals_total", frozenset({"reason": "budget_exceeded"}.items()))] == 5
        )
        tok = {"route": "p", "target": "m-p"}
        assert (
            got[("trioproxy_tokens_total", frozenset({**tok, "type": "input"}.items()))] == want_in
        )
        assert (
            got[("trioproxy_tokens_total", frozenset({**tok, "type": "output"}.items()))]
            == want_out
        )
        cost = frozenset({"team": "t1", "route": "p"}.items())
        assert got[("trioproxy_cost_microusd_total", cost)] == want_cost
        attempts = frozenset({"target": "m-p", "outcome": "won"}.items())
        assert got[("trioproxy_upstream_attempts_total", attempts)] == sent
        route = frozenset({"route": "p"}.items())
        assert got[("trioproxy_request_duration_seconds_count", route)] == sent + 5
        assert got[("trioproxy_time_to_first_byte_seconds_count", route)] == sent
        inf = frozenset({"route": "p", "le": "+Inf"}.items())
        assert got[("trioproxy_request_duration_seconds_bucket", inf)] == sent + 5
        assert ("trioproxy_in_flight_requests", frozenset()) in got
    print("\n" + scrapes[0].text[:4000])


def worker_pids(main: int) -> list[int]:
    """The data-plane worker processes of ``main`` (not its control plane)."""
    return sorted(workers_of(main))


def open_streams_of(metrics_dir: Path, pid: int) -> float:
    """One worker's ``trioproxy_open_streams`` from its own gauge file."""
    files = [str(metrics_dir / f"gauge_livesum_{pid}.db")]
    for family in MultiProcessCollector.merge(files, accumulate=False):
        for s in family.samples:
            if s.name == "trioproxy_open_streams":
                return s.value
    return 0.0


async def test_a_dead_workers_gauges_leave_the_scrape(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A worker killed with streams open: once the supervisor has replaced it, the scrape sums
    the live workers' gauges only (its last values are not summed forever)."""
    sim = await start_simulator(nursery, Fault(tokens=3000, chunk_ms=20))  # ~60 s streams
    cfg = config({"p": sim.url}, tmp_path)
    cfg["api_keys"][0]["admin"] = True
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    gw = GatewayProcess(cfg, tmp_path, {"SIMKEY": "x", "RUNTIME_DIRECTORY": str(run_dir)}, 2)
    await gw.start()
    streams = 8
    try:
        async with trio.open_nursery() as clients:
            body = {"model": "p", "messages": MSGS, "stream": True}
            for _ in range(streams):
                clients.start_soon(post, gw.url, "/v1/chat/completions", body, AUTH)
            (serve_run,) = run_dir.iterdir()  # serve's run directory
            metrics_dir = serve_run / "metrics"
            workers = worker_pids(gw.proc.pid)  # type: ignore[union-attr]
            with trio.fail_after(30):  # every stream is open and sampled by its worker
                while sum(open_streams_of(metrics_dir, w) for w in workers) != streams:
                    await trio.sleep(0.05)
            victim = max(workers, key=lambda w: open_streams_of(metrics_dir, w))
            survivors = streams - int(open_streams_of(metrics_dir, victim))
            os.kill(victim, signal.SIGKILL)
            with trio.fail_after(30):  # the supervisor has replaced it
                while gw.log.read_text().count("worker ready: ") < 3:
                    await trio.sleep(0.05)
            assert not (metrics_dir / f"gauge_livesum_{victim}.db").exists()
            async with httpx.AsyncClient(base_url=gw.admin_url, timeout=30) as c:
                r = await c.get("/metrics", headers={**AUTH, "connection": "close"})
            assert parse(r.text)[("trioproxy_open_streams", frozenset())] == survivors
            clients.cancel_scope.cancel()
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.kill()
