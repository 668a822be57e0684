"""Writing one answer: an error envelope, a whole completion, or a stream.

Each function returns what the connection should do next: ``"keep"`` (the
response is complete; keep-alive may reuse the connection), ``"close"`` or
``"reset"`` (abort with an RST). Per-chunk work in :func:`send_stream` is one
prebuilt-template concatenation, one h11 framing call and one write.
"""

from __future__ import annotations

from typing import Literal

import trio

from trioproxy.simulator.faults import DEFAULT_RETRY_AFTER, Fault
from trioproxy.simulator.http11 import Headers, HttpConnection
from trioproxy.simulator.plan import Plan, Wire
from trioproxy.simulator.stats import Exchange

Next = Literal["keep", "close", "reset"]

JSON = (b"content-type", b"application/json")
EVENT_STREAM = (b"content-type", b"text/event-stream; charset=utf-8")
_RETRY_STATUSES = frozenset({429, 529})


def _retry_after_value(seconds: float) -> bytes:
    return (b"%d" % seconds) if seconds == int(seconds) else str(seconds).encode()


async def send_json(
    conn: HttpConnection, ex: Exchange, status: int, body: bytes, headers: Headers
) -> Next:
    ex.head_sent(status)
    await conn.send_whole(status, [JSON, *headers], body)
    ex.finish("complete" if status < 400 else "error")
    return "keep"


async def send_error(
    conn: HttpConnection,
    ex: Exchange,
    wire: Wire,
    status: int,
    message: str,
    headers: Headers,
    *,
    retry_after: float | None = None,
) -> Next:
    """The provider's error envelope; 429/529 carry ``retry-after``."""
    extra = list(headers)
    if status in _RETRY_STATUSES:
        seconds = DEFAULT_RETRY_AFTER if retry_after is None else retry_after
        extra.append((b"retry-after", _retry_after_value(seconds)))
    return await send_json(conn, ex, status, wire.error_body(status, message), extra)


def _head(ex: Exchange, plan: Plan) -> None:
    ex.head_sent(200, plan.input_tokens)
    c = plan.cache
    ex.billed(c.read, c.write_5m, c.write_1h, plan.reasoning_tokens)


async def _write(conn: HttpConnection, data: bytes, drip_s: float | None) -> None:
    if drip_s is None:
        await conn.send_data(data)
        return
    for i in range(len(data)):
        if i:
            await trio.sleep(drip_s)
        await conn.send_data(data[i : i + 1])


async def send_completion(
    conn: HttpConnection, ex: Exchange, wire: Wire, plan: Plan, fault: Fault, headers: Headers
) -> Next:
    body = wire.completion(plan)
    _head(ex, plan)
    if fault.drip_ms is None and fault.reset_after is None:
        await conn.send_whole(200, [JSON, *headers], body)
    else:
        await conn.send_head(200, [JSON, *headers, (b"content-length", b"%d" % len(body))])
        if fault.reset_after is not None:
            return "reset"
        await _write(conn, body, None if fault.drip_ms is None else fault.drip_ms / 1000)
        await conn.send_end()
    ex.delivered(plan.output_tokens * plan.choices)
    ex.finish("complete")
    return "keep"


async def send_stream(
    conn: HttpConnection, ex: Exchange, wire: Wire, plan: Plan, fault: Fault, headers: Headers
) -> Next:
    """The SSE stream; ``reset_after`` counts content chunks (tokens) written."""
    chunk_s = (fault.chunk_ms or 0.0) / 1000
    drip_s = None if fault.drip_ms is None else fault.drip_ms / 1000
    reset_after = fault.reset_after
    _head(ex, plan)
    await conn.send_head(200, [EVENT_STREAM, (b"cache-control", b"no-cache"), *headers])
    await _write(conn, wire.stream_head(plan), drip_s)
    if plan.head_tokens:
        ex.delivered(plan.head_tokens)
    for event in wire.stream_prelude(plan):  # (Claude's thinking: billed, not "delivered")
        if chunk_s:
            await trio.sleep(chunk_s)
        await _write(conn, event, drip_s)
    encode = wire.chunk_encoder(plan)
    if drip_s is None and not chunk_s and reset_after is None:
        for piece in plan.pieces:  # the hot path: no faults in between
            await conn.send_data(encode(piece))
            ex.delivered(1)
    else:
        for i, piece in enumerate(plan.pieces):
            if i == reset_after:
                return "reset"
            if chunk_s and i:
                await trio.sleep(chunk_s)
            await _write(conn, encode(piece), drip_s)
            ex.delivered(1)
        if reset_after == len(plan.pieces):
            return "reset"
        if chunk_s:
            await trio.sleep(chunk_s)
    tail = wire.stream_tail(plan)
    if fault.no_end:  # the body ends right after the final event, without the end marker
        tail = tail.removesuffix(wire.end_event)
    await _write(conn, tail, drip_s)
    await conn.send_end()
    ex.finish("complete")
    return "keep"


__all__ = ["Next", "send_completion", "send_error", "send_json", "send_stream"]
