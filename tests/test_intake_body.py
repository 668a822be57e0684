"""The intake's body read and the drain deadline (``Intake._read_body``): a body the server
says is all in (``trioproxy.body_ready``) is read without the drain's scope, since
``receive`` answers it at once; one still arriving is read in a scope the drain's end
cancels (503 gateway_shutting_down), at once after that end."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import trio

from trioproxy.config.model import ApiKeyConfig
from trioproxy.edge.auth import KeyRing
from trioproxy.edge.intake import Intake, Interrupts
from trioproxy.edge.refusals import Refused
from trioproxy.edge.respond import ResponseGuard
from trioproxy.errors import ErrorKind
from trioproxy.pipeline.slots import Slots

DIGEST = hashlib.sha256(b"k-secret").hexdigest()
BODY = b'{"model":"m","messages":[]}'
HEADERS = {b"authorization": b"Bearer k-secret", b"content-type": b"application/json"}


def intake() -> Intake:
    keys = KeyRing({DIGEST: ApiKeyConfig("k", DIGEST, "t", "u")})
    return Intake(keys, Slots(16, 0, 1.0, 0), 1 << 20, Interrupts())


def guard(ready: bool) -> ResponseGuard:
    async def send(message: dict[str, Any]) -> None:
        pass

    return ResponseGuard(send, {"trioproxy.body_ready": lambda: ready})


async def test_a_body_all_in_is_read_at_once() -> None:
    taker = intake()
    reads: list[int] = []

    async def receive() -> dict[str, Any]:
        reads.append(len(taker.interrupts.live))  # no drain scope armed around this read
        return {"type": "http.request", "body": BODY, "more_body": False}

    async with taker("openai", HEADERS, receive, guard(True), ()) as got:
        assert got is not None and got[1] == BODY
    assert reads == [0]


async def test_the_drain_deadline_ends_a_body_still_arriving() -> None:
    taker = intake()
    waiting = trio.Event()

    async def receive() -> dict[str, Any]:
        waiting.set()
        await trio.sleep_forever()  # the rest of the body never comes
        raise AssertionError

    async def drain_end() -> None:
        await waiting.wait()
        taker.interrupts.interrupt_all()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_end)
        with pytest.raises(Refused) as refused:
            async with taker("openai", HEADERS, receive, guard(False), ()):
                raise AssertionError("admitted")
    assert refused.value.error.kind is ErrorKind.SHUTTING_DOWN


async def test_after_the_drain_deadline_a_body_still_arriving_is_not_waited_for() -> None:
    taker = intake()
    taker.interrupts.interrupt_all()

    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()  # the rest of the body never comes
        raise AssertionError

    with pytest.raises(Refused) as refused:
        async with taker("openai", HEADERS, receive, guard(False), ()):
            raise AssertionError("admitted")
    assert refused.value.error.kind is ErrorKind.SHUTTING_DOWN
