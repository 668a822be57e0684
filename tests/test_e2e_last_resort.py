"""The last resort keeps the books: a request that meets an unexpected exception (a bug in
the gateway) is answered 500 in the caller's envelope naming its request id, and gets
exactly one access line saying so (status 500, the request id, ``internal_error``); once routed,
exactly one request record (the access line comes from it), and its budget reservation is
settled, not left at the worst case until the lease runs out.

Each case injects a fault at one point of the request path, through the real gateway on
real sockets: before routing (no record: the refusal's access line), in admission (routed,
nothing reserved), between the reservation and the race (reserved), and in rendering a
non-stream answer after the race (reserved and billed, the head not yet out).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway, start_simulator
from tests.test_e2e_hostile import ANTHROPIC, OPENAI, an, envelope, oa, post, settings
from tests.test_e2e_hostile import team_day_usage as reserved
from trioproxy.budget.ticket import Ticket
from trioproxy.core.types import ChatRequest
from trioproxy.dialects import DIALECTS
from trioproxy.edge import handler
from trioproxy.pipeline.admission import Admission, Progress
from trioproxy.pipeline.context import RequestContext

MARK = "BOOM-HERE"


def marked(req: ChatRequest) -> bool:
    return MARK in str(req.chat.get("messages"))


class BreakingAdmission(Admission):
    """The real gate; a marked request fails in ``admit`` (``at="admit"``, nothing reserved)
    or right after its reservation (``at="progress"``: a stream's metering hook)."""

    def __init__(self, inner: Admission, at: str) -> None:
        super().__init__(inner.gate)
        self.at = at
        self.req: ChatRequest | None = None

    async def admit(
        self, ctx: RequestContext, *, prompt_bound: int | None = None,
        max_output: int | None = None,
    ) -> tuple[Ticket, int]:  # fmt: skip
        if self.at == "admit" and marked(ctx.req):
            raise RuntimeError("injected fault in admission")
        self.req = ctx.req
        return await super().admit(ctx, prompt_bound=prompt_bound, max_output=max_output)

    def progress(self, ticket: Ticket, prompt_bound: int) -> Progress | None:
        if self.at == "progress" and self.req is not None and marked(self.req):
            raise RuntimeError("injected fault after the reservation")
        return super().progress(ticket, prompt_bound)


def inject(g: Running, at: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if at in ("admit", "progress"):
        assert g.app.admission is not None
        g.app.chat.admission = BreakingAdmission(g.app.admission, at)
    elif at == "plan":  # before the request's context exists
        real = handler.prompt_tokens

        def prompt_tokens(messages: Any) -> int:
            if MARK in str(messages):
                raise RuntimeError("injected fault in planning")
            return real(messages)

        monkeypatch.setattr(handler, "prompt_tokens", prompt_tokens)
    else:  # "render": the race is over, the answer fails to render
        for dialect in ("openai", "anthropic"):
            codec = DIALECTS[dialect]
            real_render = codec.render_completion

            def render(completion: Any, req: ChatRequest, real_render: Any = real_render) -> bytes:
                if marked(req):
                    raise RuntimeError("injected fault rendering the answer")
                return bytes(real_render(completion, req))

            monkeypatch.setattr(codec, "render_completion", render)


async def wait_for(predicate: Any, limit_s: float = 5) -> None:
    with trio.fail_after(limit_s):
        while not predicate():
            await trio.sleep(0.01)


@pytest.mark.parametrize("at", ["plan", "admit", "progress", "render"])
@pytest.mark.parametrize("path", [OPENAI, ANTHROPIC])
async def test_a_500_of_the_last_resort_is_logged_recorded_and_settled(
    nursery: trio.Nursery, path: str, at: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="trioproxy.access")
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, settings(sim.url))
    inject(g, at, monkeypatch)
    make = oa if path == OPENAI else an
    body = make("oa", messages=[{"role": "user", "content": MARK}], stream=at == "progress")
    r = await post(g, path, body)
    assert r.status_code == 500, r.text
    rid = r.headers["x-request-id"]
    err = envelope(path, r)
    assert err["request_id"] == rid and rid in err["message"]

    def lines() -> list[dict[str, Any]]:
        return [
            rec.fields  # type: ignore[attr-defined]
            for rec in caplog.records
            if rec.name == "trioproxy.access" and rec.fields["request_id"] == rid  # type: ignore[attr-defined]
        ]

    await wait_for(lambda: lines())
    ok = await post(g, path, make("oa"))  # a later request: every earlier line is out
    assert ok.status_code == 200
    assert [(x["status"], x["error_kind"]) for x in lines()] == [(500, "internal_error")]
    mine = [x for x in g.sink.records if x.request_id == rid and x.kind == "request"]
    if at == "plan":  # refused before routing: an access line, no usage record
        assert mine == []
    else:
        assert [(x.status, x.error_kind, x.outcome) for x in mine] == [
            (500, "internal_error", "error")
        ]
    # the reservation was settled to what the ledger bills (nothing, or the attempt)
    billed = sum(x.cost_micros for x in g.sink.records if x.kind == "request")
    with trio.fail_after(5):
        while await reserved(g) != billed:
            await trio.sleep(0.01)
