"""The control plane's ASGI app, served by hypercorn on ``server.admin_host:admin_port``.

The dashboard, the JSON admin API (Quart-Trio, ``gateway.inner``) and ``/metrics``
live here, on their own port bound to 127.0.0.1 by default (as Envoy's and Kong's
admin listeners are), so the data-plane port serves only ``/v1`` and the probes.
``/healthz`` and ``/readyz`` answer on both ports. In a data-plane worker that serves it
(tests, embedding) the gateway's lifespan is run by the data-plane server and this app
acknowledges hypercorn's; in the control-plane process (``control.py``, ``lifespan=True``)
hypercorn runs the gateway's lifespan through it. Its errors, the dashboard's JSON ones
included, have the admin API's shape, ``{"error": {"message", "status"}}``, and a 401 has
``WWW-Authenticate: Bearer`` (:func:`~trioproxy.edge.admin_guard.send_admin_error`).
"""

from __future__ import annotations

from trioproxy.edge.admin_guard import send_admin_error
from trioproxy.edge.app import Gateway
from trioproxy.edge.asgi_io import Receive, Scope, Send
from trioproxy.edge.probes import control


class AdminApp:
    def __init__(self, gateway: Gateway, *, lifespan: bool = False) -> None:
        self.gateway = gateway
        self.lifespan = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan" and self.lifespan:
            await self.gateway(scope, receive, send)
            return
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind != "http":
            return
        gateway = self.gateway
        if await control(gateway, scope, receive, send):
            return
        if gateway.inner is not None:
            await gateway.inner(scope, receive, send)
            return
        await send_admin_error(send, 404, f"Unknown path: {scope['path']}")


__all__ = ["AdminApp"]
