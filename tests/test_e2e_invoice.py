"""The gateway's bill against a hand-computed invoice, cell by cell, over real sockets.

Cells: caller dialect (OpenAI, Anthropic) x provider (OpenAI, Anthropic) x streamed or not x
prompt cache (none, write, read; Anthropic also 1-hour writes and reads; an OpenAI reasoning
model), and broken streams. The simulator models the providers' prompt caches; for each request
the test takes what the provider reported (the simulator's counters), checks the caller saw the
same usage in its own dialect, checks the ledger record's buckets, and prices the provider's
usage by hand from list prices written out below (not through trioproxy's billing code).

Set ``TRIOPROXY_INVOICE_TABLE=<file>`` to append each cell as a Markdown table row.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import httpx
import orjson
import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway, start_simulator
from tests.settings_factory import KEY
from trioproxy.config import hash_key, parse_settings
from trioproxy.simulator import Simulator
from trioproxy.simulator.faults import Fault

W = 1500
"""Words (= tokens) of each long system prompt: its cached prefix is 4 + W = 1504 tokens."""
BROKEN_AFTER = 7

# Hand-written list prices, USD per 1M tokens: (input, output, cache read, write 5m, write 1h).
PRICES = {
    "gpt": ("2.50", "10.00", "1.25", "2.50", "2.50"),  # gpt-4o: cached input 50 %
    "o3": ("2.00", "8.00", "0.50", "2.00", "2.00"),  # o3: cached input 25 %
    "claude": ("3.00", "15.00", "0.30", "3.75", "6.00"),  # 0.1x, 1.25x, 2x
}
DEPLOYMENT = {"gpt": "gpt-4o", "o3": "o3", "claude": "claude-sonnet-4-5"}


@dataclass(frozen=True)
class Provided:
    """What the provider reported for one request (the simulator's counters)."""

    total_input: int
    read: int
    write_5m: int
    write_1h: int
    output: int
    """Billed output: delivered tokens plus hidden reasoning."""
    reasoning: int

    @property
    def uncached(self) -> int:
        return self.total_input - self.read - self.write_5m - self.write_1h


def invoice(model: str, p: Provided) -> int:
    """µUSD, rounded up once, from the hand-written list prices."""
    inp, out, read, w5, w1 = (Fraction(Decimal(x)) for x in PRICES[model])
    exact = (p.uncached * inp + p.read * read + p.write_5m * w5 + p.write_1h * w1
             + p.output * out)  # fmt: skip
    return math.ceil(exact)


def settings(ok_url: str, broken_url: str, state_dir: str) -> Any:
    providers = {}
    models = {}
    for prefix, url in (("", ok_url), ("broken-", broken_url)):
        providers[f"{prefix}oa"] = {"kind": "openai", "base_url": url, "api_key_env": "K"}
        providers[f"{prefix}an"] = {"kind": "anthropic", "base_url": url, "api_key_env": "K"}
        for name, (inp, out, *_rest) in PRICES.items():
            models[f"{prefix}{name}"] = {
                "provider": f"{prefix}{'an' if name == 'claude' else 'oa'}",
                "deployment": DEPLOYMENT[name],
                "input_per_mtok": float(inp),  # bucket prices: the providers' default rules
                "output_per_mtok": float(out),
            }
    return parse_settings(
        {
            "storage": {"state_dir": state_dir},
            "providers": providers,
            "models": models,
            "routes": {},
            "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t", "user": "u"}],
        },
        env={"K": "x"},
    )


def words(n: int, seed: str) -> str:
    return " ".join(f"{seed}{i}" for i in range(n))


def request_body(dialect: str, model: str, system: str | None, ttl: str | None,
                 stream: bool, question: str) -> dict[str, Any]:  # fmt: skip
    block: dict[str, Any] = {"type": "text", "text": system or "Be brief."}
    if system is not None:
        block["cache_control"] = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    body: dict[str, Any] = {"model": model, "stream": stream, "max_tokens": 100}
    if dialect == "openai":
        body["messages"] = [{"role": "system", "content": [block]},
                            {"role": "user", "content": question}]  # fmt: skip
        if stream:
            body["stream_options"] = {"include_usage": True}
    else:
        body["system"] = [block]
        body["messages"] = [{"role": "user", "content": question}]
    return body


def caller_usage(dialect: str, stream: bool, raw: bytes) -> dict[str, Any]:
    """The usage object the caller received (streams: the final one, merged as SDKs do)."""
    if not stream:
        return dict(orjson.loads(raw)["usage"])
    usage: dict[str, Any] = {}
    for line in raw.decode().splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        data = orjson.loads(line[6:])
        if dialect == "openai" and data.get("usage"):
            usage = data["usage"]
        elif data.get("type") == "message_start":
            usage.update(data["message"]["usage"])
        elif data.get("type") == "message_delta":
            usage.update(data["usage"])
    return usage


def check_caller_usage(dialect: str, u: dict[str, Any], p: Provided) -> None:
    if dialect == "openai":
        assert u["prompt_tokens"] == p.total_input
        assert u["prompt_tokens_details"]["cached_tokens"] == p.read
        assert u["completion_tokens"] == p.output
        assert u["completion_tokens_details"]["reasoning_tokens"] == p.reasoning
        assert u.get("cache_creation_input_tokens", 0) == p.write_5m + p.write_1h
    else:
        assert u["input_tokens"] == p.uncached
        assert u["cache_read_input_tokens"] == p.read
        assert u["cache_creation_input_tokens"] == p.write_5m + p.write_1h
        assert u["cache_creation"] == {"ephemeral_5m_input_tokens": p.write_5m,
                                       "ephemeral_1h_input_tokens": p.write_1h}  # fmt: skip
        assert u["output_tokens"] == p.output


def snapshot(sim: Simulator) -> tuple[int, ...]:
    s = sim.stats
    return (s.input_tokens, s.cache_read_tokens, s.cache_write_5m_tokens,
            s.cache_write_1h_tokens, s.output_tokens, s.reasoning_tokens)  # fmt: skip


def provided(before: tuple[int, ...], after: tuple[int, ...]) -> Provided:
    inp, read, w5, w1, delivered, reasoning = (b - a for a, b in zip(before, after, strict=True))
    return Provided(inp, read, w5, w1, delivered + reasoning, reasoning)


def table_row(cell: str, p: Provided, rec: Any, billed: int, hand: int) -> None:
    path = os.environ.get("TRIOPROXY_INVOICE_TABLE")
    if not path:
        return
    usage = f"in {p.uncached} / read {p.read} / w5m {p.write_5m} / w1h {p.write_1h} / out {p.output} (reasoning {p.reasoning})"
    buckets = (f"in {rec.input_tokens} / read {rec.cache_read_tokens} / "
               f"w5m {rec.cache_write_5m_tokens} / w1h {rec.cache_write_1h_tokens} / "
               f"out {rec.output_tokens} (reasoning {rec.reasoning_tokens})"
               + (" est." if rec.estimated else ""))  # fmt: skip
    with open(path, "a") as f:
        f.write(f"| {cell} | {usage} | {buckets} | {billed} | {hand} | {billed - hand} |\n")


class Cells:
    def __init__(self, g: Running, sims: dict[str, Simulator], client: httpx.AsyncClient) -> None:
        self.g, self.sims, self.client = g, sims, client

    async def run(self, cell: str, dialect: str, model: str, body: dict[str, Any],
                  sim: str = "ok") -> tuple[Provided, Any, bytes]:  # fmt: skip
        before = snapshot(self.sims[sim])
        seen = len(self.g.sink.records)
        path = "/v1/chat/completions" if dialect == "openai" else "/v1/messages"
        r = await self.client.post(path, content=orjson.dumps(body))
        assert r.status_code == 200, r.text
        with trio.fail_after(10):
            while not [x for x in self.g.sink.records[seen:] if x.kind == "request"]:
                await trio.sleep(0.01)
        rec = next(x for x in self.g.sink.records[seen:] if x.kind == "request")
        p = provided(before, snapshot(self.sims[sim]))
        return p, rec, r.content


@pytest.fixture
async def cells(nursery: trio.Nursery, tmp_path: Any) -> Cells:
    ok = await start_simulator(nursery)
    broken = await start_simulator(nursery, Fault(reset_after=BROKEN_AFTER, tokens=40))
    g = await start_gateway(nursery, settings(ok.url, broken.url, str(tmp_path)))
    client = httpx.AsyncClient(base_url=g.url, timeout=30,
                               headers={"authorization": f"Bearer {KEY}", "x-api-key": KEY})  # fmt: skip
    return Cells(g, {"ok": ok.sim, "broken": broken.sim}, client)


SCENARIOS = {
    # name: (marked long prefix?, ttl, repeat of the previous prompt?)
    "none": (False, None, False),
    "write": (True, None, False),
    "read": (True, None, True),
    "write-1h": (True, "1h", False),
    "read-1h": (True, "1h", True),
}


def expected(provider_model: str, scenario: str, total: int) -> tuple[int, int, int]:
    """(read, write 5m, write 1h) by hand: Anthropic caches the marked 1,504-token prefix;
    OpenAI caches a repeated prompt of 1,024+ tokens in 128-token steps (writes are free)."""
    marked, ttl, repeat = SCENARIOS[scenario]
    if not marked:
        return 0, 0, 0
    if provider_model == "claude":
        prefix = 4 + W
        if repeat:
            return prefix, 0, 0
        return (0, 0, prefix) if ttl == "1h" else (0, prefix, 0)
    return ((total // 128) * 128 if repeat else 0), 0, 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", ["gpt", "claude", "o3"])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
async def test_bill_equals_hand_computed_invoice(
    cells: Cells, dialect: str, model: str, stream: bool
) -> None:
    names = ["none", "write", "read"] + (["write-1h", "read-1h"] if model == "claude" else [])
    seed = f"{dialect[0]}{model}{int(stream)}"
    for scenario in names:
        marked, ttl, repeat = SCENARIOS[scenario]
        system = words(W, seed + (ttl or "")) if marked else None
        question = f"Question number {scenario}." if not repeat else "Question number again."
        body = request_body(dialect, model, system, ttl, stream, question)
        p, rec, raw = await cells.run(f"{scenario}", dialect, model, body)
        cell = f"{dialect} → {model} · {scenario} · {'stream' if stream else 'whole'}"
        assert (p.read, p.write_5m, p.write_1h) == expected(model, scenario, p.total_input), cell
        assert (p.reasoning > 0) == (model == "o3"), cell
        check_caller_usage(dialect, caller_usage(dialect, stream, raw), p)
        assert not rec.estimated
        assert (rec.input_tokens, rec.cache_read_tokens, rec.cache_write_5m_tokens,
                rec.cache_write_1h_tokens, rec.output_tokens, rec.reasoning_tokens) == (
            p.uncached, p.read, p.write_5m, p.write_1h, p.output, p.reasoning)  # fmt: skip
        hand = invoice(model, p)
        table_row(cell, p, rec, rec.cost_micros, hand)
        assert rec.cost_micros == hand, cell


@pytest.mark.parametrize("model", ["gpt", "claude"])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
async def test_broken_stream_bill_equals_invoice_of_what_was_delivered(
    cells: Cells, dialect: str, model: str
) -> None:
    """A stream cut after 7 tokens: billed for the prompt and the 7 delivered tokens. Anthropic
    reports the prompt's buckets up front (``message_start``), so they are exact; OpenAI reports
    nothing before the end, so a cached prefix is billed at the full input price (the gateway
    cannot know it was cached): that cell's overcharge is computed by hand too."""
    seed = f"b{dialect[0]}{model}"
    for scenario in ("none", "write", "read"):
        marked, ttl, repeat = SCENARIOS[scenario]
        system = words(W, seed) if marked else None
        question = "Broken again." if repeat else f"Broken {scenario}."
        body = request_body(dialect, f"broken-{model}", system, ttl, True, question)
        p, rec, raw = await cells.run(scenario, dialect, model, body, sim="broken")
        cell = f"{dialect} → {model} · {scenario} · stream broken after {BROKEN_AFTER}"
        assert b"error" in raw and p.output == BROKEN_AFTER, cell
        assert (p.read, p.write_5m, p.write_1h) == expected(model, scenario, p.total_input), cell
        assert rec.estimated and rec.output_tokens == BROKEN_AFTER
        hand = invoice(model, p)
        table_row(cell, p, rec, rec.cost_micros, hand)
        if model == "gpt" and p.read:
            # known: OpenAI's cached_tokens arrive only with the final usage chunk
            as_uncached = Provided(p.total_input, 0, 0, 0, p.output, p.reasoning)
            assert rec.input_tokens == p.total_input
            assert rec.cost_micros == invoice(model, as_uncached) > hand, cell
        else:
            assert (rec.input_tokens, rec.cache_read_tokens, rec.cache_write_5m_tokens,
                    rec.cache_write_1h_tokens) == (p.uncached, p.read, p.write_5m, p.write_1h)  # fmt: skip
            assert rec.cost_micros == hand, cell
