"""A stream whose body ends after its final event without the wire's end marker.

Some OpenAI-compatible servers end a stream's body right after the chunk with the finish
reason (and the usage chunk), without ``data: [DONE]``; the simulator's ``no_end`` fault
does that on the OpenAI and Anthropic wires (no ``message_stop``). The answer is whole: the
provider said why it finished. The gateway ended such a stream as an interrupted one (an
error event after the whole text, which the SDKs raise; the ledger said ``interrupted``).
Now it ends it as the wire would, the caller reads the whole answer and its usage, and the
ledger bills the provider's counts as served. A body that ends before the final event is
still an interrupted stream.
"""

from __future__ import annotations

import anthropic
import openai
import pytest
import trio

from tests.fixtures_gateway import start_gateway, start_simulator
from tests.settings_factory import KEY, chain_settings
from trioproxy.simulator.faults import Fault

HI = [{"role": "user", "content": "Tell me something short."}]


def read_openai(url: str) -> tuple[str, tuple[int, int] | None]:
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    text, usage = "", None
    stream = client.chat.completions.create(
        model="r",
        messages=HI,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
    return text, usage


def read_anthropic(url: str) -> tuple[str, tuple[int, int] | None]:
    client = anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)
    with client.messages.stream(model="r", max_tokens=50, messages=HI) as s:  # type: ignore[arg-type]
        final = s.get_final_message()
    text = "".join(b.text for b in final.content if b.type == "text")
    return text, (final.usage.input_tokens, final.usage.output_tokens)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("caller", ["openai", "anthropic"])
async def test_a_stream_without_its_end_marker_is_served_whole(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, provider: str, caller: str
) -> None:
    """Same wire (relayed verbatim) and across wires (decoded), both wires."""
    monkeypatch.setenv("SIMKEY", "x")
    sim = await start_simulator(nursery, Fault(no_end=True, tokens=12))
    g = await start_gateway(nursery, chain_settings([sim.url], kinds=[provider]))
    read = read_openai if caller == "openai" else read_anthropic
    text, usage = await trio.to_thread.run_sync(read, g.url)  # raised on an error event
    with trio.fail_after(30):
        while not (recs := [x for x in g.sink.records if x.kind == "request"]):
            await trio.sleep(0.02)
    rec = recs[0]
    assert rec.outcome == "served" and rec.status == 200, rec
    assert not rec.estimated  # the provider's own counts
    assert rec.output_tokens == 12 and len(text.split()) >= 10  # 12 one-token pieces
    assert usage == (rec.input_tokens, rec.output_tokens)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_body_that_ends_before_the_final_event_is_still_interrupted(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    """The guard on the other side: a reset after 5 of 12 pieces has no finish reason (an
    error before the first byte if the reset overtakes the pieces, interrupted after it)."""
    monkeypatch.setenv("SIMKEY", "x")
    sim = await start_simulator(nursery, Fault(no_end=True, reset_after=5, tokens=12))
    g = await start_gateway(nursery, chain_settings([sim.url], kinds=[provider]))
    with pytest.raises((openai.APIError, anthropic.APIError)):
        await trio.to_thread.run_sync(read_openai, g.url)
    with trio.fail_after(30):
        while not (recs := [x for x in g.sink.records if x.kind == "request"]):
            await trio.sleep(0.02)
    assert recs[0].outcome in ("interrupted", "error"), recs[0]
