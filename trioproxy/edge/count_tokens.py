"""``POST /v1/messages/count_tokens`` (the Anthropic SDK's ``messages.count_tokens``).

The request is validated as an Anthropic messages body (``max_tokens`` is not
needed here). The route's chain is walked in order for the first Anthropic
target: its provider counts (``/v1/messages/count_tokens`` with the
deployment's name), exactly. With no Anthropic target, or when that provider
is down, the gateway estimates and says so: ``"estimated": true`` in the body
and ``x-trioproxy-token-count: estimated``. A 4xx from the provider is the
caller's fault and is relayed. Counting is free upstream, so nothing is
reserved or billed; it is not a ledger event. Like every proxy endpoint it
goes through the intake (:mod:`.intake`): the key, the key's slot (429), the
capped body, a worker slot (503 when the worker and its line are full).
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any

import orjson
import trio

from trioproxy.config.model import ApiKeyConfig, ModelConfig, ProviderConfig, Settings, Target
from trioproxy.core.tokens import estimate_tokens, prompt_tokens
from trioproxy.dialects import _fields as f
from trioproxy.dialects.anthropic import parse_request
from trioproxy.edge.asgi_io import Headers, Receive, Scope, Send, send_whole
from trioproxy.edge.auth import KeyRing
from trioproxy.edge.endpoint import permitted_route
from trioproxy.edge.intake import Intake, Interrupts, slots_for
from trioproxy.edge.refusals import Refused
from trioproxy.edge.respond import send_error
from trioproxy.errors import ErrorKind, GatewayError, ProviderError
from trioproxy.pipeline.routing import select_chain
from trioproxy.pipeline.slots import Slots
from trioproxy.providers.anthropic import VERSION
from trioproxy.providers.base import UpstreamRequest, error_message, json_object
from trioproxy.upstream.transport import ERROR_BODY_LIMIT, Transport, UpstreamIOError

log = logging.getLogger(__name__)
PATH = "/v1/messages/count_tokens"
_PASSED_FIELDS = ("messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")
"""What the count_tokens endpoint accepts besides ``model``."""


def estimate(chat: dict[str, Any]) -> int:
    """The gateway's estimate for a canonical chat request: messages plus tool schemas."""
    tools = chat.get("tools")
    extra = estimate_tokens(orjson.dumps(tools).decode()) if tools else 0
    return prompt_tokens(chat.get("messages", [])) + extra


class CountTokensHandler:
    def __init__(
        self, settings: Settings, keys: KeyRing, transport: Transport, slots: Slots | None = None,
        interrupts: Interrupts | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.keys = keys
        self.transport = transport
        self.intake = Intake(keys, slots or slots_for(settings), settings.server.max_body_bytes,
                             interrupts)  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Through the intake every proxy endpoint shares (key, the key's slot, the capped
        body, a worker slot), then counted while the slots are held."""
        headers = dict(scope["headers"])
        async with self.intake("anthropic", headers, receive, send, []) as got:
            if got is not None:
                key, body = got
                await self._count(key, headers, body, send)

    async def _count(
        self, key: ApiKeyConfig, headers: dict[bytes, bytes], body: bytes, send: Send
    ) -> None:
        try:
            data = f.load_object(body)
            req = parse_request(orjson.dumps({**data, "max_tokens": 1}))
            route = permitted_route(self.settings, key, req.model, embedding=False)
            plan = select_chain(route, priority=key.priority, prompt_tokens=0, max_tokens=1)
        except GatewayError as err:  # answered and recorded by the app
            raise Refused(err, "anthropic", key=key.name, team=key.team) from None
        base: Headers = [(b"x-trioproxy-route", route.name.encode())]
        try:
            counted = await self._provider_count(plan.chain.targets, data, headers)
        except GatewayError as err:
            await send_error(send, "anthropic", err, base)
            return
        if counted is not None:
            target, answer = counted
            base += [(b"x-trioproxy-token-count", b"provider"),
                     (b"x-trioproxy-target", target.encode())]  # fmt: skip
            await send_whole(send, 200, answer, base)
            return
        answer = orjson.dumps({"input_tokens": estimate(req.chat), "estimated": True})
        await send_whole(send, 200, answer, [*base, (b"x-trioproxy-token-count", b"estimated")])

    async def _provider_count(
        self, targets: tuple[Target, ...], data: dict[str, Any], headers: dict[bytes, bytes]
    ) -> tuple[str, bytes] | None:
        for target in targets:
            model = target.spec
            provider = model.endpoint
            if provider.kind != "anthropic":
                continue
            upreq = self._request(model, provider, data, headers)
            try:
                answer = await self._exchange(target, provider, upreq)
            except (UpstreamIOError, ValueError) as exc:
                log.info("count_tokens on %s failed (%s); estimating", target.model, exc)
                return None
            return None if answer is None else (target.model, answer)
        return None

    @staticmethod
    def _request(
        model: ModelConfig, provider: ProviderConfig, data: dict[str, Any],
        headers: dict[bytes, bytes],
    ) -> UpstreamRequest:  # fmt: skip
        body = {k: data[k] for k in _PASSED_FIELDS if k in data}
        body["model"] = model.deployment
        version = headers.get(b"anthropic-version", b"").decode("latin-1") or VERSION
        up = [("content-type", "application/json"), ("anthropic-version", version)]
        if beta := headers.get(b"anthropic-beta"):
            up.append(("anthropic-beta", beta.decode("latin-1")))
        if provider.api_key is not None:
            up.append(("x-api-key", provider.api_key.reveal()))
        return UpstreamRequest(PATH, tuple(up), orjson.dumps(body))

    async def _exchange(
        self, target: Target, provider: ProviderConfig, upreq: UpstreamRequest
    ) -> bytes | None:
        """The provider's 2xx body; None when it is unavailable (5xx, timeout)."""
        t = target.timeouts
        with trio.move_on_after(t.first_byte):
            async with AsyncExitStack() as stack:
                resp = await stack.enter_async_context(
                    self.transport.open(provider, upreq, connect_timeout=t.connect)
                )
                body = await resp.read(ERROR_BODY_LIMIT)
                if 400 <= resp.status < 500 and resp.status not in (408, 429):
                    raise ProviderError(
                        ErrorKind.UPSTREAM_REJECTED,
                        f"The provider rejected the request: {error_message(resp.status, body)}",
                        status=resp.status,
                    )
                if resp.status >= 300:
                    return None
                count = json_object(body).get("input_tokens")
                if not isinstance(count, int):
                    raise ValueError(f"no input_tokens in {body[:200]!r}")
                return orjson.dumps({"input_tokens": count})
        return None


__all__ = ["PATH", "CountTokensHandler", "estimate"]
