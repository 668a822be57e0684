"""OpenTelemetry traces, optional (``pip install trioproxy[otel]``) and off unless configured.

One span per request (kind SERVER, ``"{operation} {model}"``) and one child span per
upstream attempt (kind CLIENT), with the GenAI semantic-convention attributes
(``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model`` / ``.id`` / ``.finish_reasons``, ``gen_ai.usage.*``) and the
gateway's own (``trioproxy.route``, ``.chain``, ``.attempt.index``, ``.cache``,
``.cost_usd``, ...). A caller's W3C ``traceparent`` / ``tracestate`` make the request span
a child of the caller's span; each attempt sends its own ``traceparent`` upstream.
Prompts and answers become attributes (``gen_ai.input.messages`` /
``gen_ai.output.messages``) only with ``telemetry.log_prompts``.

Spans are started and ended with explicit parents and times, never through the
``contextvars`` current span (trio tasks copy contexts, so "current" would lie). When
tracing is off, :meth:`Tracing.request` returns None and the request path does nothing
else. Exporting runs on the SDK's batch processor thread with a bounded queue (full:
spans are dropped and counted by the SDK), never on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from trioproxy.config.model import TelemetryConfig
from trioproxy.core.types import Usage
from trioproxy.providers.registry import semconv_name

AttrValue = str | bool | int | float | Sequence[str]
_PROPAGATED = (b"traceparent", b"tracestate")


class TelemetryUnavailable(RuntimeError):
    """Tracing is configured but the ``otel`` extra is not installed."""


def provider_name(kind: str, name: str) -> str:
    """Semconv ``gen_ai.provider.name``: the kind's (providers/registry.py), else ``name``."""
    return semconv_name(kind, name)


def usage_attributes(usage: Usage) -> dict[str, AttrValue]:
    """``gen_ai.usage.*`` of one usage value (input: every prompt token, cached or not)."""
    return {
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
        "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
        "gen_ai.usage.reasoning.output_tokens": usage.reasoning_tokens,
        "trioproxy.usage.estimated": usage.estimated,
    }


def _ns(wall_s: float) -> int:
    return int(wall_s * 1e9)


class Tracing:
    """The app's tracer; ``provider`` is an OpenTelemetry ``TracerProvider`` or None (off)."""

    def __init__(self, provider: Any = None, *, log_prompts: bool = False) -> None:
        self.provider = provider
        self.log_prompts = log_prompts
        self._tracer: Any = None
        self._propagator: Any = None
        if provider is not None:
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )

            self._tracer = provider.get_tracer("trioproxy")
            self._propagator = TraceContextTextMapPropagator()

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def request(
        self, operation: str, model: str, headers: Mapping[bytes, bytes],
        attributes: Mapping[str, AttrValue],
    ) -> RequestTrace | None:  # fmt: skip
        """A request span, child of the caller's ``traceparent`` if any; None when off."""
        if self._tracer is None:
            return None
        from opentelemetry.trace import SpanKind

        carrier = {k.decode("latin-1"): headers[k].decode("latin-1")
                   for k in _PROPAGATED if k in headers}  # fmt: skip
        parent = self._propagator.extract(carrier) if carrier else None
        attrs = {"gen_ai.operation.name": operation, "gen_ai.request.model": model, **attributes}
        span = self._tracer.start_span(
            f"{operation} {model}", context=parent, kind=SpanKind.SERVER, attributes=attrs
        )
        return RequestTrace(self, span, operation)

    @classmethod
    def from_config(cls, cfg: TelemetryConfig) -> Tracing:
        """OTLP/HTTP export to ``cfg.otlp_endpoint``; off (no provider) when it is unset."""
        if cfg.otlp_endpoint is None:
            return cls(None, log_prompts=cfg.log_prompts)
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise TelemetryUnavailable(
                "telemetry.otlp_endpoint is set but OpenTelemetry is not installed: "
                "pip install 'trioproxy[otel]'"
            ) from exc
        provider = TracerProvider(resource=Resource.create({"service.name": cfg.service_name}))
        exporter = OTLPSpanExporter(endpoint=cfg.otlp_endpoint, timeout=cfg.export_timeout_s)
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=cfg.queue_size))
        return cls(provider, log_prompts=cfg.log_prompts)

    def shutdown(self) -> None:
        """Flush and stop the exporter (blocking: call from a thread)."""
        if self.provider is not None and hasattr(self.provider, "shutdown"):
            self.provider.shutdown()


class RequestTrace:
    """The spans of one request: the request span and its attempts' child spans."""

    __slots__ = ("_attempts", "_operation", "_span", "_tracing")

    def __init__(self, tracing: Tracing, span: Any, operation: str) -> None:
        self._tracing = tracing
        self._span = span
        self._operation = operation
        self._attempts: dict[int, Any] = {}

    @property
    def log_prompts(self) -> bool:
        return self._tracing.log_prompts

    def set(self, attributes: Mapping[str, AttrValue]) -> None:
        self._span.set_attributes(dict(attributes))

    def start_attempt(
        self, index: int, deployment: str, attributes: Mapping[str, AttrValue]
    ) -> tuple[tuple[str, str], ...]:
        """Start attempt ``index``'s span; returns the headers that carry it upstream."""
        from opentelemetry.trace import SpanKind, set_span_in_context

        attrs = {"gen_ai.operation.name": self._operation, "gen_ai.request.model": deployment,
                 "trioproxy.attempt.index": index, **attributes}  # fmt: skip
        span = self._tracing._tracer.start_span(
            f"{self._operation} {deployment}", context=set_span_in_context(self._span),
            kind=SpanKind.CLIENT, attributes=attrs,
        )  # fmt: skip
        self._attempts[index] = span
        carrier: dict[str, str] = {}
        self._tracing._propagator.inject(carrier, context=set_span_in_context(span))
        return tuple(carrier.items())

    def end_attempt(
        self, index: int, attributes: Mapping[str, AttrValue], *, error: str | None,
        end_wall_s: float | None = None,
    ) -> None:  # fmt: skip
        span = self._attempts.pop(index, None)
        if span is None:
            return
        _finish(span, attributes, error, end_wall_s)

    def end(self, attributes: Mapping[str, AttrValue], *, error: str | None) -> None:
        for index in list(self._attempts):
            self.end_attempt(index, {"trioproxy.attempt.outcome": "cancelled"}, error=None)
        _finish(self._span, attributes, error, None)


def _finish(span: Any, attributes: Mapping[str, AttrValue], error: str | None,
            end_wall_s: float | None) -> None:  # fmt: skip
    from opentelemetry.trace import Status, StatusCode

    span.set_attributes(dict(attributes))
    if error is not None:
        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=None if end_wall_s is None else _ns(end_wall_s))


def now_wall() -> float:
    return time.time()


__all__ = [
    "RequestTrace",
    "TelemetryUnavailable",
    "Tracing",
    "provider_name",
    "usage_attributes",
]
