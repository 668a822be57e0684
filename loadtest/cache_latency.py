"""Cache path latency through the gateway: exact hit, semantic hit, miss (issue 4).

One simulator (30-token answers, no delay) behind ``trioproxy serve -w 1`` with
route ``chat`` caching exact (TTL 1 h) and semantic (TTL 1 h, band ``--floor`` to each
``--ceilings`` value: a ceiling of 1.0 runs the pair verifier on every hit, a ceiling equal
to the floor never runs it, so the two rows give the verifier's cost). Every row is a closed loop of ``--conns`` keep-alive
connections; each response's ``x-trioproxy-cache`` header says which path served it,
and latencies are kept per path, so a row never mixes paths.

* exact hit: wrk POSTs one warmed request (temperature 0) for ``--seconds``.
* semantic hit: the 999 ``origin`` sentences of gptcache_pairs.json are warmed (at
  concurrency 2, so the embedder never sheds a store), then each is asked once more as
  "Please tell me: <origin>": a unique text (no embedding is reused) that differs from the
  stored prompt only by filler words, so the verifier runs and passes on each hit. Only
  the responses marked ``semantic`` count; the others are reported as shares. Each round
  uses a new team (a fresh namespace).
* miss: unique prompts, semantic-eligible (temperature 0: exact lookup + embedding +
  upstream + store) and not (temperature 1: exact lookup + upstream + store).

Store modes: ``embedded`` (in-process exact LRU, hnswlib index) and ``redis`` (exact
entries in a throwaway redis-server; the semantic index stays hnswlib).

    .venv/bin/python loadtest/cache_latency.py [--seconds 10] [--conns 100] [--modes embedded redis] [--model FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common
import h11
import trio
from common import Server

sys.path.insert(0, str(common.ROOT))

MODEL = "gpt-4o-mini"
ROUTE = "chat"
ADMIN_KEY = "tp-bench-admin"
PAIRS = Path("/work/shared/data/gptcache_pairs.json")
WARM_CONNS = 2


# ---------------------------------------------------------------- config


def cache_config(
    wd: Path,
    sim_url: str,
    *,
    exact_ttl_s: int = 3600,
    semantic_ttl_s: int = 3600,
    band: tuple[float, float] = (0.8, 1.0),
    teams: Iterable[str] = (),
    redis_url: str | None = None,
    extra: str = "",
    users: Iterable[str] = (),
    confirm_users: int = 1,
) -> Path:
    """``common.write_config`` plus route ``chat``'s cache table, an admin key, one key per
    extra team (key = ``tp-bench-<team>``), one key per user of team ``users``, a Redis URL
    and any ``extra`` TOML."""
    path = common.write_config(wd, {MODEL: sim_url}, {ROUTE: [MODEL]})
    text = path.read_text()
    if redis_url:
        text = text.replace("[storage]\n", f'[storage]\nredis_url = "{redis_url}"\n', 1)
    lines = [
        f"[routes.{ROUTE}.cache]",
        f"exact_ttl_s = {exact_ttl_s}",
        f"semantic_ttl_s = {semantic_ttl_s}",
        f"semantic_band = [{band[0]}, {band[1]}]",
        "max_temperature = 0.3",
        f"confirm_users = {confirm_users}",
    ]
    for name, key, team, admin in (
        [("admin", ADMIN_KEY, "ops", True)]
        + [(f"k-{t}", team_key(t), t, False) for t in teams]
        + [(f"u-{u}", user_key(u), "users", False) for u in users]
    ):
        digest = hashlib.sha256(key.encode()).hexdigest()
        lines += ["[[api_keys]]", f'name = "{name}"', f'key_sha256 = "{digest}"']
        lines += [f'team = "{team}"', f"admin = {str(admin).lower()}"]
    path.write_text(text + "\n".join(lines) + "\n" + extra)
    return path


def stop_gateway(gw: Server, timeout: float = 30.0) -> None:
    """SIGTERM to hypercorn's master only, then ``gw.stop()``: signalling the whole group
    at once (``Server.stop``, systemd's default KillMode) loses the ledger's last records."""
    if gw.proc.poll() is None:
        os.kill(gw.proc.pid, signal.SIGTERM)
        try:
            gw.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    gw.stop()


def team_key(team: str) -> str:
    return f"tp-bench-{team}"


def user_key(user: str) -> str:
    """The key of one user of team ``users`` (several users share that team's cache)."""
    return f"tp-bench-user-{user}"


def chat_body(text: str, *, temperature: float = 0.0, max_tokens: int = 64) -> bytes:
    return json.dumps(
        {
            "model": ROUTE,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
    ).encode()


def metrics(gw: Server) -> dict[str, float]:
    """The gateway's /metrics as {'name{labels}': value}."""
    config = gw.log_path.parent / "bench.toml"
    req = urllib.request.Request(
        common.admin_url(config) + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_writes(gw: Server, timeout: float = 30.0) -> None:
    """Until the cache writer's queue is empty (warm entries are stored)."""
    deadline = time.monotonic() + timeout
    while metrics(gw).get("trioproxy_cache_write_queue", 0) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("cache writer did not drain")
        time.sleep(0.1)
    time.sleep(0.3)


# ---------------------------------------------------------------- client


@dataclass(slots=True)
class Sample:
    tag: str
    ms: float
    status: int
    cache: str
    similarity: float | None
    body: bytes = b""
    request_id: str = ""


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0


async def _exchange(
    stream: trio.SocketStream, conn: h11.Connection, host: str, body: bytes, headers: list
) -> tuple[int, dict[str, str], bytes] | None:
    """One POST on a keep-alive connection: (status, headers, body), None if it broke."""
    hdrs = [("host", host), ("content-type", "application/json"), *headers]
    hdrs.append(("content-length", str(len(body))))
    await stream.send_all(
        conn.send(h11.Request(method="POST", target="/v1/chat/completions", headers=hdrs))
        + conn.send(h11.Data(data=body))
        + conn.send(h11.EndOfMessage())
    )
    status, resp, parts = 0, {}, []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            status = event.status_code
            resp = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return status, resp, b"".join(parts)


Job = tuple[str, bytes] | tuple[str, bytes, str]
"""(tag, body) or (tag, body, API key): a job's own key overrides the run's."""


async def _connection(
    url: str,
    jobs: Iterable[Job],
    headers: list[tuple[str, str]],
    out: LoadResult,
    deadline: float,
) -> None:
    """Take jobs from the shared iterator; reconnect when the server closes (hypercorn
    ends a keep-alive connection after 1,000 requests)."""
    host, port = url.removeprefix("http://").split(":")
    stream: trio.SocketStream | None = None
    conn = h11.Connection(h11.CLIENT)
    try:
        for job in jobs:
            tag, body = job[0], job[1]
            auth = [("authorization", f"Bearer {job[2]}")] if len(job) == 3 else headers
            if trio.current_time() > deadline:
                return
            if stream is None or conn.our_state is not h11.IDLE:
                if stream is not None:
                    await stream.aclose()
                stream = await trio.open_tcp_stream(host, int(port))
                conn = h11.Connection(h11.CLIENT)
            t0 = time.perf_counter()
            got = await _exchange(stream, conn, host, body, auth)
            ms = 1000 * (time.perf_counter() - t0)
            if got is None:
                out.errors += 1
                conn = h11.Connection(h11.CLIENT)
                conn.send(h11.ConnectionClosed())
                continue
            status, resp, data = got
            sim = resp.get("x-trioproxy-cache-similarity")
            cache = resp.get("x-trioproxy-cache", "?")
            similarity = float(sim) if sim else None
            rid = resp.get("x-request-id", "")
            out.samples.append(Sample(tag, ms, status, cache, similarity, data, rid))
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
    finally:
        if stream is not None:
            await stream.aclose()


def run_load(
    url: str,
    jobs: Sequence[Job],
    *,
    conns: int,
    key: str = common.BENCH_KEY,
    max_seconds: float = 120.0,
) -> LoadResult:
    """POST every (tag, body) of ``jobs`` once, over ``conns`` keep-alive connections."""
    out = LoadResult()
    headers = [("authorization", f"Bearer {key}")]

    async def main() -> None:
        it = iter(jobs)
        deadline = trio.current_time() + max_seconds
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(min(conns, len(jobs))):
                nursery.start_soon(_connection, url, it, headers, out, deadline)
        out.seconds = time.perf_counter() - t0

    trio.run(main)
    return out


# ---------------------------------------------------------------- reporting


def pct(values: Sequence[float], q: float) -> float:
    return common.percentile(values, q)


def median_ci(ordered: Sequence[float]) -> tuple[float, float]:
    """Distribution-free 95 % interval of the median: the order statistics n/2 -+ 0.98 sqrt(n)."""
    n = len(ordered)
    half = 0.98 * n**0.5
    return ordered[max(0, int(n / 2 - half))], ordered[min(n - 1, int(n / 2 + half))]


def row(name: str, ms: Sequence[float], seconds: float, meter: common.Meter, **more: Any) -> dict:
    return {
        "row": name,
        "n": len(ms),
        "p50": pct(ms, 50),
        "p90": pct(ms, 90),
        "p99": pct(ms, 99),
        "rps": len(ms) / seconds if seconds else 0.0,
        "busy": meter.busy_pct,
        "foreign": meter.foreign_pct,
        **more,
    }


def print_rows(rows: Sequence[dict]) -> None:
    print(
        "| mode | path | conns | n | p50 ms | p90 ms | p99 ms | req/s | busy % | foreign % | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['row']} | {r['conns']} | {r['n']} | {r['p50']:.2f} "
            f"| {r['p90']:.2f} | {r['p99']:.2f} | {r['rps']:,.0f} | {r['busy']:.0f} "
            f"| {r['foreign']:.0f} | {r.get('note', '')} |"
        )


# ---------------------------------------------------------------- phases


def exact_phase(gw: Server, sim: Server, wd: Path, conns: int, seconds: float) -> dict:
    body = chat_body("Give me a one-line summary of the trio event loop.")
    warm = run_load(gw.url, [("warm", body)], conns=1)
    wait_writes(gw)
    check = run_load(gw.url, [("check", body)], conns=1)
    assert check.samples[0].cache == "exact", check.samples
    script = wd / "exact.lua"
    script.write_text(common.WRK_LUA % (body.decode(), common.BENCH_KEY))
    before = metrics(gw)
    common.wait_quiet()
    with common.Meter({"gateway": gw.pgid, "sim": sim.pgid}) as m:
        argv = ["wrk", "-t1", f"-c{conns}", f"-d{round(seconds)}s", "--timeout", "10s"]
        out = subprocess.run(
            [*argv, "-s", str(script), gw.url + "/v1/chat/completions"],
            capture_output=True, text=True, timeout=seconds + 30, check=True,
        )  # fmt: skip
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    r = common.WrkResult(**json.loads(line[len("RESULT ") :]))
    after = metrics(gw)
    exact = _count(after, "exact") - _count(before, "exact")
    del warm
    return {
        "row": "exact hit (wrk)", "conns": conns, "n": r.requests, "p50": r.p50, "p90": r.p90,
        "p99": r.p99, "rps": r.rps, "busy": m.busy_pct, "foreign": m.foreign_pct,
        "note": f"{exact}/{r.requests} served exact (/metrics); gw CPU "
        f"{1000 * m.cpu['gateway'] / max(1, r.requests):.2f} ms/req; errors {r.errors + r.non2xx}",
    }  # fmt: skip


def _count(m: dict[str, float], kind: str) -> float:
    return sum(
        v
        for k, v in m.items()
        if k.startswith("trioproxy_requests_total") and f'cache="{kind}"' in k
    )


def semantic_phase(
    gw: Server, sim: Server, team: str, pairs: Sequence[dict], conns: int
) -> list[dict]:
    key = team_key(team)
    warm = [("origin", chat_body(p["origin"])) for p in pairs]
    run_load(gw.url, warm, conns=WARM_CONNS, key=key)
    wait_writes(gw)
    before = metrics(gw)
    jobs = [("similar", chat_body("Please tell me: " + p["origin"])) for p in pairs]
    common.wait_quiet()
    with common.Meter({"gateway": gw.pgid, "sim": sim.pgid}) as m:
        res = run_load(gw.url, jobs, conns=conns, key=key)
    after = metrics(gw)
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    n = len(res.samples)
    by: dict[str, list[float]] = {}
    for s in res.samples:
        by.setdefault(s.cache, []).append(s.ms)
    sims = [s.similarity for s in res.samples if s.similarity is not None]
    skipped = d.get("trioproxy_semantic_embed_skipped_total", 0)
    note = (
        f"of {n}: semantic {len(by.get('semantic', []))}, exact {len(by.get('exact', []))}, "
        f"miss {len(by.get('miss', []))}; embed skipped {skipped:.0f}, below threshold "
        f"{d.get('trioproxy_semantic_below_threshold_total', 0):.0f}; sim p50 {pct(sims, 50):.3f}; "
        f"gw CPU {1000 * m.cpu['gateway'] / max(1, n):.2f} ms/req (all {n})"
    )
    hit_ms = sorted(by.get("semantic", []))
    if hit_ms:
        lo, hi = median_ci(hit_ms)
        note += f"; hit p50 95 % CI [{lo:.2f}, {hi:.2f}] ms, p95 {pct(hit_ms, 95):.2f} ms"
    rows = [row("semantic hit", hit_ms, res.seconds, m, conns=conns, note=note)]
    rows.append(
        row(
            "paraphrase miss",
            by.get("miss", []),
            res.seconds,
            m,
            conns=conns,
            note="same run: paraphrases that went upstream",
        )
    )
    return rows


def miss_phase(gw: Server, sim: Server, conns: int, n: int, temperature: float, tag: str) -> dict:
    words = [p["origin"] for p in json.loads(PAIRS.read_text())]
    jobs = [
        ("miss", chat_body(f"{tag} {i}: {words[i % len(words)]}", temperature=temperature))
        for i in range(n)
    ]
    common.wait_quiet()
    with common.Meter({"gateway": gw.pgid, "sim": sim.pgid}) as m:
        res = run_load(gw.url, jobs, conns=conns)
    ms = [s.ms for s in res.samples if s.cache == "miss" and s.status == 200]
    name = f"miss, temperature {temperature:g}"
    return row(name, ms, res.seconds, m, conns=conns, note=f"{len(ms)}/{len(res.samples)} miss")


def run_mode(
    mode: str, args: argparse.Namespace, wd: Path, sim: Server, ceiling: float
) -> list[dict]:
    redis = None
    if mode == "redis":
        from tests.fixtures_servers import RedisServer

        redis = RedisServer(wd)
        redis.start()
    pairs = json.loads(PAIRS.read_text())
    teams = [f"{mode}-{ceiling}-r{i}" for i in range(len(args.sem_conns))]
    mwd = wd / f"{mode}-{ceiling}"
    mwd.mkdir()
    model = f'[embedder]\nmodel_path = "{args.model}"\n' if args.model else ""
    config = cache_config(
        mwd, sim.url, band=(args.floor, ceiling), teams=teams,
        redis_url=redis.url if redis else None, extra=model,
    )  # fmt: skip
    gw = common.start_gateway(mwd, config, 1)
    rows: list[dict] = []
    try:
        if not args.semantic_only:
            rows += [exact_phase(gw, sim, mwd, c, args.seconds) for c in (args.conns, 1)]
        for team, conns in zip(teams, args.sem_conns, strict=True):
            rows += semantic_phase(gw, sim, team, pairs, conns)
        if not args.semantic_only:
            tag = f"{mode} {ceiling}"
            rows.append(miss_phase(gw, sim, args.conns, args.misses, 0.0, f"{tag} sem-eligible"))
            rows.append(miss_phase(gw, sim, args.conns, args.misses, 1.0, f"{tag} hot"))
    finally:
        stop_gateway(gw)
        if redis is not None:
            redis.stop()
    return [{"mode": f"{mode}, ceiling {ceiling}", **r} for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--sem-conns", type=int, nargs="+", default=[100, 4, 1])
    p.add_argument("--misses", type=int, default=1500)
    p.add_argument("--floor", type=float, default=0.8)
    p.add_argument("--ceilings", type=float, nargs="+", default=[1.0, 0.8])
    p.add_argument("--modes", nargs="+", default=["embedded", "redis"])
    p.add_argument("--semantic-only", action="store_true", help="only the semantic-hit rows")
    p.add_argument("--model", help="[embedder] model_path, e.g. the wheel's own file")
    args = p.parse_args()
    wd = common.workdir()
    sim = common.start_simulator(wd)
    rows: list[dict] = []
    try:
        for mode in args.modes:
            for ceiling in args.ceilings:
                rows += run_mode(mode, args, wd, sim, ceiling)
    finally:
        sim.stop()
    print_rows(rows)
    print(f"\nworkdir {wd}")


if __name__ == "__main__":
    main()
