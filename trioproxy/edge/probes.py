"""The gateway's control endpoints and its metrics' upkeep.

``/healthz`` and ``/readyz`` answer on both ports (the data port reaches them only for a
path no proxy endpoint serves); ``/metrics`` on the admin port (``server/admin.py``), for an
admin key. The gateway's two metrics services run here: :func:`sample_forever` calls
``Gateway.sample_metrics`` every :data:`~trioproxy.edge.metrics.SAMPLE_INTERVAL_S` (a scrape
calls it too), :func:`flush_forever` writes the usage records' metrics. What they report
(``is_ready``, ``readiness``, ``sample_metrics``) is the gateway's: the control plane's
gateway (``server/control.py``) overrides it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson
import trio

from trioproxy.core.ids import request_id
from trioproxy.edge.admin_guard import send_admin_error
from trioproxy.edge.asgi_io import Receive, Scope, Send, send_whole
from trioproxy.edge.client_address import scope_client
from trioproxy.edge.metrics import SAMPLE_INTERVAL_S
from trioproxy.edge.refusals import request_id_header
from trioproxy.errors import CallerError, ErrorKind, GatewayError

if TYPE_CHECKING:
    from trioproxy.edge.app import Gateway

log = logging.getLogger("trioproxy")
READ = ("GET", "HEAD")
"""HEAD is GET without the body (the server drops it), as RFC 9110 asks of every server."""


async def control(
    gateway: Gateway, scope: Scope, receive: Receive, send: Send, *, probes_only: bool = False
) -> bool:
    """``/healthz`` and ``/readyz`` (both ports) and ``/metrics`` (the admin port);
    False when ``scope`` is none of them."""
    path: str = scope["path"]
    if path == "/healthz":
        await send_whole(send, 200, b'{"status":"ok"}', [request_id_header(request_id())])
    elif path == "/readyz":
        status = 200 if gateway.is_ready() else 503
        body = orjson.dumps(gateway.readiness())
        await send_whole(send, status, body, [request_id_header(request_id())])
    elif path == "/metrics" and not probes_only:
        if scope["method"] in READ:
            await _metrics(gateway, scope, send)
        else:
            message = f"Use GET or HEAD, not {scope['method']}."
            await send_admin_error(send, 405, message, [(b"allow", b"GET, HEAD")])
    else:
        return False
    return True


async def _metrics(gateway: Gateway, scope: Scope, send: Send) -> None:
    """``GET /metrics`` (``HEAD``: the same answer without its body) for an admin key;
    errors in the admin API's shape, a 401 with its Bearer challenge."""
    addr = scope_client(scope, gateway.settings.dashboard.trusted_proxies)
    presented = dict(scope["headers"])
    wait = await gateway.key_guard.admit(addr)
    if wait is not None:
        gateway.prometheus.admin_auth_throttled("address")
        message = f"Too many wrong admin keys from this address; retry in {wait} s."
        await send_admin_error(send, 429, message, [(b"retry-after", str(wait).encode())])
        return
    refused: GatewayError | None = None
    try:
        key = await gateway.key_guard.checked(addr, lambda: gateway.keys.authenticate(presented))
        if not key.admin:
            message = f"API key {key.name!r} is not an admin key (/metrics needs one)."
            refused = CallerError(ErrorKind.ROUTE_FORBIDDEN, message)
    except GatewayError as err:
        refused = err
    if refused is not None:
        if refused.kind is ErrorKind.INVALID_API_KEY:
            log.warning("admin port: wrong admin key for /metrics: addr=%s", addr)
            gateway.prometheus.admin_auth_failure("admin_key")
        await send_admin_error(send, refused.status, refused.message)
        return
    gateway.sample_metrics()
    body, content_type = await trio.to_thread.run_sync(
        lambda: gateway.prometheus.render(flush=False)  # sample_metrics flushed, on the loop
    )
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        request_id_header(request_id()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    head = scope["method"] == "HEAD"
    await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})


async def flush_forever(
    gateway: Gateway, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Write the usage records' metrics on the first scheduler turn after them (many
    requests' records at once under load: see :mod:`trioproxy.edge.metrics`)."""
    task_status.started()
    while True:
        await gateway.prometheus.dirty.wait()
        gateway.prometheus.flush()


async def sample_forever(
    gateway: Gateway, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    task_status.started()
    while True:
        gateway.sample_metrics()
        await trio.sleep(SAMPLE_INTERVAL_S)


__all__ = ["READ", "control", "flush_forever", "sample_forever"]
