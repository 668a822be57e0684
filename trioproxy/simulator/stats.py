"""What the simulator counts, in process and as ``GET /_sim/stats``.

Accounting rules, exactly:

* ``requests`` / ``by_path`` count every request when it has been read.
* ``by_status`` counts every response head written (hung requests and
  requests whose client left before the head have no status).
* ``input_tokens`` counts a chat request's prompt tokens when the simulator
  commits to a 200 answer, i.e. just before writing its response head: after
  auth, validation and every fault stage (``hang``, ``ttft_ms``, ``status``,
  ``fail_first``). Error answers and hung requests add 0.
* ``cache_read_tokens``, ``cache_write_5m_tokens``, ``cache_write_1h_tokens`` (parts of
  ``input_tokens``) and ``reasoning_tokens`` (hidden output, billed, never "delivered") count
  what the 200 answer reports, at the same moment as ``input_tokens``.
* ``output_tokens`` counts tokens whose bytes were fully written to the socket:
  per content chunk for streams (one chunk = one token), the whole answer once
  the body is written for non-stream answers. A chunk cut by a reset, a client
  close or a failed write is not counted.

A request carrying an ``x-sim-id`` header also gets a :class:`RequestTrace`
(the newest :data:`MAX_TRACES` are kept). Times are ``trio.current_time()``;
the ``*_wall`` twins are ``time.time()``. ``closed_at`` is set when the client
closed the connection (EOF or a failed write) while its request was in flight,
i.e. before the response was complete; it stays ``None`` for finished answers.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import trio

MAX_TRACES = 10_000

ExchangeEnd = Literal["pending", "complete", "error", "client_closed", "reset", "hung"]


@dataclass(slots=True)
class RequestTrace:
    sim_id: str
    path: str
    arrived_at: float
    arrived_wall: float
    first_byte_at: float | None = None
    first_byte_wall: float | None = None
    closed_at: float | None = None
    closed_wall: float | None = None
    finished_at: float | None = None
    status: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    outcome: ExchangeEnd = "pending"
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0


class Exchange:
    """Accounting for one request in flight; every counter goes through here."""

    __slots__ = ("_stats", "done", "output_tokens", "trace")

    def __init__(self, stats: SimStats, trace: RequestTrace | None) -> None:
        self._stats = stats
        self.trace = trace
        self.output_tokens = 0
        self.done = False

    def head_sent(self, status: int, input_tokens: int = 0) -> None:
        stats = self._stats
        stats.by_status[status] = stats.by_status.get(status, 0) + 1
        stats.input_tokens += input_tokens
        if (trace := self.trace) is not None:
            trace.status = status
            trace.input_tokens = input_tokens
            trace.first_byte_at = trio.current_time()
            trace.first_byte_wall = time.time()

    def billed(self, read: int, write_5m: int, write_1h: int, reasoning: int) -> None:
        """The prompt-cache split and the hidden reasoning a 200 answer reports."""
        stats = self._stats
        stats.cache_read_tokens += read
        stats.cache_write_5m_tokens += write_5m
        stats.cache_write_1h_tokens += write_1h
        stats.reasoning_tokens += reasoning
        if (trace := self.trace) is not None:
            trace.cache_read_tokens = read
            trace.cache_write_5m_tokens = write_5m
            trace.cache_write_1h_tokens = write_1h
            trace.reasoning_tokens = reasoning

    def delivered(self, tokens: int) -> None:
        self.output_tokens += tokens
        self._stats.output_tokens += tokens
        if self.trace is not None:
            self.trace.output_tokens += tokens

    def peer_closed(self) -> None:
        if self.done:
            return
        if (trace := self.trace) is not None:
            trace.closed_at = trio.current_time()
            trace.closed_wall = time.time()
        self.finish("client_closed")

    def finish(self, outcome: ExchangeEnd) -> None:
        if self.done:
            return
        self.done = True
        self._stats.active -= 1
        if (trace := self.trace) is not None:
            trace.outcome = outcome
            trace.finished_at = trio.current_time()
            self._stats._trace_done()

    def hanging(self) -> None:
        if self.trace is not None:
            self.trace.outcome = "hung"


class SimStats:
    """Counters of one :class:`~trioproxy.simulator.Simulator`; see the module doc."""

    def __init__(self) -> None:
        self.active = 0
        """Requests in flight; survives :meth:`reset`."""
        self._done_event = trio.Event()
        self.reset()

    def reset(self) -> None:
        """Zero every counter and drop the traces (requests in flight stay counted)."""
        self.requests = 0
        self.by_path: dict[str, int] = {}
        self.by_status: dict[int, int] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_5m_tokens = 0
        self.cache_write_1h_tokens = 0
        self.reasoning_tokens = 0
        self.connections = 0
        self.internal_errors = 0
        self.traces: dict[str, RequestTrace] = {}

    def begin(self, path: str, sim_id: str | None) -> Exchange:
        self.requests += 1
        self.by_path[path] = self.by_path.get(path, 0) + 1
        self.active += 1
        trace = None
        if sim_id is not None:
            trace = RequestTrace(sim_id, path, trio.current_time(), time.time())
            self.traces.pop(sim_id, None)
            self.traces[sim_id] = trace
            if len(self.traces) > MAX_TRACES:
                del self.traces[next(iter(self.traces))]
        return Exchange(self, trace)

    def trace(self, sim_id: str) -> RequestTrace | None:
        return self.traces.get(sim_id)

    async def wait_done(self, sim_id: str) -> RequestTrace:
        """Wait until the request with this ``x-sim-id`` has finished, by any outcome.

        A finished request has ``finished_at`` set, and ``closed_at`` too when the
        client went away first. Bound the wait with ``trio.fail_after``.
        """
        while True:
            trace = self.traces.get(sim_id)
            if trace is not None and trace.finished_at is not None:
                return trace
            await self._done_event.wait()

    def _trace_done(self) -> None:
        self._done_event.set()
        self._done_event = trio.Event()

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_5m_tokens": self.cache_write_5m_tokens,
            "cache_write_1h_tokens": self.cache_write_1h_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "connections": self.connections,
            "active": self.active,
            "internal_errors": self.internal_errors,
            "traces": {k: asdict(v) for k, v in self.traces.items()},
        }


__all__ = ["MAX_TRACES", "Exchange", "ExchangeEnd", "RequestTrace", "SimStats"]
