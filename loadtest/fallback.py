"""Added time of a fallback when the first target answers 529.

Simulator A answers every chat request with 529 (``retry_after`` set per
scenario); simulator B answers normally. Route ``fb`` is the chain [A, B];
model ``b`` is B alone. Latencies come from one client (httpx, keep-alive)
and are compared with the same requests sent to ``b`` through the gateway and
straight to simulator B. Scenarios:

``first failures``  default breaker (5 consecutive failures open it),
                    retry_after=0: the per-request latency of requests 1..8
                    on a fresh gateway, i.e. the cost before the breaker opens
                    and the cost once A is skipped.
``retry-after``     default breaker, A's 529 carries ``retry-after: 1``: A is
                    held out for 1 s after each 529, so most requests skip it.
``steady fallback`` breaker threshold 1,000,000 and retry_after=0: every
                    request tries A, gets 529, then B: the per-request cost.

Each of the last two runs ``--requests`` sequential requests and then the same
number with ``--concurrency`` in flight.

    .venv/bin/python loadtest/fallback.py [--requests 300] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common
import httpx
import trio

HEADERS = {"authorization": f"Bearer {common.BENCH_KEY}", "content-type": "application/json"}


async def timed(client: httpx.AsyncClient, url: str, model: str) -> tuple[float, str]:
    """Latency in ms of one request, and who served it (x-trioproxy-target)."""
    t0 = time.perf_counter()
    r = await client.post(url, content=common.CHAT_BODY % model.encode(), headers=HEADERS)
    ms = 1000 * (time.perf_counter() - t0)
    if r.status_code != 200:
        raise RuntimeError(f"{url} {model}: {r.status_code} {r.text[:200]}")
    return ms, r.headers.get("x-trioproxy-target", "direct")


async def series(url: str, model: str, n: int, concurrency: int) -> list[float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    out: list[float] = []
    async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as client:
        for _ in range(5):  # warm the client's connections
            await timed(client, url, model)
        it = iter(range(n))

        async def worker() -> None:
            for _ in it:
                out.append((await timed(client, url, model))[0])

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
    return out


async def first_requests(url: str, n: int) -> list[tuple[float, str]]:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        await timed(client, url, "b")  # open a connection to the gateway (and B)
        return [await timed(client, url, "fb") for _ in range(n)]


def stats(name: str, ms: list[float], base: list[float] | None) -> str:
    p50, p99 = common.percentile(ms, 50), common.percentile(ms, 99)
    extra = ""
    if base is not None:
        b50, b99 = common.percentile(base, 50), common.percentile(base, 99)
        extra = f" | {p50 - b50:+.2f} | {p99 - b99:+.2f}"
    else:
        extra = " | | "
    return f"| {name} | {len(ms)} | {p50:.2f} | {p99:.2f}{extra} |"


def run_gateway(
    wd: Path, sims: dict[str, common.Server], threshold: int, args: argparse.Namespace
) -> list[str]:
    config = common.write_config(
        wd,
        {"a": sims["a"].url, "b": sims["b"].url},
        {"fb": ["a", "b"]},
        breaker_threshold=threshold,
    )
    gw = common.start_gateway(wd, config)
    url = gw.url + "/v1/chat/completions"
    direct = sims["b"].url + "/v1/chat/completions"
    lines = []
    try:
        for conc in (1, args.concurrency):
            n = args.requests
            base = trio.run(series, direct, "b", n, conc)
            via_b = trio.run(series, url, "b", n, conc)
            via_fb = trio.run(series, url, "fb", n, conc)
            lines.append(stats(f"direct to B, c={conc}", base, None))
            lines.append(stats(f"gateway model b, c={conc}", via_b, base))
            lines.append(stats(f"gateway route fb [A 529, B], c={conc}", via_fb, via_b))
    finally:
        gw.stop()
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=20)
    args = p.parse_args()
    wd = common.workdir()
    sims = {
        "a": common.start_simulator(wd, "sim-a", status=529, retry_after=0),
        "b": common.start_simulator(wd, "sim-b"),
    }
    try:
        print(f"machine busy before start: {common.wait_quiet():.0f}%")
        config = common.write_config(
            wd, {"a": sims["a"].url, "b": sims["b"].url}, {"fb": ["a", "b"]}
        )
        gw = common.start_gateway(wd, config)
        try:
            first = trio.run(first_requests, gw.url + "/v1/chat/completions", 8)
        finally:
            gw.stop()
        print("first failures (fresh gateway, default breaker, retry_after=0):")
        for i, (ms, target) in enumerate(first, 1):
            print(f"  request {i}: {ms:7.2f} ms  served by {target}")
        header = [
            "| scenario | n | p50 ms | p99 ms | added p50 ms | added p99 ms |",
            "|---|---|---|---|---|---|",
        ]
        common.set_faults(sims["a"], status=529, retry_after=1)
        with common.Meter({}) as m1:
            retry_lines = run_gateway(wd, sims, 5, args)
        common.set_faults(sims["a"], status=529, retry_after=0)
        with common.Meter({}) as m2:
            steady_lines = run_gateway(wd, sims, 1_000_000, args)
        print(f"\nretry-after: A's 529 carries retry-after 1 (busy {m1.busy_pct:.0f}%):")
        print("\n".join(header + retry_lines))
        print(f"\nsteady fallback: breaker never opens, retry_after 0 (busy {m2.busy_pct:.0f}%):")
        print("\n".join(header + steady_lines))
        print("\n(added: gateway model b vs direct; route fb vs gateway model b)")
    finally:
        for sim in sims.values():
            sim.stop()


if __name__ == "__main__":
    main()
