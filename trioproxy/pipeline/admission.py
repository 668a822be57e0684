"""Budget admission for one request: reserve, meter a capped stream, settle.

The budget maths and the atomic store operations live in :mod:`trioproxy.budget`;
this module only maps a request onto them: the worst case over every model of
the chosen chain (prompt tokens *bounded*, not estimated, so the reservation
cannot fall short), the end user when the key allows it, and the actual cost of
every attempt at the end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from trioproxy.budget.claims import usd_to_micros, worst_case
from trioproxy.budget.gate import BudgetGate, KeyRate, Ticket
from trioproxy.config.model import ModelConfig
from trioproxy.config.pricing import prices_of
from trioproxy.core.billing import worst_case_micros
from trioproxy.core.input_bound import input_bound
from trioproxy.core.types import ChatRequest, Usage
from trioproxy.dialects.anthropic import dropped_from_chat
from trioproxy.pipeline.accounting import bill_for
from trioproxy.pipeline.context import RequestContext
from trioproxy.upstream.attempt import Meter
from trioproxy.upstream.race import Attempt

Progress = Callable[[Attempt, Meter], Awaitable[None]]


class Admission:
    def __init__(self, gate: BudgetGate) -> None:
        self.gate = gate

    def _models(self, ctx: RequestContext) -> list[ModelConfig]:
        return [t.spec for t in ctx.plan.chain.targets]

    async def admit(
        self, ctx: RequestContext, *, prompt_bound: int | None = None,
        max_output: int | None = None,
    ) -> tuple[Ticket, int]:  # fmt: skip
        """Reserve or raise ``PolicyError``; returns the ticket and the prompt bound.

        The prompt bound comes from the chat messages unless ``prompt_bound`` is given
        (embeddings: from the input); ``max_output`` overrides the request's output cap
        (embeddings: 0)."""
        models = self._models(ctx)
        bound = prompt_bound
        if bound is None:
            bound = self.prompt_bound(ctx.req, models)
        out = ctx.req.max_tokens if max_output is None else max_output
        n = ctx.req.chat.get("n") or 1
        worst = worst_case(bound, out, models, n if isinstance(n, int) and n > 1 else 1)
        # a cap grows along a metered stream (progress); a whole answer cannot be cut on the
        # way, so it reserves its worst case
        cap_usd = ctx.plan.route.reservation_cap_usd if ctx.req.stream else None
        key = ctx.key
        ticket = await self.gate.admit(
            request_id=ctx.request_id,
            team=ctx.key.team,
            user=ctx.key.user,
            end_user=ctx.req.end_user if ctx.key.end_user_budgets else None,
            worst_case_usd_micros=worst.usd_micros,
            worst_case_tokens=worst.tokens,
            reserve_cap_micros=None if cap_usd is None else usd_to_micros(cap_usd),
            # the prompt's worst cost only bounds a capped reservation from below
            floor_micros=0 if cap_usd is None else worst_case(bound, 0, models).usd_micros,
            rate=KeyRate(key.name, key.rpm, key.tpm),  # limits may be set at run time
        )
        return ticket, bound

    @staticmethod
    def prompt_bound(req: ChatRequest, models: list[ModelConfig]) -> int:
        """Every input token any model of the chain can bill: text, tools, tool results,
        images (the largest provider allowance of the chain), files."""
        image_tokens = max(m.endpoint.image_tokens for m in models)
        extra = dropped_from_chat(req.body) if req.dialect == "anthropic" else ()
        return input_bound(req.chat, image_tokens=image_tokens, extra=extra)

    def progress(self, ticket: Ticket, prompt_bound: int) -> Progress | None:
        """A per-chunk hook that grows a capped reservation as the stream runs."""
        if ticket.cap is None or not ticket.holds:
            return None

        async def on_progress(attempt: Attempt, meter: Meter) -> None:
            model = attempt.target.spec
            out = meter.output_tokens()  # passthrough counts lazily (Meter.deferred)
            await self.gate.extend(
                ticket,
                cost_micros=worst_case_micros(prices_of(model), prompt_bound, out),
                tokens=prompt_bound + out,
            )

        return on_progress

    async def settle(
        self, ticket: Ticket, spent: Iterable[tuple[ModelConfig, Usage]], *,
        billed: int | None = None,
    ) -> None:  # fmt: skip
        """Settle ``ticket`` to what ``spent`` consumed: its tokens, and its bill in µUSD
        (``billed``: the sum of its ``bill_for``s made already, as the request record's)."""
        micros = tokens = 0
        for model, usage in spent:
            if billed is None:
                micros += bill_for(model, usage).micros
            tokens += usage.total
        await self.gate.settle(ticket, micros if billed is None else billed, tokens)


__all__ = ["Admission", "Progress"]
