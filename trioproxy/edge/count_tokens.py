"""``POST /v1/messages/count_tokens`` (the Anthropic SDK's ``messages.count_tokens``).

The request is validated as an Anthropic messages body (``max_tokens`` is not
needed here). The route's chain is walked in order for the first Anthropic
target: its provider counts (``/v1/messages/count_tokens`` with the
deployment's name), exactly. With no Anthropic target, or when that provider
is down, the gateway estimates and says so: ``"estimated": true`` in the body
and ``x-trioproxy-token-count: estimated``. A 4xx from the provider is the
caller's fault and is relayed. Counting is free upstream, so nothing is
reserved or billed, but every routed request has one request record at $0
(:func:`~trioproxy.pipeline.accounting.count_record`: its access line, its
place on the dashboard's Requests page), naming the provider's failure
(``upstream_rejected`` with its status; ``upstream_unavailable`` or
``upstream_timeout`` when the caller got an estimate instead). Like every
proxy endpoint it is an :class:`~trioproxy.edge.endpoint.Endpoint`: the
intake (the key, the key's slot (429), the capped body, a worker slot: 503
when the worker and its line are full), a request id, the last resort.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any, NamedTuple

import orjson
import trio

from trioproxy.config.model import ApiKeyConfig, ModelConfig, ProviderConfig, Target
from trioproxy.core import endpoints
from trioproxy.core.tokens import estimate_tokens, prompt_tokens
from trioproxy.core.types import Dialect
from trioproxy.core.usage import token_count
from trioproxy.dialects import _fields as f
from trioproxy.dialects.anthropic import parse_request
from trioproxy.edge import traces
from trioproxy.edge.asgi_io import Receive, Scope, Send, send_whole
from trioproxy.edge.endpoint import Endpoint
from trioproxy.edge.respond import send_error
from trioproxy.errors import ErrorKind, GatewayError, ProviderError, invalid
from trioproxy.pipeline.accounting import count_record
from trioproxy.pipeline.routing import select_chain
from trioproxy.providers.anthropic import VERSION
from trioproxy.providers.base import UpstreamRequest, error_message, json_object
from trioproxy.upstream.transport import ERROR_BODY_LIMIT, UpstreamIOError

log = logging.getLogger(__name__)
PATH = "/v1/messages/count_tokens"
_PASSED_FIELDS = ("messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")
"""What the count_tokens endpoint accepts besides ``model``."""
_GENERATION_ONLY = frozenset(
    ("max_tokens", "stream", "temperature", "top_k", "top_p", "stop_sequences")
)
"""Fields of a messages request that a count takes no part of: Anthropic's count_tokens refuses
them ("Extra inputs are not permitted"), and so does the gateway, whatever the target (other
fields its API grows are passed on, or ignored when the gateway estimates)."""


def estimate(chat: dict[str, Any]) -> int:
    """The gateway's estimate for a canonical chat request: messages plus tool schemas."""
    tools = chat.get("tools")
    extra = estimate_tokens(orjson.dumps(tools).decode()) if tools else 0
    return prompt_tokens(chat.get("messages", [])) + extra


class Asked(NamedTuple):
    """What the provider said: the target asked (None: the chain has no Anthropic target),
    its answer (None: estimate), what failed (a 4xx to relay, or why it is estimated)."""

    target: Target | None = None
    answer: bytes | None = None
    failure: GatewayError | None = None


class CountTokensHandler(Endpoint):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Through the intake every proxy endpoint shares (key, the key's slot, the capped
        body, a worker slot), then counted while the slots are held."""
        await self.serve("anthropic", scope, receive, send, self._count)

    async def _count(
        self, rid: str, dialect: Dialect, key: ApiKeyConfig, headers: dict[bytes, bytes],
        body: bytes, receive: Receive, send: Send,
    ) -> None:  # fmt: skip
        # a GatewayError here (parse, route) is a refusal before routing: Endpoint.serve
        data = f.load_object(body)
        if (extra := next((k for k in data if k in _GENERATION_ONLY), None)) is not None:
            raise invalid(f"{extra}: Extra inputs are not permitted", extra)  # as Anthropic's
        req = parse_request(orjson.dumps({**data, "max_tokens": 1}))
        route = self.route(key, req.model, embedding=False)
        plan = select_chain(route, priority=key.priority, prompt_tokens=0, max_tokens=1)
        ctx = self.context(rid, dialect, key, headers, req, plan, 0,
                           endpoint=endpoints.COUNT_TOKENS, operation="count_tokens")  # fmt: skip
        target, answer, failure = await self._provider_count(plan.chain.targets, data, headers)
        relayed = failure is not None and failure.kind is ErrorKind.UPSTREAM_REJECTED  # its 4xx
        status = failure.status if relayed and failure is not None else 200
        served_by = target if answer is not None or relayed else None  # else: the estimate
        self.record(ctx, count_record(ctx, served_by, status=status, failure=failure))
        traces.finish_early(ctx.trace, status=status, cache="off", error=failure)
        if relayed and failure is not None:
            await send_error(send, dialect, failure, ctx.headers)
        elif answer is not None and target is not None:
            await send_whole(send, 200, answer, [
                *ctx.headers, (b"x-trioproxy-token-count", b"provider"),
                (b"x-trioproxy-target", target.model.encode()),
            ])  # fmt: skip
        else:
            answer = orjson.dumps({"input_tokens": estimate(req.chat), "estimated": True})
            estimated = (b"x-trioproxy-token-count", b"estimated")
            await send_whole(send, 200, answer, [*ctx.headers, estimated])

    async def _provider_count(
        self, targets: tuple[Target, ...], data: dict[str, Any], headers: dict[bytes, bytes]
    ) -> Asked:
        for target in targets:
            model = target.spec
            provider = model.endpoint
            if provider.kind != "anthropic":
                continue
            upreq = self._request(model, provider, data, headers)
            try:
                return Asked(target, *await self._exchange(target, provider, upreq))
            except ProviderError as err:  # its 4xx: the caller's to read
                return Asked(target, None, err)
            except (UpstreamIOError, ValueError) as exc:
                log.info("count_tokens on %s failed (%s); estimating", target.model, exc)
                failed = ProviderError(ErrorKind.UPSTREAM_UNAVAILABLE, str(exc), status=502)
                return Asked(target, None, failed)
        return Asked()

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
    ) -> tuple[bytes | None, GatewayError | None]:
        """The provider's 2xx body, or why there is none (5xx, 408/429: unavailable; no
        answer within the first-byte timeout); raises its 4xx as a :class:`ProviderError`."""
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
                    message = error_message(resp.status, body)
                    return None, ProviderError(ErrorKind.UPSTREAM_UNAVAILABLE, message,
                                               status=resp.status)  # fmt: skip
                count = token_count(json_object(body), "input_tokens", required=True)
                return orjson.dumps({"input_tokens": count}), None
        message = f"no answer within {t.first_byte:g} s"
        return None, ProviderError(ErrorKind.UPSTREAM_TIMEOUT, message, status=504)


__all__ = ["PATH", "CountTokensHandler", "estimate"]
