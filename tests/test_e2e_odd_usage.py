"""A provider's absurd usage counts, through the real gateway over real sockets.

A count past what any request can consume (2**63, which SQLite and PostgreSQL cannot
store; 1e30; a negative, a fraction, a string) is a malformed answer from that attempt
(:data:`trioproxy.core.usage.MAX_TOKENS`): before the first byte the race falls back to the
next target; after it (a stream's usage comes last) the stream ends with an error event and
the request is billed the gateway's estimate. Either way the caller reads its own dialect,
the ledger (SQLite, the real writer) holds every record once, the budget settles what the
ledger holds, and the metrics scrape.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway, start_simulator
from tests.settings_factory import KEY
from trioproxy.budget.periods import period_at
from trioproxy.config import hash_key, parse_settings
from trioproxy.config.model import Settings
from trioproxy.core.usage import MAX_TOKENS
from trioproxy.ledger.factory import SQLITE_NAME
from trioproxy.ledger.service import LedgerService
from trioproxy.simulator.faults import Fault

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


def stream_error(path: str, text: str) -> str:
    """The message of the error event that ended a stream, in the caller's dialect."""
    events = [e.split("\n") for e in text.strip().split("\n\n")]
    last = orjson.loads(events[-1][-1].removeprefix("data: "))
    if path == "/v1/responses":  # the Responses API ends a failed stream so
        assert events[-1][0] == "event: response.failed", events[-1]
        return str(last["response"]["error"]["message"])
    return str(error_of(path, last)["message"])


@pytest.mark.parametrize("odd_gateway", ODD, indirect=True)
async def test_absurd_usage_falls_back_errs_in_dialect_and_is_stored_once(
    odd_gateway: tuple[Running, str],
) -> None:
    g, state = odd_gateway
    ok = g.sims[1].sim
    served = failed = 0
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
            else:
                assert r.status_code == 200
                assert "usage" in stream_error(path, r.text)
                assert "[DONE]" not in r.text and "response.completed" not in r.text
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
    assert len(won) == served and not any(r["estimated"] for r in won)
    chats = [r for r in won if r["target"].startswith("m-ok-")]  # the simulator counts chats
    assert sum(r["input_tokens"] for r in chats) == ok.stats.input_tokens
    assert sum(r["output_tokens"] for r in chats) == ok.stats.output_tokens
    streamed = [
        r for r in requests if r["stream"] and r["status"] == 200 and r["target"] == "m-odd-oa"
    ]
    assert len(streamed) == 2 and all(r["estimated"] for r in streamed)
    assert all(r["output_tokens"] > 0 and r["cost_micros"] > 0 for r in streamed)
    # the budget holds what the ledger holds: each request settled once
    total = sum(r["cost_micros"] for r in requests)
    assert total > 0
    with trio.fail_after(30):
        while await team_day_usage(g) != total:
            await trio.sleep(0.02)
    async with httpx.AsyncClient(timeout=30) as c:  # a loaded box: 5 s is short
        scraped = await c.get(g.admin_url + "/metrics", headers=AUTH)
    assert scraped.status_code == 200 and "trioproxy_tokens_total" in scraped.text
