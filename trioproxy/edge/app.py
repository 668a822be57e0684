"""The ASGI application: ``create_app(settings)``.

The proxy endpoints are served as raw ASGI (the hot path skips a framework's
request machinery) by the data-plane server (``trioproxy/httpd``). The
control plane (the dashboard, ``inner``, and ``/metrics``) is served on the
admin port by ``server/admin.py``; ``/healthz`` and ``/readyz`` answer on both
(``edge/probes.py`` answers them and ``/metrics``).
The app's lifespan opens the one app-lifetime nursery; background services
(ledger writer, cache writer, alert sender, ...) start in it with
``nursery.start`` so that start-up fails loudly, and stop on shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import trio

from trioproxy.admin.throttle import Throttle
from trioproxy.breakers.local import LocalBreakers
from trioproxy.breakers.shared import SharedBreakers
from trioproxy.config.model import Settings
from trioproxy.core import endpoints
from trioproxy.core.types import Dialect
from trioproxy.edge.admin_guard import KeyGuard, LocalKeyGuard
from trioproxy.edge.asgi_io import Receive, Scope, Send
from trioproxy.edge.auth import KeyRing
from trioproxy.edge.count_tokens import CountTokensHandler
from trioproxy.edge.embeddings import EmbeddingsHandler
from trioproxy.edge.handler import ChatHandler
from trioproxy.edge.intake import Interrupts, slots_for
from trioproxy.edge.metrics import Metrics, MetricsSink
from trioproxy.edge.models import caller_dialect, serve_models
from trioproxy.edge.part_stats import sample_parts
from trioproxy.edge.probes import READ, control, flush_forever, sample_forever
from trioproxy.edge.refusals import Refusals, Refused
from trioproxy.edge.reload import ReloadSource, reload_from
from trioproxy.edge.respond import send_error
from trioproxy.edge.services import NamedService, Service, Supervisor
from trioproxy.errors import CallerError, ErrorKind
from trioproxy.ledger.record import UsageSink
from trioproxy.ledger.service import LOSING_S
from trioproxy.ledger.sinks import AccessLogSink, LogSink
from trioproxy.pipeline.admission import Admission
from trioproxy.pipeline.caching import ResponseCache
from trioproxy.pipeline.features import FeatureCap
from trioproxy.pipeline.progress import StreamProgress
from trioproxy.store.state_dir import StateWatch, disk_condition
from trioproxy.telemetry.tracing import Tracing
from trioproxy.upstream.transport import HttpTransport, Transport

log = logging.getLogger("trioproxy")
DRAINING = "draining"
"""Why a draining gateway is not ready (its ``/readyz`` detail and its worker's ready report)."""

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RETIRE_AFTER_S = 3600.0
"""When the transport of a replaced config is closed (its requests are over by then)."""


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
        self.keys = KeyRing(settings.api_keys, known_ttl_s=settings.server.key_cache_ttl_s)
        self.key_guard: KeyGuard = LocalKeyGuard(self._key_throttle)
        """Counts the admin port's wrong admin keys per address (``/metrics``; the admin API
        and the dashboard's sign-ins once the dashboard mounts and puts its own here)."""
        self.transport = transport or HttpTransport(settings.providers)
        self.breakers = breakers or LocalBreakers(settings.breaker)
        self._ledger: UsageSink = sink or LogSink()
        self.state_watch: StateWatch | None = None
        """The state directory's store files as found once started (server/factory.py sets
        it and runs its check): their deletion is a warning of ``/readyz``."""
        self.prometheus = Metrics()
        self.refusals = Refusals(self.prometheus)
        """Requests refused before routing: their access line and count."""
        self.metrics = MetricsSink(AccessLogSink(self._ledger), self.prometheus)
        self.breakers.on_transition = self.prometheus.breaker_transition
        self.sink: UsageSink = self.metrics
        self.admission = admission
        self.slots = slots_for(settings)
        """One worker's in-flight slots and per-key caps, shared by every proxy endpoint."""
        self.interrupts = Interrupts()
        self.features = FeatureCap()
        """A team's distinct features per hour, for every endpoint, across reloads."""
        self.progress = StreamProgress(self.sink)
        """The streams being served (every chat handler's, across reloads)."""
        self.cache = cache
        self.chat, self.embeddings, self.count_tokens = self._handlers(
            settings, self.keys, self.transport, admission
        )
        sampler = NamedService("metrics-sampler", partial(sample_forever, self), required=False)
        flusher = NamedService("metrics-flusher", partial(flush_forever, self), required=False)
        self.services = Supervisor([*services, sampler, flusher])
        self.inner = inner
        self.ready = False
        """Started and not shut down; :meth:`is_ready` also needs the required services."""
        self.drain_started = trio.Event()
        """Set when the server starts draining (:meth:`start_drain`; the worker's ready
        report is written at once)."""
        self.reload_source: ReloadSource | None = None
        self._reloading = trio.Lock()
        """One reload at a time: a second SIGHUP's file is read after the first is applied
        (else the older file, slower to set up, could be applied last)."""
        self._nursery: trio.Nursery | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch by path; a request refused before routing (:class:`Refused`, from here
        or any endpoint) is answered and recorded here, the one place for all of them."""
        try:
            await self._dispatch(scope, receive, send)
        except Refused as refusal:
            refusal.name_request()
            await send_error(send, refusal.dialect, refusal.error, refusal.headers, refusal.body)
            self.refusals.refused(scope, refusal)

    def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The endpoint's coroutine for the path, or :class:`Refused` at once. A plain
        function, as are the steps down to ``Endpoint.serve``: a request's await chain holds
        no frame for the dispatch (each is ~250 bytes per open request, and each level is
        passed through at every resumption of the request's task)."""
        path: str = scope["path"]
        method: str = scope["method"]
        if b"%" in scope["raw_path"] and not path.startswith("/v1/models/"):
            # routed as sent: "/v1/chat%2Fcompletions" is not the endpoint a filter in front
            # of the gateway saw it as (a model id may need its escapes, /v1/models/{id})
            err = CallerError(
                ErrorKind.NOT_FOUND,
                f"Unknown path: {method} {scope['raw_path'].decode('latin-1')} (a percent-"
                "encoded path is not decoded for routing)",
            )
            raise Refused(err, caller_dialect(scope["headers"]))
        if path == endpoints.CHAT_COMPLETIONS or path == "/chat/completions":
            return self._post_only(method, "openai", scope, receive, send)
        if path == endpoints.MESSAGES:
            return self._post_only(method, "anthropic", scope, receive, send)
        if path == endpoints.RESPONSES or path == "/responses":
            return self._post_only(method, "responses", scope, receive, send)
        if path.startswith("/v1/responses/"):  # retrieve, delete, cancel, input_items
            err = CallerError(
                ErrorKind.NOT_FOUND,
                "This gateway serves the Responses API statelessly and stores no responses: "
                f"{method} {path} is not supported.",
            )
            raise Refused(err, "responses")
        if path == endpoints.EMBEDDINGS or path == "/embeddings":
            _post_only(method, "openai")
            return self.embeddings(scope, receive, send)
        if path == endpoints.COUNT_TOKENS:
            _post_only(method, "anthropic")
            return self.count_tokens(scope, receive, send)
        if (path == "/v1/models" or path.startswith("/v1/models/")) and method in READ:
            return serve_models(self.settings, self.keys, scope, send)
        return self._probe(scope, receive, send)

    async def _probe(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/healthz`` or ``/readyz`` on the data port, else 404."""
        if not await control(self, scope, receive, send, probes_only=True):
            err = CallerError(
                ErrorKind.NOT_FOUND, f"Unknown path: {scope['method']} {scope['path']}"
            )
            raise Refused(err, caller_dialect(scope["headers"]))

    def interrupt(self) -> None:
        """The drain deadline passed: end every request still running (see Interrupts)."""
        self.interrupts.interrupt_all()

    def _post_only(
        self, method: str, dialect: Any, scope: Scope, receive: Receive, send: Send
    ) -> Awaitable[None]:
        _post_only(method, dialect)
        return self.chat(dialect, scope, receive, send)

    def _key_throttle(self) -> Throttle:
        cfg = self.settings.dashboard
        return Throttle(cfg.login_attempts, cfg.login_window_s)

    def sample_metrics(self) -> None:
        """Gauges and mirrored counters from this worker's parts (every scrape, and every
        :data:`~trioproxy.edge.metrics.SAMPLE_INTERVAL_S` by the sampler service)."""
        parts = sample_parts(self.cache, self._ledger, self.admission)
        self.prometheus.sample(
            in_flight=self.in_flight, open_streams=len(self.progress),
            relay_buffered=self.progress.buffered(),
            breakers={t: bool(st["open"]) for t, st in self.breakers.snapshot(
                trio.current_time()).items()},
            ledger_queue=parts.ledger_queue, journal_bytes=parts.journal_bytes,
            cache_write_queue=parts.cache_write_queue, alert_queue=parts.alert_queue,
            counts=parts.counts,
        )  # fmt: skip

    @property
    def in_flight(self) -> int:
        return self.slots.in_flight

    @property
    def ledger(self) -> UsageSink:
        """The sink behind the metrics and the access log (the ledger service in production)."""
        return self._ledger

    async def reload(self) -> bool:
        """Re-read and validate the config file, then apply it at once to every new request:
        keys, routes, chains, prices, budgets, cache settings (:mod:`.reload`). Requests in
        flight finish on the config they started with. An invalid file is logged with all its
        problems and changes nothing. Returns whether the new config was applied."""
        if self.reload_source is None:
            log.warning("reload: nothing to reload (no config file)")
            return False
        async with self._reloading:
            return await reload_from(self, self.reload_source)

    def _handlers(
        self, settings: Settings, keys: KeyRing, transport: Transport, admission: Admission | None
    ) -> tuple[ChatHandler, EmbeddingsHandler, CountTokensHandler]:
        """The proxy endpoints over these parts (at the start, and at each reload)."""
        parts = (settings, keys, transport, self.breakers, self.sink, admission, self.cache,
                 self.tracing)  # fmt: skip
        slots, interrupts, features = self.slots, self.interrupts, self.features
        chat = ChatHandler(*parts, slots=slots, interrupts=interrupts, features=features,
                           progress=self.progress)  # fmt: skip
        chat.on_bad_usage = self.prometheus.upstream_bad_usage
        embeddings = EmbeddingsHandler(*parts, slots=slots, interrupts=interrupts,
                                       features=features)  # fmt: skip
        count_tokens = CountTokensHandler(
            settings, keys, transport, self.breakers, self.sink, tracing=self.tracing,
            slots=slots, interrupts=interrupts, features=features,
        )  # fmt: skip
        for handler in (chat, embeddings, count_tokens):
            handler.intake.cannot_record = self.cannot_record
        return chat, embeddings, count_tokens

    def cannot_record(self) -> bool:
        """The ledger cannot record what is served now (its memory hold for a state disk
        that refuses writes is nearly full): new requests get a 503 until records drain."""
        cannot = getattr(self._ledger, "cannot_record", None)
        return cannot is not None and bool(cannot())

    def apply(
        self, settings: Settings, admission: Admission | None, new_transport: Transport | None
    ) -> None:
        """Swap the request-path parts in one step (no checkpoint: atomic for new requests);
        ``new_transport`` replaces the transport when the providers changed."""
        old_transport = self.transport
        transport = new_transport or old_transport
        keys = self.keys.reloaded(settings.api_keys)  # the admin store stays its source
        handlers = self._handlers(settings, keys, transport, admission)
        self.settings, self.keys, self.transport = settings, keys, transport
        self.admission = admission
        self.chat, self.embeddings, self.count_tokens = handlers
        if transport is not old_transport and self._nursery is not None:
            self._nursery.start_soon(self._retire, old_transport)

    async def _retire(self, transport: Transport) -> None:
        """Close a replaced transport once the requests that use it are over: none outlives
        :data:`RETIRE_AFTER_S` (longer than any target's total timeout)."""
        await trio.sleep(RETIRE_AFTER_S)
        closer = getattr(transport, "aclose", None)
        if closer is not None:
            with trio.move_on_after(5):
                await closer()

    def start_drain(self) -> None:
        """The server stopped accepting and is finishing what is in flight: ``/readyz`` says
        503 from now on, on both ports."""
        self.drain_started.set()

    @property
    def draining(self) -> bool:
        """The server is draining (SIGTERM): not ready, so load balancers stop sending."""
        return self.drain_started.is_set()

    def is_ready(self) -> bool:
        return self.ready and not self.draining and self.services.ready() and not self.faults()

    def faults(self) -> list[str]:
        """What makes this process turn traffic away although its services run: a budget
        store down under ``fail_closed`` (every budgeted request is a 503), a state disk that
        refused writes in the last seconds (full or read-only: records held in memory, or
        lost past the hold's bound), a ledger that cannot record. With them ``/readyz`` said ready
        and a load balancer kept sending (a review filled the state disk)."""
        out: list[str] = []
        if self.admission is not None and self.admission.gate.refusing_all():
            out.append("budget store down (fail_closed: budgeted requests are refused)")
        losing = getattr(self._ledger, "losing_records", None)
        if losing is not None and losing():
            state = self.settings.storage.state_dir
            what, lost = disk_condition(state), getattr(self._ledger, "lost_records", None)
            out.append(
                f"ledger: records lost in the last {LOSING_S:g} s (the state disk of {state} "
                f"is {what} and the memory hold is full)" if lost is not None and lost() else
                f"ledger: the state disk of {state} refused writes in the last {LOSING_S:g} s "
                f"({what}): records are held in memory until it takes them"
            )  # fmt: skip
        if self.cannot_record():
            out.append("ledger cannot record: records held in memory, the state disk refuses "
                       "writes (new requests are refused)")  # fmt: skip
        return out

    def warnings(self) -> list[str]:
        """What ``/readyz`` reports without turning traffic away: the state directory's files
        deleted or replaced while running (the stores work on, their state is lost at the
        next start: a restart is the operator's call)."""
        gone = None if self.state_watch is None else self.state_watch.gone_text
        return [] if gone is None else [gone]

    def not_ready_reason(self) -> str:
        """Why :meth:`is_ready` is False: draining (whatever else), its down services, its
        faults, else starting."""
        if self.draining:
            return DRAINING
        down = [name for name, state in self.services.status().items() if state == "down"]
        if down:
            return "down: " + ", ".join(down)
        faults = self.faults()
        return "; ".join(faults) if faults else "starting"

    def readiness(self) -> dict[str, Any]:
        return {
            "ready": self.is_ready(),
            "draining": self.draining,
            "services": self.services.status(),
            "faults": self.faults(),
            "warnings": self.warnings(),
            "in_flight": self.in_flight,
            **self.readiness_detail(),
        }

    def readiness_detail(self) -> dict[str, Any]:
        """What ``/readyz`` adds to the common fields: this process's breakers."""
        return {"breakers": self.breakers.snapshot(trio.current_time()) if self.ready else {}}

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self.services.start_all(nursery)
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    raise
                if self.state_watch is not None:  # (the stores are open: a few stats)
                    self.state_watch.mark()
                self.ready = True
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
                self.ready = False
                await self._flush_settles()  # while the store's connection still runs
                nursery.cancel_scope.cancel()
        finally:
            self.prometheus.flush()  # the last turn's sums, which the flusher task may not see
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                closer = getattr(self.transport, "aclose", None)
                if closer is not None:
                    await closer()
        await send({"type": "lifespan.shutdown.complete"})

    async def _flush_settles(self) -> None:
        """Budget settles still waiting to be sent again: one last try, bounded
        (:meth:`~trioproxy.budget.settle_retry.SettleRetries.flush`)."""
        settles = self.admission.gate.settles if self.admission is not None else None
        if settles is not None:
            await settles.flush()


def _post_only(method: str, dialect: Dialect) -> None:
    """Refuses (405 in the caller's dialect) anything but POST."""
    if method != "POST":
        err = CallerError(ErrorKind.METHOD_NOT_ALLOWED, f"Use POST, not {method}.")
        raise Refused(err, dialect)


def create_app(settings: Settings, **kwargs: Any) -> Gateway:
    return Gateway(settings, **kwargs)


__all__ = ["Gateway", "ReloadSource", "create_app"]
