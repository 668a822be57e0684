"""Load scenarios for trioproxy on the Locust-shaped harness (``harness.py``).

    .venv/bin/python loadtest/scenarios.py acceptance            # 1,000 concurrent streams
    .venv/bin/python loadtest/scenarios.py mixed [--users 200]   # all four user classes

Each run starts, on 127.0.0.1: load-mode simulators (``trioproxy simulate --load``, 50
chunks 20 ms apart = 54 events per stream), the gateway (``trioproxy serve --workers 1``
from a snapshot of HEAD, see common.py) pinned to CPU 0 with ``taskset``, and runs the
users in this process pinned to CPU 1 (beside the simulators). It prints a live table
every 2 s, then the totals, the gateway's CPU per event and peak RSS, writes
``<out>_stats.csv`` and ``<out>.json``, and exits 1 if a threshold fails.

User classes (``--users`` split by weight in ``mixed``; only StreamUser in
``acceptance``):

* ``ChatUser`` (weight 2): non-stream chat on route ``chat``;
* ``StreamUser`` (weight 5): 54-event SSE streams on route ``chat``;
* ``CacheReplayUser`` (weight 2): the same 20 prompts at temperature 0 on route ``cached``
  (exact cache: after the first round, answers are replayed from the cache);
* ``FailoverStormUser`` (weight 1): streams on route ``failover`` whose first target
  answers 503 to everything: every request falls back (until the breaker opens and
  skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import common
import trio
from harness import Environment, Thresholds, User, constant, task, write_outputs

ACCEPTANCE_THRESHOLDS = "broken==0,failures==0,ttft_p99_ms<=1000"


def _body(route: str, content: str, *, stream: bool, temperature: float | None = None) -> bytes:
    body: dict[str, object] = {
        "model": route, "stream": stream, "messages": [{"role": "user", "content": content}],
    }  # fmt: skip
    if temperature is not None:
        body["temperature"] = temperature
    return json.dumps(body).encode()


AUTH = (("authorization", f"Bearer {common.BENCH_KEY}"),)
CHAT = _body("chat", "Tell me a story.", stream=False)
STREAM = _body("chat", "Tell me a story.", stream=True)
REPLAYS = [_body("cached", f"Question number {i}?", stream=False, temperature=0) for i in range(20)]
FAILOVER = _body("failover", "Tell me a story.", stream=True)


class ChatUser(User):
    weight = 2
    headers = AUTH
    wait_time = staticmethod(constant(0.2))

    @task()
    async def chat(self) -> None:
        await self.client.post("chat", "/v1/chat/completions", CHAT)


class StreamUser(User):
    weight = 5
    headers = AUTH

    @task()
    async def stream(self) -> None:
        await self.client.stream("stream", "/v1/chat/completions", STREAM)


class CacheReplayUser(User):
    weight = 2
    headers = AUTH
    wait_time = staticmethod(constant(0.1))

    @task()
    async def replay(self) -> None:
        body = REPLAYS[int(time.perf_counter() * 1000) % len(REPLAYS)]
        await self.client.post("cache-replay", "/v1/chat/completions", body)


class FailoverStormUser(User):
    weight = 1
    headers = AUTH

    @task()
    async def failover(self) -> None:
        await self.client.stream("failover", "/v1/chat/completions", FAILOVER)


def start_load_sim(wd: Path, name: str, *, cpu: int | None, status: int | None = None,
                   tokens: int = 50, chunk_ms: float = 20.0) -> common.Server:  # fmt: skip
    port = common.free_port()
    args = ["simulate", "--load", "--host", common.HOST, "--port", str(port),
            "--tokens", str(tokens), "--chunk-ms", str(chunk_ms)]  # fmt: skip
    if status is not None:
        args += ["--status", str(status)]
    argv, env = common.trioproxy_argv(*args)
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    return common.start(name, argv, port, wd, env=env, ready_path="/_sim/stats")


def gateway_config(wd: Path, ok_url: str, failing_url: str) -> Path:
    head = "\n".join(common.head_lines(wd))
    key = "\n".join(common.bench_key_lines())
    text = f"""
{head}
[providers.ok]
kind = "openai"
base_url = "{ok_url}"
api_key_env = "{common.PROVIDER_KEY_ENV}"
max_connections = 2048
[providers.failing]
kind = "openai"
base_url = "{failing_url}"
api_key_env = "{common.PROVIDER_KEY_ENV}"
[models.m]
provider = "ok"
input_per_mtok = 0.15
output_per_mtok = 0.60
[models.bad]
provider = "failing"
input_per_mtok = 0.15
output_per_mtok = 0.60
[routes.chat]
[[routes.chat.chains.default]]
model = "m"
[routes.cached]
cache = {{ exact_ttl_s = 3600 }}
[[routes.cached.chains.default]]
model = "m"
[routes.failover]
[[routes.failover.chains.default]]
model = "bad"
[[routes.failover.chains.default]]
model = "m"
{key}
"""
    path = wd / "scenario.toml"
    path.write_text(text)
    return path


def start_gateway(wd: Path, config: Path, *, cpu: int | None, commit: str = "HEAD",
                  workers: int = 1) -> common.Server:  # fmt: skip
    port = common.free_port()
    argv, env = common.trioproxy_argv(
        "serve", "--config", str(config), "--host", common.HOST, "--port", str(port),
        "--workers", str(workers), commit=commit,
    )  # fmt: skip
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    return common.start("gateway", argv, port, wd, env={**env, common.PROVIDER_KEY_ENV: "sim"})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=["acceptance", "mixed"])
    p.add_argument("--users", type=int, default=None, help="default 1000 / 200")
    p.add_argument("--spawn-rate", type=float, default=500.0, help="users started per second")
    p.add_argument("--run-time", type=float, default=20.0, help="seconds of load")
    p.add_argument("--thresholds", default=None, help=f"default: {ACCEPTANCE_THRESHOLDS}")
    p.add_argument("--out", default="loadtest-result", help="prefix of the CSV / JSON files")
    p.add_argument("--gateway-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    args = p.parse_args()
    users = args.users or (1000 if args.scenario == "acceptance" else 200)
    classes: list[type[User]] = (
        [StreamUser] if args.scenario == "acceptance"
        else [ChatUser, StreamUser, CacheReplayUser, FailoverStormUser]
    )  # fmt: skip
    thresholds = Thresholds.parse(
        args.thresholds if args.thresholds is not None
        else ACCEPTANCE_THRESHOLDS if args.scenario == "acceptance" else ""
    )  # fmt: skip
    wd = common.workdir()
    sim = start_load_sim(wd, "sim", cpu=args.client_cpu)
    bad = start_load_sim(wd, "sim-503", cpu=args.client_cpu, status=503)
    try:
        gw = start_gateway(wd, gateway_config(wd, sim.url, bad.url), cpu=args.gateway_cpu)
        try:
            os.sched_setaffinity(0, {args.client_cpu})
            env = Environment(gw.port, users, args.spawn_rate, args.run_time, classes)
            pgids = {"gateway": gw.pgid, "sim": sim.pgid}
            with common.Meter(pgids, sample_s=0.5, by_role=["gateway"]) as meter:
                trio.run(env.run)
        finally:
            gw.stop()
    finally:
        sim.stop()
        bad.stop()
    print(env.table())
    totals = env.totals()
    gw_cpu = meter.cpu["gateway"]
    extra = {
        "scenario": args.scenario, "run_time_s": args.run_time,
        "completed_per_s": totals["done_in_window"] / args.run_time,
        "gateway_cpu_s": gw_cpu, "gateway_us_per_event": 1e6 * gw_cpu / max(1, totals["events"]),
        "gateway_peak_rss_mb": meter.peak_rss_mb.get("gateway", 0.0),
        "gateway_peak_resident_mb": meter.peak_resident_mb.get("gateway"),
        "sim_cpu_s": meter.cpu["sim"], "client_cpu_s": meter.cpu["client"],
        "machine_busy_pct": meter.busy_pct, "foreign_pct": meter.foreign_pct,
    }  # fmt: skip
    out = write_outputs(env, args.out, args.out + ".json", extra)
    for k, v in extra.items():
        print(f"{k:>22}: {v:,.2f}" if isinstance(v, float) else f"{k:>22}: {v}")
    failed = thresholds.check({**totals, **extra})
    print(f"wrote {args.out}_stats.csv and {args.out}.json ({len(out['rows'])} rows)")
    if failed:
        print("THRESHOLDS FAILED: " + "; ".join(failed))
        return 1
    print("thresholds passed" if thresholds.rules else "no thresholds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
