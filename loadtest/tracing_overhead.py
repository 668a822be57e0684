"""Tracing overhead: CPU per request with OpenTelemetry off and on.

One process runs the provider simulator, the gateway (hypercorn's trio worker,
demo config) and a keep-alive client; a second process is a minimal OTLP/HTTP
receiver (answers 200 to every POST, so spans really are encoded and sent).
Each round sends ``--requests`` non-stream chat requests (``--conns`` at a time)
to ``gpt-4o-mini``; rounds alternate off / on so that both modes see the same
machine. CPU is this process's ``time.process_time()`` over the round: the
gateway, simulator and client are the same in both modes, so the difference is
what tracing costs (span creation, attributes, ``traceparent`` injection, the
batch processor's encoding and export thread).

    .venv/bin/python loadtest/tracing_overhead.py [--requests 500] [--rounds 3] [--conns 8]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from functools import partial

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from trioproxy.config import demo_settings
from trioproxy.edge.app import Gateway
from trioproxy.ledger.sinks import ListSink
from trioproxy.server.factory import build_gateway
from trioproxy.simulator import Simulator
from trioproxy.telemetry.tracing import Tracing

KEY = "tp-bench-key-0123456789"
WARMUP = 50
RECEIVER = textwrap.dedent(
    """
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
        def log_message(self, *a): pass
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(s.server_address[1], flush=True)
    s.serve_forever()
    """
)


async def start(nursery: trio.Nursery, tracing: Tracing, sim_url: str) -> tuple[str, Gateway]:
    settings = demo_settings(sim_url, KEY, state_dir=tempfile.mkdtemp(prefix="tp-bench-"))
    app = build_gateway(settings, sink=ListSink(), tracing=tracing)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds: list[str] = await nursery.start(partial(serve, app, config))
    return binds[0], app


async def round_cpu(url: str, n: int, conns: int) -> float:
    """CPU seconds of this process per request over ``n`` requests."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]}
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        todo = iter(range(WARMUP))

        async def worker() -> None:
            for _ in todo:
                r = await client.post(
                    "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
                )
                assert r.status_code == 200, r.text

        await worker_round(worker, conns, conns)  # warm-up: open the connections
        todo = iter(range(n))
        cpu0 = time.process_time()
        await worker_round(worker, conns, conns)
        return (time.process_time() - cpu0) / n


async def worker_round(worker: object, tasks: int, conns: int) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(min(tasks, conns)):
            nursery.start_soon(worker)  # type: ignore[arg-type]


async def main(args: argparse.Namespace, port: int) -> None:
    """``port``: the OTLP receiver's."""
    provider = TracerProvider()
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    results: dict[str, list[float]] = {"off": [], "on": []}
    async with trio.open_nursery() as nursery:
        sim = Simulator()
        sim_port = await nursery.start(sim.serve, "127.0.0.1", 0)
        sim_url = f"http://127.0.0.1:{sim_port}"
        off_url, _ = await start(nursery, Tracing(), sim_url)
        on_url, _ = await start(nursery, Tracing(provider), sim_url)
        for _ in range(args.rounds):
            for mode, url in (("off", off_url), ("on", on_url)):
                results[mode].append(await round_cpu(url, args.requests, args.conns))
        nursery.cancel_scope.cancel()
    provider.shutdown()
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    print(f"requests/round={args.requests} rounds={args.rounds} conns={args.conns}")
    for mode in ("off", "on"):
        rounds = ", ".join(f"{1000 * x:.3f}" for x in results[mode])
        print(f"tracing {mode:3}: CPU ms/request per round: {rounds}")
    print(
        f"median: off {1000 * off:.3f} ms, on {1000 * on:.3f} ms; "
        f"tracing adds {1000 * (on - off):.3f} ms CPU/request ({100 * (on - off) / off:+.1f}%)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", type=int, default=8)
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        trio.run(main, parser.parse_args(), int(receiver.stdout.readline()))
    finally:
        receiver.kill()
