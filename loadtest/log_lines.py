"""CPU per access line: written one by one, or a scheduler turn's lines in one write.

    .venv/bin/python loadtest/log_lines.py [--to file|socket] [--tasks 100] [--lines 200]

``--tasks`` Trio tasks each log ``--lines`` access lines (``log_fields``, the access sink's
path) with a checkpoint after each, first without, then with the worker's
:class:`~trioproxy.telemetry.logs.LineBatch` running. ``socket``: stderr is one end of a Unix
stream socket drained by a thread (as journald's stream under systemd); ``file``: a file.
Prints process CPU (every thread, the drain too) per line, best of five rounds each.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from trioproxy.telemetry import line_batch, logs

FIELDS = {
    "request_id": "req_0123456789abcdef", "endpoint": "chat", "key": "bench", "team": "bench",
    "user": None, "feature": None, "route": "chat", "chain": "default", "stream": False,
    "attempts": [{"target": "m", "role": "primary", "outcome": "won", "status": 200,
                  "error": None, "ms": 1.2}],
    "winner": "m", "status": 200, "outcome": "ok", "error_kind": None, "cache": "off",
    "input_tokens": 12, "output_tokens": 30, "cache_read_tokens": 0, "cache_write_tokens": 0,
    "reasoning_tokens": 0, "estimated": False, "cost_usd": 0.0000198, "saved_usd": 0.0,
    "prompt_cache_saved_usd": 0.0, "ttfb_ms": 1.1, "duration_ms": 1.4, "client_left": False,
}  # fmt: skip


def stream(to: str):  # type: ignore[no-untyped-def]
    if to == "file":
        return open(Path(tempfile.mkdtemp()) / "log", "w")
    a, b = socket.socketpair()

    def drain() -> None:
        while b.recv(1 << 20):
            pass

    threading.Thread(target=drain, daemon=True).start()
    return a.makefile("w", buffering=1)


async def rounds(batched: bool, tasks: int, lines: int) -> float:
    log = logging.getLogger("trioproxy.access")
    best = float("inf")
    async with trio.open_nursery() as nursery:
        if batched:
            batch = line_batch.line_batch()
            assert batch is not None
            await nursery.start(batch.run)

        async def one() -> None:
            for _ in range(lines):
                logs.log_fields(log, logging.INFO, "request", FIELDS)
                await trio.lowlevel.checkpoint()

        for _ in range(5):
            t = time.process_time()
            async with trio.open_nursery() as inner:
                for _ in range(tasks):
                    inner.start_soon(one)
            best = min(best, (time.process_time() - t) / (tasks * lines))
        nursery.cancel_scope.cancel()
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--to", choices=["file", "socket"], default="socket")
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--lines", type=int, default=200)
    args = ap.parse_args()
    logs.configure_logging("info", "json", stream(args.to))
    for batched in (False, True):
        us = trio.run(rounds, batched, args.tasks, args.lines)
        print(f"{'one turn, one write' if batched else 'a write per line'}: {us:.2f} µs per line")


if __name__ == "__main__":
    main()
