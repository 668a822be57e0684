"""The ceiling: a bare hypercorn-trio + httpx2 forwarder, measured like the gateway.

``app`` below is the whole forwarder (raw ASGI, one shared ``httpx2.AsyncClient``
opened in the lifespan): it POSTs the request body to the simulator and returns
the answer. ``main`` runs it and trioproxy back to back under the same load
(wrk, 100 connections) and prints trioproxy's throughput as % of the ceiling.

    .venv/bin/python loadtest/ceiling.py [--seconds 15] [--conns 100] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import httpx2

UPSTREAM_ENV = "CEILING_UPSTREAM"
_state: dict[str, httpx2.AsyncClient] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        limits = httpx2.Limits(max_connections=2048, max_keepalive_connections=2048)
        _state["c"] = httpx2.AsyncClient(
            base_url=os.environ[UPSTREAM_ENV], limits=limits, timeout=30, trust_env=False
        )
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await _state["c"].aclose()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    r = await _state["c"].post(
        "/v1/chat/completions",
        content=body,
        headers={"authorization": "Bearer sim", "content-type": "application/json"},
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(r.content))]
    await send({"type": "http.response.start", "status": r.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": r.content})


def main() -> None:
    import common
    from overhead import measure, print_rows

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    wd = common.workdir()
    sim = common.start_simulator(wd)
    rows = []
    try:
        config = common.write_config(wd, {"gpt-4o-mini": sim.url})
        for workers in args.workers:
            port = common.free_port()
            argv = [str(common.VENV_BIN / "hypercorn"), "-k", "trio", "-w", str(workers)]
            argv += ["-b", f"{common.HOST}:{port}", "--backlog", "4096", "ceiling:app"]
            env = {UPSTREAM_ENV: sim.url, "PYTHONPATH": str(common.ROOT / "loadtest")}
            for name in ("ceiling", "trioproxy"):
                if name == "ceiling":
                    server = common.start("ceiling", argv, port, wd, env=env)
                else:
                    server = common.start_gateway(wd, config, workers)
                try:
                    row = measure(server, sim, wd, conns=args.conns, seconds=args.seconds)
                    rows.append({"server": f"{name} -w {workers}", **row})
                finally:
                    server.stop()
            ceiling, ours = rows[-2]["rps"], rows[-1]["rps"]
            rows[-1]["server"] += f" ({100 * ours / ceiling:.0f}% of ceiling)"
    finally:
        sim.stop()
    print_rows(rows)


if __name__ == "__main__":
    main()
