"""The app's background services, supervised.

A service is ``run(*, task_status)`` started in the app-lifetime nursery (ledger writer, cache
writer, Redis supervisor, embedder, alert sender, vector index). Start-up fails loudly: a
service that fails before it reports started, the first time, fails the app's start-up. After
that, a service that raises (or returns) is logged and restarted after a backoff delay
(:data:`RESTART`, reset once it has run :data:`HEALTHY_AFTER_S`); it never cancels its
siblings. While a *required* service is down, :meth:`Supervisor.ready` is False, so
``/readyz`` says not ready. ``trio.Cancelled`` (shutdown) is never caught.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from trioproxy.core.backoff import Backoff, BackoffPolicy

log = logging.getLogger("trioproxy.services")

Service = Callable[..., Awaitable[None]]
"""A background task ``run(*, task_status)`` started in the app nursery."""

RESTART = BackoffPolicy(0.5, 30.0)
HEALTHY_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class NamedService:
    name: str
    run: Service
    required: bool = True
    """Down means not ready (``/readyz`` 503)."""


def named(service: Service | NamedService) -> NamedService:
    if isinstance(service, NamedService):
        return service
    return NamedService(getattr(service, "__qualname__", repr(service)), service)


class Supervisor:
    def __init__(
        self, services: Sequence[Service | NamedService], policy: BackoffPolicy = RESTART
    ) -> None:
        self.services = [named(s) for s in services]
        self._policy = policy
        self.up: dict[str, bool] = {s.name: False for s in self.services}
        self.restarts: dict[str, int] = {s.name: 0 for s in self.services}

    def add(self, service: Service | NamedService) -> None:
        """One more service, before :meth:`start_all` (a part wired after the app: the
        dashboard's heartbeat)."""
        s = named(service)
        self.services.append(s)
        self.up[s.name] = False
        self.restarts[s.name] = 0

    def ready(self) -> bool:
        return all(self.up[s.name] for s in self.services if s.required)

    def status(self) -> dict[str, str]:
        return {s.name: "up" if self.up[s.name] else "down" for s in self.services}

    async def start_all(self, nursery: trio.Nursery) -> None:
        """Start every service in order; raises if one fails to start the first time."""
        for service in self.services:
            await nursery.start(self._supervise, service)

    async def _supervise(
        self, service: NamedService, *, task_status: trio.TaskStatus[None]
    ) -> None:
        backoff = Backoff(self._policy)
        status: trio.TaskStatus[None] | None = task_status
        while True:
            began = trio.current_time()
            error = await self._run_once(service, status)
            status = None  # reported started (or raised) once
            self.up[service.name] = False
            if trio.current_time() - began >= HEALTHY_AFTER_S:
                backoff.reset()
            delay = backoff.next()
            self.restarts[service.name] += 1
            log.error(
                "service %s %s; restarting in %.1f s", service.name,
                "exited" if error is None else "crashed", delay, exc_info=error,
                extra={"fields": {"service": service.name, "required": service.required,
                                  "restarts": self.restarts[service.name]}},
            )  # fmt: skip
            await trio.sleep(delay)

    async def _run_once(
        self, service: NamedService, status: trio.TaskStatus[None] | None
    ) -> Exception | None:
        """Run the service until it ends; the error it ended with (None: it returned). An error
        before it started, on its first run, propagates."""
        started = False
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run)
                started = True
                self.up[service.name] = True
                if status is not None:
                    status.started()
                elif self.restarts[service.name]:
                    log.warning("service %s restarted", service.name,
                                extra={"fields": {"service": service.name}})  # fmt: skip
        except Exception as exc:  # an ExceptionGroup too; Cancelled is a BaseException
            if not started and status is not None:
                raise
            return exc
        return None


__all__ = ["HEALTHY_AFTER_S", "RESTART", "NamedService", "Service", "Supervisor", "named"]
