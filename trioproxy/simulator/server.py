"""The provider simulator: OpenAI and Anthropic wire formats with faults.

One server answers both providers (``POST /v1/chat/completions``,
``POST /v1/messages``, ``POST /v1/responses``, ``GET /v1/models``, ``POST /v1/embeddings``,
``POST /v1/messages/count_tokens``: :mod:`.extras`) plus its control endpoints
(``GET /_sim/stats``, ``POST /_sim/reset``, ``GET|POST /_sim/faults``).
One task per connection; while a response is in flight a second task watches
for the client closing, which cancels the answer and is recorded in the stats.

A chat request goes: auth (401) -> ``anthropic-version`` (400) -> fault spec
(400) -> JSON body (400) -> ``hang`` -> ``ttft_ms`` -> ``status`` /
``fail_first`` -> 200 answer (see :mod:`.stats` for what is counted when).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import ssl
import time

import h11
import orjson
import trio

from trioproxy.simulator.anthropic_wire import ANTHROPIC
from trioproxy.simulator.extras import (
    COUNT_TOKENS_PATH,
    EMBEDDINGS_PATH,
    count_tokens_body,
    embeddings_body,
)
from trioproxy.simulator.faults import NO_FAULT, Fault, FaultError
from trioproxy.simulator.http11 import BodyTooLarge, HttpConnection, Request
from trioproxy.simulator.openai_wire import OPENAI
from trioproxy.simulator.plan import BadRequest, Wire, make_plan
from trioproxy.simulator.prompt_cache import NO_CACHE, PromptCache
from trioproxy.simulator.respond import (
    Next,
    send_completion,
    send_error,
    send_json,
    send_stream,
)
from trioproxy.simulator.responses_wire import RESPONSES
from trioproxy.simulator.stats import Exchange, SimStats

log = logging.getLogger(__name__)

MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-latest", "claude-sonnet-4-5")
_SERVER = (b"server", b"trioproxy-sim")
_CHAT_WIRES: dict[str, Wire] = {w.path: w for w in (OPENAI, ANTHROPIC, RESPONSES)}


class Simulator:
    """A fake of the paid providers over real sockets; see the module doc."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        default_fault: Fault | None = None,
        default_tokens: int = 30,
    ) -> None:
        self.api_key = api_key
        self.default_fault = default_fault or NO_FAULT
        self.default_tokens = default_tokens
        self.stats = SimStats()
        self.traceparents: collections.deque[str] = collections.deque(maxlen=256)
        """The W3C ``traceparent`` of the latest requests that carried one (tests)."""
        self.last_chat_headers: dict[str, str] = {}
        """Headers of the latest chat request (tests check what a gateway passed on)."""
        self.prompt_cache = PromptCache()
        """The simulated providers' prompt caches (both wires; keys never collide)."""
        self._chat_requests = 0
        """Chat requests past validation since the last reset, for ``fail_first``."""
        self.hold: trio.Event | None = None
        """When set to an Event, chat answers wait for it (tests: admit everything first)."""

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status.started(bound_port)``.

        With ``tls`` (a server context holding the certificate), every
        connection is TLS: the simulator behind TLS, as real providers are.
        """
        tcp = await trio.open_tcp_listeners(port, host=host)
        task_status.started(tcp[0].socket.getsockname()[1])
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp)
        if tls is not None:
            listeners = [trio.SSLListener(t, tls, https_compatible=True) for t in tcp]
        await trio.serve_listeners(self._serve_connection, listeners)

    def reset(self) -> None:
        self.stats.reset()
        self.prompt_cache.clear()
        self._chat_requests = 0

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        self.stats.connections += 1
        conn = HttpConnection(stream)
        try:
            while True:
                try:
                    req = await conn.next_request()
                except BodyTooLarge:
                    ex = self.stats.begin("(too large)", None)
                    await send_error(conn, ex, OPENAI, 413, "Request body too large.", [_SERVER])
                    await conn.discard_input()
                    break
                except h11.RemoteProtocolError:
                    if conn.can_respond():
                        ex = self.stats.begin("(bad request)", None)
                        await send_error(conn, ex, OPENAI, 400, "Malformed HTTP.", [_SERVER])
                    break
                if req is None:
                    break
                if await self._exchange(conn, req) != "keep" or not conn.next_cycle():
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client vanished between requests (or failed its TLS handshake)
        except Exception:
            self.stats.internal_errors += 1
            log.exception("simulator connection failed")
        finally:
            await conn.aclose()

    async def _exchange(self, conn: HttpConnection, req: Request) -> Next:
        ex = self.stats.begin(req.path, req.headers.get("x-sim-id"))
        if (traceparent := req.headers.get("traceparent")) is not None:
            self.traceparents.append(traceparent)
        outcome: Next = "close"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_peer, conn, ex, nursery.cancel_scope)
                try:
                    outcome = await self._route(conn, req, ex)
                except trio.BrokenResourceError:
                    ex.peer_closed()
                nursery.cancel_scope.cancel()
        finally:
            ex.finish("reset" if outcome == "reset" else "client_closed")
        if outcome == "reset":
            await conn.reset()
        return outcome

    async def _watch_peer(
        self, conn: HttpConnection, ex: Exchange, scope: trio.CancelScope
    ) -> None:
        await conn.wait_peer_closed()
        ex.peer_closed()
        scope.cancel()

    def _headers(self, req: Request, wire: Wire) -> list[tuple[bytes, bytes]]:
        headers = [_SERVER]
        request_id = os.urandom(8).hex()
        if wire is ANTHROPIC:
            headers.append((b"request-id", b"req_" + request_id.encode()))
        else:
            headers.append((b"x-request-id", b"req_" + request_id.encode()))
        if (sim_id := req.headers.get("x-sim-id")) is not None:
            headers.append((b"x-sim-id", sim_id.encode("latin-1")))
        return headers

    async def _route(self, conn: HttpConnection, req: Request, ex: Exchange) -> Next:
        path, method = req.path, req.method
        wire: Wire = ANTHROPIC if "anthropic-version" in req.headers else OPENAI
        chat_wire = _CHAT_WIRES.get(path)
        if chat_wire is not None:
            wire = chat_wire
            if method == "POST":
                return await self._chat(conn, req, ex, wire)
            return await send_error(conn, ex, wire, 405, f"{method} not allowed", [_SERVER])
        if path in (EMBEDDINGS_PATH, COUNT_TOKENS_PATH) and method == "POST":
            wire = ANTHROPIC if path == COUNT_TOKENS_PATH else OPENAI
            return await self._extra(conn, req, ex, wire)
        headers = self._headers(req, wire)
        if path == "/v1/models" and method == "GET":
            return await send_json(conn, ex, 200, self._models(wire), headers)
        if path == "/_sim/stats" and method == "GET":
            return await send_json(conn, ex, 200, orjson.dumps(self.stats.snapshot()), headers)
        if path == "/_sim/reset" and method == "POST":
            self.reset()
            return await send_json(conn, ex, 200, b'{"ok":true}', headers)
        if path == "/_sim/faults" and method in ("GET", "POST"):
            if method == "POST":
                try:
                    data = orjson.loads(req.body) if req.body.strip() else {}
                    if not isinstance(data, dict):
                        raise FaultError("the body must be a JSON object")
                    self.default_fault = Fault.from_mapping(data)
                except (orjson.JSONDecodeError, FaultError) as exc:
                    return await send_error(conn, ex, OPENAI, 400, str(exc), headers)
                self._chat_requests = 0
            body = orjson.dumps({"fault": self.default_fault.to_dict()})
            return await send_json(conn, ex, 200, body, headers)
        return await send_error(conn, ex, wire, 404, f"Invalid URL ({method} {path})", headers)

    def _models(self, wire: Wire) -> bytes:
        if wire is ANTHROPIC:
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in MODELS
            ]
            return orjson.dumps(
                {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
            )
        created = int(time.time())
        models = [
            {"id": m, "object": "model", "created": created, "owned_by": "trioproxy-sim"}
            for m in MODELS
        ]
        return orjson.dumps({"object": "list", "data": models})

    def _key_error(self, req: Request) -> str | None:
        auth = req.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        key = key or req.headers.get("x-api-key", "").strip()
        if not key:
            return "Missing API key: send Authorization: Bearer <key> or x-api-key."
        if self.api_key is not None and key != self.api_key:
            return "Incorrect API key provided."
        return None

    async def _extra(self, conn: HttpConnection, req: Request, ex: Exchange, wire: Wire) -> Next:
        """Embeddings or token counting: auth, faults (hang, delay, status), the answer."""
        headers = self._headers(req, wire)
        if (message := self._key_error(req)) is not None:
            return await send_error(conn, ex, wire, 401, message, headers)
        try:
            fault = Fault.parse(req.headers.get("x-sim-fault", "")).over(self.default_fault)
            data = orjson.loads(req.body)
            answer = count_tokens_body if wire is ANTHROPIC else embeddings_body
            body = answer(data, odd_usage=fault.usage)
        except (FaultError, BadRequest, ValueError) as exc:
            return await send_error(conn, ex, wire, 400, str(exc), headers)
        self._chat_requests += 1
        if fault.hang:
            ex.hanging()
            await trio.sleep_forever()
        if fault.ttft_ms:
            await trio.sleep(fault.ttft_ms / 1000)
        if (status := fault.error_status(self._chat_requests)) is not None:
            return await send_error(
                conn, ex, wire, status, "", headers, retry_after=fault.retry_after
            )
        return await send_json(conn, ex, 200, body, headers)

    async def _chat(self, conn: HttpConnection, req: Request, ex: Exchange, wire: Wire) -> Next:
        self.last_chat_headers = dict(req.headers)
        headers = self._headers(req, wire)
        if (message := self._key_error(req)) is not None:
            return await send_error(conn, ex, wire, 401, message, headers)
        if wire is ANTHROPIC and "anthropic-version" not in req.headers:
            return await send_error(
                conn, ex, wire, 400, "anthropic-version: header is required", headers
            )
        try:
            fault = Fault.parse(req.headers.get("x-sim-fault", "")).over(self.default_fault)
            tokens = int(req.headers.get("x-sim-tokens") or -1)
            intent = wire.parse(orjson.loads(req.body))
        except (FaultError, BadRequest, ValueError) as exc:  # JSONDecodeError is a ValueError
            return await send_error(conn, ex, wire, 400, str(exc), headers)
        self._chat_requests += 1
        nth = self._chat_requests
        if fault.hang:
            ex.hanging()
            await trio.sleep_forever()
        if self.hold is not None:
            await self.hold.wait()
        if fault.ttft_ms:
            await trio.sleep(fault.ttft_ms / 1000)
        if (status := fault.error_status(nth)) is not None:
            return await send_error(
                conn, ex, wire, status, "", headers, retry_after=fault.retry_after
            )
        if tokens < 0:
            tokens = fault.tokens if fault.tokens is not None else self.default_tokens
        split = (
            self.prompt_cache.use(intent.cache_prompt, trio.current_time())
            if intent.cache_prompt is not None
            else NO_CACHE
        )
        plan = make_plan(
            intent,
            tokens,
            {OPENAI.name: "chatcmpl-", RESPONSES.name: "resp_"}.get(wire.name, "msg_"),
            int(time.time()),
            split,
        )
        if fault.usage is not None:
            plan = dataclasses.replace(plan, odd_usage=fault.usage, odd_late=bool(fault.late_usage))
        if fault.reasoning_content:
            plan = dataclasses.replace(plan, stream_reasoning=True)
        if fault.no_usage:
            plan = dataclasses.replace(plan, no_usage=True, include_usage=False)
        if intent.stream:
            return await send_stream(conn, ex, wire, plan, fault, headers)
        return await send_completion(conn, ex, wire, plan, fault, headers)


def main_simulate(host: str, port: int) -> None:
    """Run a simulator until interrupted (Ctrl-C); prints the bound address."""

    async def run() -> None:
        sim = Simulator()
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(sim.serve, host, port)
            print(f"trioproxy simulator listening on http://{host}:{bound}", flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


__all__ = ["MODELS", "Simulator", "main_simulate"]
