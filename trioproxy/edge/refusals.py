"""Requests refused before they are routed: one access line each and a count in ``/metrics``.

A request that is routed produces usage records, and the access line and the request metrics
come from them (:mod:`trioproxy.ledger.sinks`, :mod:`trioproxy.edge.metrics`). A request
refused before that (a bad or missing key, a malformed body, an unknown model, a method or path
the gateway does not serve, a body over the cap, a full worker, a request the HTTP server
itself refuses, a bug met before routing: a 500, outcome ``error``) produces no record. Those refusals are raised as :class:`Refused` and answered
in one place (:meth:`trioproxy.edge.app.Gateway._http`; the server's own through
:meth:`Refusals.server_refusal`), which calls :meth:`Refusals.record`. Each is answered with an
``x-request-id`` (the endpoint's, else one given there) that its access line names.

The count is ``trioproxy_rejected_requests_total{kind, status}``: the error kind (a fixed
enum, never the model name or path) and the status. The access line is rate-limited per worker
(a token bucket, :data:`LINES_PER_S` with bursts of :data:`BURST`), so a flood of bad requests
cannot flood the journal: a line that does not fit is dropped and counted
(``trioproxy_rejected_lines_dropped_total``), and the next line logged says how many were
dropped before it (``dropped_before``). The count is never sampled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import trio

from trioproxy.core import endpoints
from trioproxy.core.ids import request_id
from trioproxy.core.types import Dialect
from trioproxy.dialects import DIALECTS
from trioproxy.edge.asgi_io import Scope
from trioproxy.edge.metrics import Metrics
from trioproxy.errors import ErrorKind, GatewayError
from trioproxy.ledger.sinks import access_log

LINES_PER_S = 50.0
"""Refusal access lines per second per worker, sustained."""
BURST = 200
"""Refusal access lines a worker may log at once before the rate applies."""
_INTERNAL = ErrorKind.INTERNAL.value
"""A bug met before routing (the last resort's 500) is logged here too, as an error."""
PATH_CHARS = 128
"""The request path is logged cut to this length (it is the client's text)."""


class Refused(Exception):
    """A request refused before routing: the error to send in ``dialect`` (with ``headers``)
    and what is known of the caller (the key's name and team once the key is resolved); the
    request id is the ``x-request-id`` in ``headers``, when the request was given one."""

    def __init__(
        self, error: GatewayError, dialect: Dialect, headers: Sequence[tuple[bytes, bytes]] = (),
        *, key: str | None = None, team: str | None = None, body: bytes | None = None,
    ) -> None:  # fmt: skip
        super().__init__(error.message)
        self.body = body
        """The error already rendered in ``dialect`` (a refusal answered from precomputed
        bytes), else None: rendered when sent."""
        self.error = error
        self.dialect = dialect
        self.headers = headers
        self.key = key
        self.team = team

    @property
    def request_id(self) -> str | None:
        """The ``x-request-id`` among :attr:`headers`, if the request was given one."""
        return next((v.decode() for k, v in self.headers if k == b"x-request-id"), None)

    def name_request(self) -> None:
        """Give it a request id of its own if it had none (a refusal by path or method,
        before an endpoint gave the request its id): every answer names its request."""
        if self.request_id is None:
            self.headers = (request_id_header(request_id()), *self.headers)


def request_id_header(rid: str) -> tuple[bytes, bytes]:
    """The header naming a request's id in its answer (every answer has one)."""
    return (b"x-request-id", rid.encode())


class Refusals:
    """Counts every refusal; logs it as an access line while the rate allows."""

    def __init__(
        self, metrics: Metrics, *, lines_per_s: float = LINES_PER_S, burst: int = BURST
    ) -> None:
        self.metrics = metrics
        self.lines_per_s = lines_per_s
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()
        self.dropped = 0
        """Lines dropped since the last one logged."""

    def _take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.lines_per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def record(
        self, *, dialect: Dialect | None, method: str | None, path: str | None, status: int,
        kind: str, key: str | None = None, team: str | None = None,
        request_id: str | None = None, duration_ms: float | None = None,
    ) -> None:  # fmt: skip
        self.metrics.rejected_request(kind, status)
        if not access_log.isEnabledFor(logging.INFO):
            return
        if not self._take():
            self.dropped += 1
            self.metrics.rejected_line_dropped()
            return
        dropped, self.dropped = self.dropped, 0
        access_log.info("request", extra={"fields": {
            "request_id": request_id, "key": key, "team": team, "dialect": dialect,
            "method": method, "path": None if path is None else path[:PATH_CHARS],
            "status": status, "outcome": "error" if kind == _INTERNAL else "refused",
            "error_kind": kind,
            "duration_ms": None if duration_ms is None else round(duration_ms, 1),
            "dropped_before": dropped,
        }})  # fmt: skip

    def refused(self, scope: Scope, refusal: Refused) -> None:
        """Record ``refusal`` of the request ``scope``."""
        err = refusal.error
        t0 = scope.get("trioproxy.t0")
        self.record(
            dialect=refusal.dialect, method=scope.get("method"), path=scope.get("path"),
            status=err.status, kind=err.kind.value, key=refusal.key, team=refusal.team,
            request_id=refusal.request_id,
            duration_ms=None if t0 is None else (trio.current_time() - t0) * 1000,
        )  # fmt: skip

    def server_refusal(
        self, method: str | None, path: str | None, status: int, message: str
    ) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
        """A refusal by the HTTP server itself (malformed request, timeout, cap): its
        headers (a request id, as every answer has) and its body in the dialect of the
        endpoint it was sent to (OpenAI when unknown); recorded as a refusal."""
        kinds = {413: ErrorKind.BODY_TOO_LARGE, 500: ErrorKind.INTERNAL, 503: ErrorKind.OVERLOADED}
        kind = kinds.get(status, ErrorKind.INVALID_REQUEST)
        dialect: Dialect = "openai"
        if path is not None and path.startswith(endpoints.MESSAGES):
            dialect = "anthropic"
        elif path in (endpoints.RESPONSES, "/responses"):
            dialect = "responses"
        rid = request_id()
        self.record(dialect=dialect, method=method, path=path, status=status,
                    kind=kind.value, request_id=rid)  # fmt: skip
        err = GatewayError(kind, message, status=status)
        return (request_id_header(rid),), DIALECTS[dialect].render_error(err)


__all__ = ["BURST", "LINES_PER_S", "Refusals", "Refused", "request_id_header"]
