"""The gateway's one error vocabulary.

Every failure that can leave the gateway is a :class:`GatewayError` carrying a
closed :class:`ErrorKind`. Kinds are grouped by who is at fault, and each kind
fixes the HTTP status and the type names used in both client dialects::

    GatewayError
    ├── CallerError      the request is wrong: fix the request        (4xx)
    ├── PolicyError      the request is fine but not allowed now      (429 / 503)
    ├── ProviderError    every upstream target failed or refused      (502 / 504 / passthrough)
    └── InternalError    a bug in the gateway                          (500)

Errors are classified by HTTP status and exception type at the boundary where
they arise, never by searching message text. They are rendered into the
caller's dialect by :func:`trioproxy.dialects.render_error`.
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass


class FaultDomain(enum.Enum):
    CALLER = "caller"
    POLICY = "policy"
    PROVIDER = "provider"
    GATEWAY = "gateway"


@dataclass(frozen=True, slots=True)
class _KindInfo:
    domain: FaultDomain
    status: int
    openai_type: str
    anthropic_type: str


class ErrorKind(enum.Enum):
    """Closed set of error kinds; value = the machine-readable ``code``."""

    # caller
    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    BODY_TOO_LARGE = "body_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    """A body declared as something other than JSON (``Content-Type``)."""
    MISSING_API_KEY = "missing_api_key"
    INVALID_API_KEY = "invalid_api_key"
    ROUTE_FORBIDDEN = "route_forbidden"
    UNKNOWN_ROUTE = "model_not_found"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONTEXT_TOO_LONG = "context_length_exceeded"
    # policy
    BUDGET_EXCEEDED = "budget_exceeded"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "gateway_overloaded"
    # provider
    UPSTREAM_REJECTED = "upstream_rejected"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_RATE_LIMITED = "upstream_rate_limited"
    """Every target tried answered 429: the caller backs off (``Retry-After``) as it would
    from the provider itself."""
    STREAM_INTERRUPTED = "stream_interrupted"
    # gateway
    INTERNAL = "internal_error"
    SHUTTING_DOWN = "gateway_shutting_down"
    """The drain deadline ended the request (SIGTERM, ``server.shutdown_grace_s``)."""

    @property
    def info(self) -> _KindInfo:
        return _INFO[self]

    @property
    def status(self) -> int:
        return _INFO[self].status

    @property
    def domain(self) -> FaultDomain:
        return _INFO[self].domain


_C, _P, _U, _G = FaultDomain.CALLER, FaultDomain.POLICY, FaultDomain.PROVIDER, FaultDomain.GATEWAY
_INFO: dict[ErrorKind, _KindInfo] = {
    ErrorKind.INVALID_JSON: _KindInfo(_C, 400, "invalid_request_error", "invalid_request_error"),
    ErrorKind.INVALID_REQUEST: _KindInfo(_C, 400, "invalid_request_error", "invalid_request_error"),
    ErrorKind.BODY_TOO_LARGE: _KindInfo(_C, 413, "invalid_request_error", "request_too_large"),
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: _KindInfo(
        _C, 415, "invalid_request_error", "invalid_request_error"
    ),
    ErrorKind.MISSING_API_KEY: _KindInfo(_C, 401, "authentication_error", "authentication_error"),
    ErrorKind.INVALID_API_KEY: _KindInfo(_C, 401, "authentication_error", "authentication_error"),
    ErrorKind.ROUTE_FORBIDDEN: _KindInfo(_C, 403, "permission_error", "permission_error"),
    ErrorKind.UNKNOWN_ROUTE: _KindInfo(_C, 404, "invalid_request_error", "not_found_error"),
    ErrorKind.NOT_FOUND: _KindInfo(_C, 404, "invalid_request_error", "not_found_error"),
    ErrorKind.METHOD_NOT_ALLOWED: _KindInfo(
        _C, 405, "invalid_request_error", "invalid_request_error"
    ),
    ErrorKind.CONTEXT_TOO_LONG: _KindInfo(
        _C, 400, "invalid_request_error", "invalid_request_error"
    ),
    ErrorKind.BUDGET_EXCEEDED: _KindInfo(_P, 429, "budget_exceeded", "rate_limit_error"),
    ErrorKind.RATE_LIMITED: _KindInfo(_P, 429, "rate_limit_error", "rate_limit_error"),
    ErrorKind.OVERLOADED: _KindInfo(_P, 503, "server_error", "overloaded_error"),
    ErrorKind.UPSTREAM_REJECTED: _KindInfo(
        _U, 400, "invalid_request_error", "invalid_request_error"
    ),
    ErrorKind.UPSTREAM_UNAVAILABLE: _KindInfo(_U, 502, "server_error", "api_error"),
    ErrorKind.UPSTREAM_TIMEOUT: _KindInfo(_U, 504, "server_error", "api_error"),
    ErrorKind.UPSTREAM_RATE_LIMITED: _KindInfo(_U, 429, "rate_limit_error", "rate_limit_error"),
    ErrorKind.STREAM_INTERRUPTED: _KindInfo(_U, 502, "server_error", "api_error"),
    ErrorKind.INTERNAL: _KindInfo(_G, 500, "server_error", "api_error"),
    ErrorKind.SHUTTING_DOWN: _KindInfo(_G, 503, "server_error", "overloaded_error"),
}


class GatewayError(Exception):
    """An error with a kind, a human message and optional details.

    ``status`` defaults to the kind's status; UPSTREAM_REJECTED carries the
    provider's own 4xx status. ``retry_after`` (seconds) becomes a header.
    ``details`` are extra fields merged into the error object (e.g. budget,
    spend and limit for BUDGET_EXCEEDED).
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status if status is not None else kind.status
        self.param = param
        self.retry_after = retry_after
        self.details = details or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind.name}, {self.message!r}, status={self.status})"


class CallerError(GatewayError):
    """The request is malformed, unauthenticated or names something unknown."""


class PolicyError(GatewayError):
    """A budget, rate limit or load-shedding rule refused the request."""


class ProviderError(GatewayError):
    """Upstream providers failed, timed out or refused the request."""


class InternalError(GatewayError):
    """A bug in the gateway; never used for caller mistakes."""


def invalid(message: str, param: str | None = None) -> CallerError:
    return CallerError(ErrorKind.INVALID_REQUEST, message, param=param)


def postgres_errors() -> tuple[type[BaseException], ...]:
    """psycopg's errors and its pool's timeout once psycopg is loaded, else none (nothing
    can raise them before). For ``except`` clauses, whose expression is evaluated only
    when an exception is being matched: a gateway on SQLite never imports psycopg (~10 MB
    of RSS at start)."""
    pg, pool = sys.modules.get("psycopg"), sys.modules.get("psycopg_pool")
    return (*((pg.Error,) if pg else ()), *((pool.PoolTimeout,) if pool else ()))


__all__ = [
    "CallerError",
    "ErrorKind",
    "FaultDomain",
    "GatewayError",
    "InternalError",
    "PolicyError",
    "ProviderError",
    "invalid",
    "postgres_errors",
]
