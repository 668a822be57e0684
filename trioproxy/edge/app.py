"""The ASGI application: ``create_app(settings)``.

The proxy endpoints are served as raw ASGI (the hot path skips a framework's
request machinery). Everything else (the
dashboard) is delegated to an optional inner ASGI app. The app's lifespan
opens the one app-lifetime nursery; background services (ledger writer,
cache writer, alert sender, ...) start in it with ``nursery.start`` so that
start-up fails loudly, and stop on shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import orjson
import trio

from trioproxy.breakers.local import LocalBreakers
from trioproxy.breakers.shared import SharedBreakers
from trioproxy.config.model import Settings
from trioproxy.core.types import Dialect
from trioproxy.dialects import DIALECTS
from trioproxy.edge.asgi_io import Receive, Scope, Send, send_whole
from trioproxy.edge.auth import KeyRing
from trioproxy.edge.count_tokens import PATH as COUNT_TOKENS_PATH
from trioproxy.edge.count_tokens import CountTokensHandler
from trioproxy.edge.embeddings import EmbeddingsHandler
from trioproxy.edge.handler import ChatHandler
from trioproxy.edge.metrics import Labels, MetricsSink, render
from trioproxy.edge.models import serve_models
from trioproxy.edge.services import NamedService, Service, Supervisor
from trioproxy.errors import CallerError, ErrorKind, GatewayError
from trioproxy.ledger.record import UsageSink
from trioproxy.ledger.sinks import AccessLogSink, LogSink
from trioproxy.pipeline.admission import Admission
from trioproxy.pipeline.caching import ResponseCache
from trioproxy.telemetry.tracing import Tracing
from trioproxy.upstream.transport import HttpTransport, Transport

log = logging.getLogger("trioproxy")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        transport: Transport | None = None,
        sink: UsageSink | None = None,
        services: Sequence[Service | NamedService] = (),
        inner: ASGIApp | None = None,
        admission: Admission | None = None,
        cache: ResponseCache | None = None,
        breakers: LocalBreakers | SharedBreakers | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.tracing = tracing or Tracing()
        self.settings = settings
        self.keys = KeyRing(settings.api_keys)
        self.transport = transport or HttpTransport(settings.providers)
        self.breakers = breakers or LocalBreakers(settings.breaker)
        self._ledger: UsageSink = sink or LogSink()
        self.metrics = MetricsSink(AccessLogSink(self._ledger))
        self.sink: UsageSink = self.metrics
        self.admission = admission
        self.chat = ChatHandler(
            settings,
            self.keys,
            self.transport,
            self.breakers,
            self.sink,
            admission,
            cache,
            self.tracing,
        )
        self.embeddings = EmbeddingsHandler(
            settings,
            self.keys,
            self.transport,
            self.breakers,
            self.sink,
            admission,
            cache,
            self.tracing,
        )
        self.count_tokens = CountTokensHandler(settings, self.keys, self.transport)
        self.cache = cache
        self.services = Supervisor(services)
        self.inner = inner
        self.ready = False
        """Started and not shutting down; :meth:`is_ready` also needs the required services."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif self.inner is not None:
            await self.inner(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/v1/chat/completions" or path == "/chat/completions":
            await self._post_only(method, "openai", scope, receive, send)
        elif path == "/v1/messages":
            await self._post_only(method, "anthropic", scope, receive, send)
        elif path == "/v1/responses" or path == "/responses":
            await self._post_only(method, "responses", scope, receive, send)
        elif path == "/v1/embeddings" or path == "/embeddings":
            if await self._is_post(method, "openai", send):
                await self.embeddings(scope, receive, send)
        elif path == COUNT_TOKENS_PATH:
            if await self._is_post(method, "anthropic", send):
                await self.count_tokens(scope, receive, send)
        elif (path == "/v1/models" or path.startswith("/v1/models/")) and method == "GET":
            await serve_models(self.settings, self.keys, scope, send)
        elif path == "/metrics" and method == "GET":
            await self._metrics(scope, send)
        elif path == "/healthz":
            await send_whole(send, 200, b'{"status":"ok"}', [])
        elif path == "/readyz":
            status = 200 if self.is_ready() else 503
            await send_whole(send, status, orjson.dumps(self.readiness()), [])
        elif self.inner is not None and not path.startswith("/v1/"):
            await self.inner(scope, receive, send)
        else:
            err = CallerError(ErrorKind.NOT_FOUND, f"Unknown path: {method} {path}")
            await send_whole(send, 404, DIALECTS["openai"].render_error(err), [])

    async def _post_only(
        self, method: str, dialect: Any, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if await self._is_post(method, dialect, send):
            await self.chat(dialect, scope, receive, send)

    @staticmethod
    async def _is_post(method: str, dialect: Dialect, send: Send) -> bool:
        """True for POST; otherwise answers 405 in the caller's dialect."""
        if method == "POST":
            return True
        err = CallerError(ErrorKind.METHOD_NOT_ALLOWED, f"Use POST, not {method}.")
        await send_whole(send, 405, DIALECTS[dialect].render_error(err), [])
        return False

    async def _metrics(self, scope: Scope, send: Send) -> None:
        try:
            key = self.keys.authenticate(dict(scope["headers"]))
            if not key.admin:
                raise CallerError(ErrorKind.ROUTE_FORBIDDEN, "/metrics needs an admin key.")
        except GatewayError as err:
            await send_whole(send, err.status, DIALECTS["openai"].render_error(err), [])
            return
        body = render(self.metrics, self._gauges())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain; version=0.0.4")],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _gauges(self) -> Iterator[tuple[str, str, Labels, float]]:
        yield "trioproxy_in_flight", "Requests being served.", (), self.in_flight
        for target, st in self.breakers.snapshot(trio.current_time()).items():
            yield (
                "trioproxy_breaker_open",
                "1 when the target's breaker is open.",
                (("target", target),),
                float(bool(st["open"])),
            )
        if self.cache is not None:
            w = self.cache.writer.statistics()
            yield "trioproxy_cache_write_queue", "Cache writes queued.", (), w.queued
            yield (
                "trioproxy_cache_write_dropped",
                "Cache writes skipped (queue full).",
                (),
                w.dropped_full,
            )
            if self.cache.semantic is not None:
                sem = self.cache.semantic.stats
                for name in ("lookups", "hits", "below_threshold", "embed_skipped"):
                    yield (
                        "trioproxy_semantic_" + name,
                        f"Semantic cache {name}.",
                        (),
                        getattr(sem, name),
                    )
        writer = getattr(self._ledger, "writer", None)
        if writer is not None:
            ls = writer.statistics()
            for name in ("buffered", "written", "spooled", "replayed", "lost"):
                yield ("trioproxy_ledger_" + name, f"Ledger records {name}.", (), getattr(ls, name))

    @property
    def in_flight(self) -> int:
        return self.chat.in_flight + self.embeddings.in_flight

    @property
    def ledger(self) -> UsageSink:
        """The sink behind the metrics and the access log (the ledger service in production)."""
        return self._ledger

    def is_ready(self) -> bool:
        return self.ready and self.services.ready()

    def readiness(self) -> dict[str, Any]:
        return {
            "ready": self.is_ready(),
            "services": self.services.status(),
            "in_flight": self.in_flight,
            "breakers": self.breakers.snapshot(trio.current_time()) if self.ready else {},
        }

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self.services.start_all(nursery)
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    raise
                self.ready = True
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
                self.ready = False
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                closer = getattr(self.transport, "aclose", None)
                if closer is not None:
                    await closer()
        await send({"type": "lifespan.shutdown.complete"})


def create_app(settings: Settings, **kwargs: Any) -> Gateway:
    return Gateway(settings, **kwargs)


__all__ = ["Gateway", "create_app"]
