"""The ASGI lifespan protocol, run by the data-plane server."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger("trioproxy.httpd")

STARTUP_TIMEOUT_S = 120.0
"""Bound on the app's start-up (services that open databases, load the embedder)."""
SHUTDOWN_TIMEOUT_S = 60.0
"""Bound on the app's shutdown (the ledger and cache flush)."""


class LifespanFailed(Exception):
    """The app reported ``lifespan.startup.failed`` (or died during start-up)."""


class Lifespan:
    def __init__(self, app: Callable[[Any, Any, Any], Awaitable[None]]) -> None:
        self.app = app
        self._to_app, self._app_in = trio.open_memory_channel[dict[str, Any]](1)
        self._app_out, self._from_app = trio.open_memory_channel[dict[str, Any]](1)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        try:
            await self.app(scope, self._app_in.receive, self._app_out.send)
        except Exception as exc:
            log.exception("lifespan ended with an error")
            try:
                self._app_out.send_nowait({"type": "lifespan.failed", "message": repr(exc)})
            except (trio.WouldBlock, trio.ClosedResourceError):
                pass
            return
        finally:
            self._app_out.close()

    async def startup(self) -> None:
        await self._to_app.send({"type": "lifespan.startup"})
        with trio.fail_after(STARTUP_TIMEOUT_S):
            try:
                message = await self._from_app.receive()
            except trio.EndOfChannel:
                raise LifespanFailed("the app returned during start-up") from None
        if message["type"] != "lifespan.startup.complete":
            raise LifespanFailed(message.get("message", message["type"]))

    async def shutdown(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT_S) as scope:
            await self._to_app.send({"type": "lifespan.shutdown"})
            try:
                message = await self._from_app.receive()
            except trio.EndOfChannel:
                return
            if message["type"] != "lifespan.shutdown.complete":
                log.error("lifespan shutdown: %s", message.get("message", message["type"]))
        if scope.cancelled_caught:
            log.error("lifespan shutdown did not finish in %.0f s", SHUTDOWN_TIMEOUT_S)


__all__ = ["Lifespan", "LifespanFailed"]
