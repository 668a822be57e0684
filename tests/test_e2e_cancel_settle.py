"""A request cancelled after its budget reservation settles it at once and leaves exactly one
request record: the reservation is not left to its lease (900 s here), whichever step the
cancellation meets.

Real cancellations through the real gateway on real sockets, with the SQLite budget store:
the drain deadline while the store's answer to the reservation is on its way (before
upstream), the store's own call timeout at the same point, the client leaving while the
provider has not sent its first byte, and the client leaving in the middle of a stream.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway, start_simulator
from tests.settings_factory import KEY
from tests.test_e2e_hostile import OPENAI, settings
from tests.test_e2e_hostile import team_day_usage as reserved
from trioproxy.budget.claims import Claim
from trioproxy.config.model import Settings
from trioproxy.simulator.faults import Fault

LIMIT_S = 5.0
"""Bound on every wait: far below the reservation lease (``reservation_lease_s``, 900 s)."""


def with_changes(base: Settings, **sections: dict[str, Any]) -> Settings:
    from dataclasses import replace

    out = base
    for name, values in sections.items():
        out = replace(out, **{name: replace(getattr(out, name), **values)})
    return out


def open_reservations(g: Running) -> int:
    path = Path(g.settings.storage.state_dir) / "budgets.sqlite3"
    conn = sqlite3.connect(str(path))
    try:
        return int(conn.execute("SELECT count(*) FROM reservations WHERE closed = 0").fetchone()[0])
    finally:
        conn.close()


def request_records(g: Running) -> list[Any]:
    return [r for r in g.sink.records if r.kind == "request"]


async def settled(g: Running) -> None:
    """Exactly one request record, no reservation open, the day's usage what it bills."""
    with trio.fail_after(LIMIT_S):
        while not request_records(g):
            await trio.sleep(0.01)
        billed = sum(r.cost_micros for r in request_records(g))
        while open_reservations(g) or await reserved(g) != billed:
            await trio.sleep(0.01)
    assert len(request_records(g)) == 1, request_records(g)


def body(stream: bool) -> bytes:
    return orjson.dumps({"model": "oa", "messages": [{"role": "user", "content": "hi"}],
                         "max_tokens": 200, "stream": stream})  # fmt: skip


async def send_and_leave(g: Running, payload: bytes, until: Any) -> None:
    """POST ``payload`` on a raw connection, read until ``until(bytes so far)``, then close."""
    port = int(g.url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    head = (f"POST {OPENAI} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n")  # fmt: skip
    await stream.send_all(head.encode() + payload)
    got = b""
    with trio.fail_after(LIMIT_S):
        while not await until(got):
            with trio.move_on_after(0.01):
                got += await stream.receive_some(65536)
    await stream.aclose()


class SlowAnswer:
    """The store's reserve takes effect, and its answer does not come back (a slow reply)."""

    def __init__(self, store: Any) -> None:
        self.real = store.reserve
        self.reserved = trio.Event()

    async def reserve(self, rid: str, claims: Sequence[Claim], **kw: Any) -> Any:
        await self.real(rid, claims, **kw)
        self.reserved.set()
        await trio.sleep_forever()


@pytest.mark.parametrize("by", ["drain", "store_timeout"])
async def test_cancelled_while_the_reservation_answer_is_on_its_way(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, by: str
) -> None:
    sim = await start_simulator(nursery)
    s = settings(sim.url)
    s = with_changes(s, server={"shutdown_grace_s": 0.05},
                     budgets={"store_timeout_s": 600.0 if by == "drain" else 0.2})  # fmt: skip
    g = await start_gateway(nursery, s)
    gate = g.app.admission.gate  # type: ignore[union-attr]
    slow = SlowAnswer(gate.store)
    monkeypatch.setattr(gate.store, "reserve", slow.reserve)
    answers: list[int] = []

    async def ask() -> None:
        async with httpx.AsyncClient(timeout=30) as c:
            try:
                r = await c.post(g.url + OPENAI, content=body(False),
                                 headers={"authorization": f"Bearer {KEY}"})  # fmt: skip
                answers.append(r.status_code)
            except httpx.HTTPError:
                answers.append(0)  # the drain's cancellation closed the connection

    nursery.start_soon(ask)
    with trio.fail_after(LIMIT_S):
        await slow.reserved.wait()
    assert open_reservations(g) == 1
    if by == "drain":
        g.shutdown.set()
    await settled(g)
    assert sim.sim.stats.requests == 0  # nothing went upstream
    with trio.fail_after(LIMIT_S):
        while not answers:
            await trio.sleep(0.01)
    assert answers == [0 if by == "drain" else 503]


async def test_client_leaves_before_the_first_byte(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery, Fault(ttft_ms=60_000))
    g = await start_gateway(nursery, settings(sim.url))

    async def upstream_waiting(_: bytes) -> bool:
        return sim.sim.stats.active == 1

    await send_and_leave(g, body(True), upstream_waiting)
    await settled(g)
    (rec,) = request_records(g)
    assert (rec.status, rec.error_kind) == (499, "client_disconnected")


async def test_client_leaves_during_a_stream(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery, Fault(chunk_ms=50, tokens=200))
    g = await start_gateway(nursery, settings(sim.url))

    async def some_content(got: bytes) -> bool:
        return got.count(b'"content"') >= 3

    await send_and_leave(g, body(True), some_content)
    await settled(g)
    (rec,) = request_records(g)
    assert (rec.status, rec.error_kind) == (499, "client_disconnected")
    assert rec.output_tokens > 0 and rec.cost_micros > 0
