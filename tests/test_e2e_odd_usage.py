"""A provider's absurd usage counts, through the real gateway over real sockets.

A count past what any request can consume (2**63, which SQLite and PostgreSQL cannot
store; 1e30; a negative, a fraction, a string) is a malformed answer from that attempt
(:data:`trioproxy.core.usage.MAX_TOKENS`): before the first byte the race falls back to the
next target; after it (a stream's usage comes after its content, which is complete) the
stream ends as one without usage ends, no error appended and no odd count relayed (the caller
reads the usage billed where the odd one was), and the request is billed the gateway's
estimate, logged and counted. Either way the caller reads
its own dialect, the ledger (SQLite, the real writer) holds every record once, the budget
settles what the ledger holds, and the metrics scrape.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway, start_simulator
from tests.settings_factory import KEY
from trioproxy.budget.periods import period_at
from trioproxy.config import hash_key, parse_settings
from trioproxy.config.model import Settings
from trioproxy.core.types import Usage, UsageReport
from trioproxy.core.usage import MAX_TOKENS, openai_json, responses_json
from trioproxy.ledger.factory import SQLITE_NAME
from trioproxy.ledger.service import LedgerService
from trioproxy.simulator.faults import Fault
from trioproxy.upstream.meter import Meter

AUTH = {"authorization": f"Bearer {KEY}"}
HI = [{"role": "user", "content": "Count the tokens of this, please."}]
ODD = ["9223372036854775808", "18446744073709551615", "1e30", "-1", "2.5", '"12"',
       str(MAX_TOKENS + 1)]  # fmt: skip
"""2**63 (one past SQLite's and PostgreSQL's integers), 2**64 - 1 (still an int to orjson)."""


def odd_settings(odd: str, ok: str, state_dir: str) -> Settings:
    price = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
    kinds = {"oa": "openai", "an": "anthropic"}
    return parse_settings(
        {
            "storage": {"state_dir": state_dir},
            "providers": {
                f"{side}-{k}": {"kind": kind, "base_url": url, "api_key_env": "K"}
                for k, kind in kinds.items()
                for side, url in (("odd", odd), ("ok", ok))
            },
            "models": {
                **{
                    f"m-{side}-{k}": {"provider": f"{side}-{k}", **price}
                    for k in kinds
                    for side in ("odd", "ok")
                },
                **{
                    f"e-{side}": {"provider": f"{side}-oa", "input_per_mtok": 0.02}
                    for side in ("odd", "ok")
                },
            },
            "routes": {
                **{
                    k: {"chains": {"default": [{"model": f"m-odd-{k}"}, {"model": f"m-ok-{k}"}]}}
                    for k in kinds
                },
                **{f"{k}-only": {"chains": {"default": [{"model": f"m-odd-{k}"}]}} for k in kinds},
                "emb": {"chains": {"default": [{"model": "e-odd"}, {"model": "e-ok"}]}},
                "emb-only": {"chains": {"default": [{"model": "e-odd"}]}},
            },
            "api_keys": [
                {
                    "name": "k",
                    "key_sha256": hash_key(KEY),
                    "team": "t1",
                    "user": "u1",
                    "admin": True,
                }
            ],
            "budgets": {"teams": {"t1": {"daily_usd": 100.0}}},
        },
        env={"K": "x"},
    )


def rows(state_dir: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(str(Path(state_dir) / SQLITE_NAME))
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM ledger_raw ORDER BY ts, attempt").fetchall()
    finally:
        conn.close()


async def ledger_requests(state_dir: str, n: int) -> list[sqlite3.Row]:
    with trio.fail_after(30):  # the writer commits a batch within its flush interval
        while len(got := [r for r in rows(state_dir) if r["kind"] == "request"]) < n:
            await trio.sleep(0.05)
    return got


async def team_day_usage(g: Running) -> int:
    gate = g.app.admission.gate  # type: ignore[union-attr]
    now = gate.clock()
    period = period_at("day", now, gate._tz)
    return int(await gate.store.usage(f"team:t1:day:{period.name}", now=now))


def body_for(path: str, route: str, stream: bool) -> dict[str, Any]:
    if path == "/v1/responses":
        return {"model": route, "input": "Count the tokens of this, please.", "stream": stream}
    body: dict[str, Any] = {"model": route, "messages": HI, "max_tokens": 50, "stream": stream}
    if path == "/v1/chat/completions" and stream:
        body["stream_options"] = {"include_usage": True}
    return body


PATHS = {"/v1/chat/completions": "oa", "/v1/responses": "oa", "/v1/messages": "an"}


@pytest.fixture
async def odd_gateway(
    nursery: trio.Nursery, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[Running, str]:
    odd = await start_simulator(nursery, Fault(usage=request.param))
    ok = await start_simulator(nursery)
    state = str(tmp_path)
    settings = odd_settings(odd.url, ok.url, state)
    ledger = LedgerService(settings.storage)  # the real writer and SQLite backend
    g = await start_gateway(nursery, settings, sink=ledger, services=[ledger.run])  # type: ignore[arg-type]
    g.sims += [odd, ok]
    return g, state


def error_of(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The error object of the caller's dialect (Anthropic's envelope has ``type: error``)."""
    if path == "/v1/messages":
        assert payload["type"] == "error", payload
    err = payload["error"]
    assert err["message"] and err["type"], payload
    return dict(err)


@pytest.mark.parametrize("odd_gateway", ODD, indirect=True)
async def test_absurd_usage_falls_back_errs_in_dialect_and_is_stored_once(
    odd_gateway: tuple[Running, str], caplog: pytest.LogCaptureFixture
) -> None:
    g, state = odd_gateway
    ok = g.sims[1].sim
    served = failed = bad_streams = 0
    read: dict[str, tuple[str, dict[str, Any]]] = {}  # a stream's usage, by its request id
    caplog.set_level(logging.WARNING, logger="trioproxy.edge.handler")
    async with httpx.AsyncClient(base_url=g.url, headers=AUTH, timeout=30) as c:
        for path, k in PATHS.items():
            # before the first byte: the next target answers, with its own usage
            r = await c.post(path, json=body_for(path, k, False))
            assert r.status_code == 200, r.text
            assert r.headers["x-trioproxy-target"] == f"m-ok-{k}"
            served += 1
            # the only target: a 502 in the caller's dialect
            r = await c.post(path, json=body_for(path, f"{k}-only", False))
            assert r.status_code == 502, r.text
            assert "usage" in error_of(path, r.json())["message"]
            failed += 1
            # a stream: OpenAI's usage comes after the content, so an error event ends it;
            # Anthropic's comes first (message_start): before the first byte, as above
            r = await c.post(path, json=body_for(path, f"{k}-only", True))
            if path == "/v1/messages":
                assert r.status_code == 502, r.text
                assert "usage" in error_of(path, r.json())["message"]
                r = await c.post(path, json=body_for(path, k, True))  # and falls back
                assert r.status_code == 200 and "event: message_stop" in r.text, r.text
                assert r.headers["x-trioproxy-target"] == f"m-ok-{k}"
                served += 1
            else:  # the content went out whole: the stream ends as without usage
                assert r.status_code == 200
                assert r.text.endswith("data: [DONE]\n\n" if path == "/v1/chat/completions"
                                       else "}\n\n"), r.text[-300:]  # fmt: skip
                events = [orjson.loads(line.removeprefix("data: "))
                          for line in r.text.splitlines()
                          if line.startswith("data: {")]  # fmt: skip
                assert not any("error" in e for e in events), r.text[-500:]
                rid = r.headers["x-request-id"]
                if path == "/v1/responses":
                    assert events[-1]["type"] == "response.completed"
                    assert events[-1]["response"]["usage"]["output_tokens"] > 0  # estimated
                    read[rid] = path, events[-1]["response"]["usage"]
                    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
                else:  # the odd usage chunk is left out, the gateway's ends the stream
                    assert events[-2]["choices"][0]["finish_reason"] == "stop"
                    assert events[-1]["choices"] == [] and events[-1]["usage"], events[-1]
                    assert not any(e.get("usage") for e in events[:-1])
                    read[rid] = path, events[-1]["usage"]
                    deltas = [e for e in events[:-1] if e["choices"][0]["delta"].get("content")]
                assert deltas, r.text[-300:]
                bad_streams += 1
                served += 1
                continue
            failed += 1
        # embeddings: the next target's vectors and count
        r = await c.post("/v1/embeddings", json={"model": "emb", "input": "hi there"})
        assert r.status_code == 200, r.text
        assert r.headers["x-trioproxy-target"] == "e-ok"
        assert 0 < r.json()["usage"]["prompt_tokens"] <= MAX_TOKENS
        served += 1
        r = await c.post("/v1/embeddings", json={"model": "emb-only", "input": "hi there"})
        assert r.status_code == 502, r.text
        assert "usage" in error_of("/v1/embeddings", r.json())["message"]
        failed += 1
        # count_tokens: the provider's count is no count, so the gateway estimates
        r = await c.post("/v1/messages/count_tokens", json={"model": "an", "messages": HI})
        assert r.status_code == 200, r.text
        assert r.json()["estimated"] is True and 0 < r.json()["input_tokens"] <= MAX_TOKENS
        assert r.headers["x-trioproxy-token-count"] == "estimated"
        counted = 1
    requests = await ledger_requests(state, served + failed + counted)
    everything = rows(state)
    assert len(requests) == served + failed + counted
    assert len({(r["request_id"], r["kind"], r["attempt"]) for r in everything}) == len(everything)
    counts = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_5m_tokens",
              "cache_write_1h_tokens", "reasoning_tokens")  # fmt: skip
    assert all(0 <= r[c] <= MAX_TOKENS for r in everything for c in counts)
    won = [
        r for r in requests if r["status"] == 200 and (r["target"] or "")[:5] in ("m-ok-", "e-ok")
    ]
    assert len(won) == served - bad_streams and not any(r["estimated"] for r in won)
    chats = [r for r in won if r["target"].startswith("m-ok-")]  # the simulator counts chats
    assert sum(r["input_tokens"] for r in chats) == ok.stats.input_tokens
    assert sum(r["output_tokens"] for r in chats) == ok.stats.output_tokens
    streamed = [
        r for r in requests if r["stream"] and r["status"] == 200 and r["target"] == "m-odd-oa"
    ]
    assert len(streamed) == bad_streams == 2 and all(r["estimated"] for r in streamed)
    assert all(r["output_tokens"] > 0 and r["cost_micros"] > 0 for r in streamed)
    assert all(r["outcome"] == "served" and r["error_kind"] is None for r in streamed)
    for row in streamed:  # each caller read what the ledger holds
        path, usage = read[row["request_id"]]
        billed = Usage(row["input_tokens"], row["output_tokens"], estimated=True,
                       cache_read_tokens=row["cache_read_tokens"],
                       cache_write_5m_tokens=row["cache_write_5m_tokens"],
                       cache_write_1h_tokens=row["cache_write_1h_tokens"],
                       reasoning_tokens=row["reasoning_tokens"])  # fmt: skip
        assert usage == (responses_json if path == "/v1/responses" else openai_json)(billed)
    warned = [r for r in caplog.records if "malformed usage" in r.getMessage()]
    assert {r.fields["request_id"] for r in warned} >= {  # type: ignore[attr-defined]
        r["request_id"] for r in streamed
    }
    # the budget holds what the ledger holds: each request settled once
    total = sum(r["cost_micros"] for r in requests)
    assert total > 0
    with trio.fail_after(30):
        while await team_day_usage(g) != total:
            await trio.sleep(0.02)
    async with httpx.AsyncClient(timeout=30) as c:  # a loaded box: 5 s is short
        scraped = await c.get(g.admin_url + "/metrics", headers=AUTH)
    assert scraped.status_code == 200 and "trioproxy_tokens_total" in scraped.text
    bad = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
           for line in scraped.text.splitlines()
           if line.startswith("trioproxy_upstream_bad_usage_total{")}  # fmt: skip
    assert bad.get('target="m-odd-oa"', 0) >= 2  # the streams, and the attempts before a byte


async def test_a_verbatim_stream_with_odd_usage_ends_whole_and_is_billed_the_estimate(
    nursery: trio.Nursery,
) -> None:
    """No budget and no cache: the same-wire stream is relayed verbatim. Its odd usage
    chunk is left out, ``[DONE]`` still ends it, and the request is billed the estimate,
    which a usage chunk of the gateway's says before ``[DONE]`` (none was relayed: the caller
    read no usage at all)."""
    from tests.settings_factory import chain_settings

    odd = await start_simulator(nursery, Fault(usage="1e30"))
    g = await start_gateway(nursery, chain_settings([odd.url]))
    body = {"model": "r", "messages": HI, "max_tokens": 50, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(g.url + "/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n"), r.text[-300:]
    assert ":1e30" not in r.text and '"error"' not in r.text  # (ids may hold "1e30")
    assert '"finish_reason":"stop"' in r.text
    assert "fp_trioproxy_sim" in r.text  # the provider's own bytes: relayed verbatim
    with trio.fail_after(30):
        while not (recs := [x for x in g.sink.records if x.kind == "request"]):
            await trio.sleep(0.02)
    assert recs[0].estimated and recs[0].output_tokens > 0 and recs[0].outcome == "served"
    last = [orjson.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {")][-1]
    assert last["choices"] == [] and "fp_trioproxy_sim" == last["system_fingerprint"]
    assert (last["usage"]["prompt_tokens"], last["usage"]["completion_tokens"]) == (
        recs[0].input_tokens, recs[0].output_tokens,
    )  # fmt: skip


async def test_a_verbatim_anthropic_stream_with_odd_usage_tells_the_caller_what_it_is_billed(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same wire, Anthropic: ``message_delta`` must carry a usage, and the odd one is left out.
    Its caller read ``output_tokens: 0`` while the ledger billed the estimate; it now reads
    what is billed, as a decoded stream's caller does."""
    from tests.settings_factory import chain_settings

    monkeypatch.setenv("SIMKEY", "x")
    odd = await start_simulator(nursery, Fault(usage="1e30", late_usage=True, tokens=12))
    g = await start_gateway(nursery, chain_settings([odd.url], kinds=["anthropic"]))

    def read() -> int:
        ant = anthropic.Anthropic(base_url=g.url, api_key=KEY, max_retries=0)
        with ant.messages.stream(model="r", max_tokens=50, messages=HI) as s:  # type: ignore[arg-type]
            return s.get_final_message().usage.output_tokens

    output = await trio.to_thread.run_sync(read)
    with trio.fail_after(30):
        while not (recs := [x for x in g.sink.records if x.kind == "request"]):
            await trio.sleep(0.02)
    assert recs[0].estimated and recs[0].outcome == "served"
    assert output == recs[0].output_tokens == 12  # 12 one-token pieces


@pytest.mark.parametrize("fault", [Fault(no_usage=True, tokens=12), Fault(usage="null", tokens=12)])
async def test_an_answer_without_usage_tells_the_caller_what_it_is_billed(
    nursery: trio.Nursery, fault: Fault
) -> None:
    """An OpenAI-wire server that sends no counts (one that ignores ``stream_options``), or
    counts that are no counts after the content: an Anthropic caller read input 0 / output 0
    (a stream's ``message_delta``), a whole answer's caller 0 input and its text's estimate
    (an OpenAI caller's, relayed as it came: no usage), while the ledger billed the gateway's
    estimate. Every caller now reads what is billed."""
    from tests.settings_factory import chain_settings

    sim = await start_simulator(nursery, fault)
    g = await start_gateway(nursery, chain_settings([sim.url]))

    def sdks() -> list[tuple[int, int]]:
        ant = anthropic.Anthropic(base_url=g.url, api_key=KEY, max_retries=0)
        with ant.messages.stream(model="r", max_tokens=50, messages=HI) as s:  # type: ignore[arg-type]
            streamed = s.get_final_message().usage
        read = [(streamed.input_tokens, streamed.output_tokens)]
        if fault.no_usage:  # (counts that are no counts fail a whole answer: a 502)
            whole = ant.messages.create(model="r", max_tokens=50, messages=HI).usage  # type: ignore[arg-type]
            read.append((whole.input_tokens, whole.output_tokens))
            oai = openai.OpenAI(base_url=g.url + "/v1", api_key=KEY, max_retries=0)
            same_wire = oai.chat.completions.create(model="r", messages=HI).usage  # type: ignore[arg-type]
            assert same_wire is not None  # the provider's own body, with the usage billed
            read.append((same_wire.prompt_tokens, same_wire.completion_tokens))
        return read

    read = await trio.to_thread.run_sync(sdks)
    with trio.fail_after(30):
        while len(recs := [x for x in g.sink.records if x.kind == "request"]) < len(read):
            await trio.sleep(0.02)
    assert all(r.estimated and r.outcome == "served" for r in recs)
    assert read == [(r.input_tokens, r.output_tokens) for r in recs[: len(read)]]
    assert all(i > 0 and o == 12 for i, o in read), read  # 12 one-token pieces


def test_an_input_count_said_late_or_never_is_not_zero() -> None:
    """``message_start`` with ``"input_tokens": null`` was read as 0 input tokens, exact: with
    the final usage no usage either, the prompt was billed as nothing. A server that counts
    the prompt only in ``message_delta`` is billed that count; one that never counts it is no
    usage (the gateway's estimate, and its warning); a usage that is not an object is no usage."""
    from trioproxy.core.types import SSEEvent
    from trioproxy.providers.anthropic import AnthropicStreamDecoder

    def run(start: object, delta: object) -> tuple[Any, Any, str | None]:
        decoder = AnthropicStreamDecoder()
        message = {"id": "m1", "model": "x", "content": [], **({} if start is None else start)}
        events = decoder.feed(SSEEvent(orjson.dumps({"type": "message_start",
                                                     "message": message}).decode()))  # fmt: skip
        body = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": delta}
        events += decoder.feed(SSEEvent(orjson.dumps(body).decode()))
        reports = [e.usage for e in events if isinstance(e, UsageReport)]
        return events[0].usage, reports[0] if reports else None, decoder.bad_usage

    nulls = {"usage": {"input_tokens": None, "output_tokens": None}}
    up_front, total, bad = run(nulls, {"input_tokens": 9, "output_tokens": 3})
    assert up_front is None and bad is None  # said late: billed exactly
    assert (total.input_tokens, total.output_tokens, total.estimated) == (9, 3, False)
    up_front, total, bad = run(nulls, {"output_tokens": None})
    assert up_front is None and total is None and bad is not None
    meter = Meter(received_any=True, output_estimate=3)
    assert meter.final(16).input_tokens == 16  # the prompt's estimate, not 0
    up_front, total, bad = run({"usage": {"output_tokens": 1}}, {"output_tokens": 3})
    assert total is None and bad is not None and "input_tokens" in bad  # never said
    up_front, total, bad = run({"usage": {"input_tokens": 9, "output_tokens": 1}},
                               {"output_tokens": 3})  # fmt: skip
    assert up_front.input_tokens == 9 and (total.input_tokens, total.output_tokens) == (9, 3)
    assert run(None, {"input_tokens": 2, "output_tokens": 3})[1].input_tokens == 2
    up_front, total, bad = run({"usage": "lots"}, {"input_tokens": 2, "output_tokens": 3})
    assert up_front is None and bad is not None and "message_start" in bad
