"""1,000 concurrent long streams through the gateway (250 chunks x 40 ms, ~10 s each).

Simulator L answers every request with 250 tokens, one SSE chunk per token,
40 ms apart. The client is one bare epoll loop (non-blocking sockets, no
framework) so that it costs far less per chunk than the gateway; its CPU is
printed. A stream is *completed* when the response ends with ``data: [DONE]``
and the chunked terminator and carries no error event; anything else
(error event, early close, connect error, not finished by the deadline) is
*broken*. A response ends at its chunked terminator (the client closes the
socket). TTFB is the time from sending the request to the first ``data:``
byte. CPU per relayed chunk = gateway process-group CPU over the run / all
``data:`` events the clients received.

``--slow N`` adds N slow readers on a second simulator F (20,000 tokens,
no delay: about 3 MB per answer): each has a 4 KB receive buffer and reads
256 bytes once per second, so the gateway must hold the upstream back rather
than buffer. The gateway's RSS timeline shows whether memory stays flat.

    .venv/bin/python loadtest/streams.py [--streams 1000] [--slow 0] [--workers 1]
        [--ramp-s 1.0] [--deadline-s 60] [--load-sim]
"""

from __future__ import annotations

import argparse
import errno
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import common

BODY = b'{"model":"%s","stream":true,"messages":[{"role":"user","content":"Tell me a story."}]}'
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer %s\r\n"
    b"content-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)
MARK = b"data: "


@dataclass
class Stream:
    sock: socket.socket
    slow: bool
    started: float
    ttfb: float | None = None
    events: int = 0
    tail: bytes = b""
    error_event: bool = False
    closed: bool = False
    nbytes: int = 0

    def feed(self, data: bytes, now: float) -> None:
        self.nbytes += len(data)
        joined = self.tail + data
        new = joined.count(MARK) - self.tail.count(MARK)
        if new and self.ttfb is None:
            self.ttfb = now - self.started
        self.events += new
        if b'"error"' in joined or b"event: error" in joined:
            self.error_event = True
        self.tail = joined[-32:]

    @property
    def complete(self) -> bool:
        return (
            self.closed
            and not self.error_event
            and b"[DONE]" in self.tail
            and self.tail.endswith(b"0\r\n\r\n")
        )


@dataclass
class ClientRun:
    streams: list[Stream] = field(default_factory=list)
    connect_errors: int = 0
    wall: float = 0.0


def request_bytes(model: str) -> bytes:
    body = BODY % model.encode()
    return REQUEST % (common.BENCH_KEY.encode(), len(body), body)


def drive(port: int, normal: int, slow: int, ramp_s: float, deadline_s: float) -> ClientRun:
    """Open all streams (spread over ``ramp_s``) and read them until done or the deadline."""
    run = ClientRun()
    ep = select.epoll()
    live: dict[int, Stream] = {}
    slow_live: dict[int, Stream] = {}
    plan = [False] * normal + [True] * slow
    t0 = time.monotonic()
    deadline = t0 + deadline_s
    opened = 0
    next_slow_read = t0 + 1.0
    while opened < len(plan) or live or slow_live:
        now = time.monotonic()
        if now > deadline:
            break
        due = len(plan) if ramp_s <= 0 else min(len(plan), int(len(plan) * (now - t0) / ramp_s))
        while opened < due:
            is_slow = plan[opened]
            opened += 1
            s = socket.socket()
            if is_slow:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            try:
                s.connect((common.HOST, port))
                st = Stream(s, is_slow, time.monotonic())
                s.sendall(request_bytes("big" if is_slow else "long"))
            except OSError:
                run.connect_errors += 1
                s.close()
                continue
            s.setblocking(False)
            run.streams.append(st)
            if is_slow:
                slow_live[s.fileno()] = st
            else:
                live[s.fileno()] = st
                ep.register(s.fileno(), select.EPOLLIN)
        if slow_live and now >= next_slow_read:
            next_slow_read += 1.0
            for fd, st in list(slow_live.items()):
                if _read(st, 256, now):
                    del slow_live[fd]
                    st.sock.close()
        for fd, _ in ep.poll(0.01 if opened < len(plan) else 0.2):
            st = live[fd]
            if _read(st, 262_144, time.monotonic()):
                ep.unregister(fd)
                del live[fd]
                st.sock.close()
    for st in [*live.values(), *slow_live.values()]:
        st.sock.close()
    ep.close()
    run.wall = time.monotonic() - t0
    return run


def _read(st: Stream, size: int, now: float) -> bool:
    """One non-blocking read; True when the stream has ended (the caller closes it)."""
    try:
        data = st.sock.recv(size)
    except BlockingIOError:
        return False
    except OSError as exc:
        data = b""
        if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
            raise
    if data:
        st.feed(data, now)
        if not st.tail.endswith(b"0\r\n\r\n"):
            return False
    # EOF, or the chunked terminator: the gateway keeps a ``connection: close``
    # socket open ~40 s after the response (see README), so we close it ourselves.
    st.closed = True
    return True


def report(run: ClientRun, meter: common.Meter, args: argparse.Namespace) -> dict[str, Any]:
    normal = [s for s in run.streams if not s.slow]
    slow = [s for s in run.streams if s.slow]
    done = [s for s in normal if s.complete]
    ttfb = [1000 * s.ttfb for s in normal if s.ttfb is not None]
    events = sum(s.events for s in run.streams)
    gw_cpu = meter.cpu["gateway"]
    return {
        "streams": args.streams,
        "slow": args.slow,
        "completed": len(done),
        "broken": args.streams - len(done),
        "error_events": sum(s.error_event for s in normal),
        "connect_errors": run.connect_errors,
        "ttfb_p50_ms": common.percentile(ttfb, 50),
        "ttfb_p99_ms": common.percentile(ttfb, 99),
        "wall_s": run.wall,
        "chunks": events,
        "gw_cpu_s": gw_cpu,
        "gw_us_per_chunk": 1e6 * gw_cpu / max(1, events),
        "sim_cpu_s": meter.cpu["sim"],
        "client_cpu_s": meter.cpu["client"],
        "gw_peak_rss_mb": meter.peak_rss_mb.get("gateway", 0.0),
        "gw_peak_resident_mb": meter.peak_resident_mb.get("gateway"),
        "slow_bytes_read_mb": sum(s.nbytes for s in slow) / 1e6,
        "busy_pct": meter.busy_pct,
        "foreign_pct": meter.foreign_pct,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--slow", type=int, default=0, help="slow readers on the 3 MB route")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--ramp-s", type=float, default=1.0)
    p.add_argument("--deadline-s", type=float, default=60.0)
    p.add_argument("--buffer", type=int, default=8, help="gateway [server] stream_buffer")
    p.add_argument("--load-sim", action="store_true",
                   help="the long streams from the load-mode simulator (simulator/load.py: "
                   "the h11 one needs more CPU than the gateway at 1,000 streams)")  # fmt: skip
    args = p.parse_args()
    wd = common.workdir()
    if args.load_sim:
        from scenarios import start_load_sim

        sim = start_load_sim(wd, "sim-long", cpu=None, tokens=250, chunk_ms=40)
    else:
        sim = common.start_simulator(wd, "sim-long", tokens=250, chunk_ms=40)
    big = common.start_simulator(wd, "sim-big", tokens=20_000, chunk_ms=0)
    try:
        config = common.write_config(
            wd, {"long": sim.url, "big": big.url}, stream_buffer=args.buffer
        )
        gw = common.start_gateway(wd, config, args.workers)
        try:
            rss0 = common.group_rss_mb(gw.pgid)
            busy = common.wait_quiet()
            print(f"gateway idle RSS {rss0:.0f} MB; machine busy before start {busy:.0f}%")
            pgids = {"gateway": gw.pgid, "sim": sim.pgid, "sim_big": big.pgid}
            with common.Meter(pgids, sample_s=0.5, by_role=["gateway"]) as meter:
                run = drive(gw.port, args.streams, args.slow, args.ramp_s, args.deadline_s)
        finally:
            gw.stop()
    finally:
        sim.stop()
        big.stop()
    row = report(run, meter, args)
    for k, v in row.items():
        print(f"{k:>20}: {v:,.2f}" if isinstance(v, float) else f"{k:>20}: {v}")
    marks = sorted({int(t) for t, _ in meter.rss_timeline})
    timeline = {int(t): rss for t, rss in meter.rss_timeline}
    print("gateway RSS MB by second: " + " ".join(f"{t}s:{timeline[t]:.0f}" for t in marks))


if __name__ == "__main__":
    main()
