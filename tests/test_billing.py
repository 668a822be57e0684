"""The usage model and the one billing step: both providers' conventions into disjoint buckets,
per-bucket prices with the providers' default rules, integer µUSD bills. Pure, no I/O."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

import orjson
import pytest

from trioproxy.config.load import parse_settings
from trioproxy.config.model import ModelConfig
from trioproxy.config.pricing import prices_of, with_default_prices
from trioproxy.core.billing import Prices, bill, least_micros, per_mtok, worst_case_micros
from trioproxy.core.types import Usage
from trioproxy.core.usage import (
    MAX_TOKENS,
    anthropic_json,
    from_anthropic,
    from_openai,
    from_responses,
    merge_anthropic,
    openai_json,
    token_count,
)
from trioproxy.providers.openai_embeddings import parse_response as parse_embeddings


def test_openai_subsets_become_disjoint_buckets() -> None:
    raw = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 192, "audio_tokens": 0},
    }
    u = from_openai(raw)
    assert u == Usage(86, 300, cache_read_tokens=1920, reasoning_tokens=192)
    assert u.prompt_tokens == 2006 and u.total == 2306
    assert from_openai({"prompt_tokens": 5, "completion_tokens": 1}) == Usage(5, 1)
    # null details (some compatible servers) are no details
    assert from_openai({"prompt_tokens": 5, "completion_tokens": 1,
                        "prompt_tokens_details": None}) == Usage(5, 1)  # fmt: skip


@pytest.mark.parametrize(
    "raw",
    [{"prompt_tokens": "5", "completion_tokens": 1}, {"completion_tokens": 1},
     {"prompt_tokens": 5, "completion_tokens": -1}],
)  # fmt: skip
def test_malformed_openai_usage_is_value_error(raw: dict) -> None:
    with pytest.raises(ValueError):
        from_openai(raw)


@pytest.mark.parametrize(
    "count", [2**63, 2**64 - 1, MAX_TOKENS + 1, 1e30, 2.5, -1, True, "12", [1], {"n": 1}]
)
def test_a_count_past_max_tokens_or_no_integer_is_malformed_in_every_reader(count: Any) -> None:
    """Where usage is read (chat, messages, responses, their details, embeddings, count_tokens)
    a count is an integer from 0 to MAX_TOKENS: the ledger's and the budget's integers hold it."""
    readers = [
        lambda: from_openai({"prompt_tokens": count, "completion_tokens": 1}),
        lambda: from_openai({"prompt_tokens": 5, "completion_tokens": count}),
        lambda: from_openai({"prompt_tokens": 5, "completion_tokens": 1,
                             "prompt_tokens_details": {"cached_tokens": count}}),
        lambda: from_openai({"prompt_tokens": 5, "completion_tokens": 1,
                             "completion_tokens_details": {"reasoning_tokens": count}}),
        lambda: from_anthropic({"input_tokens": count, "output_tokens": 1}),
        lambda: from_anthropic({"input_tokens": 1, "output_tokens": 1,
                                "cache_creation": {"ephemeral_1h_input_tokens": count}}),
        lambda: from_responses({"input_tokens": count, "output_tokens": 1}),
        lambda: parse_embeddings(orjson.dumps(
            {"data": [], "usage": {"prompt_tokens": count}}), estimate=3),
        lambda: token_count({"input_tokens": count}, "input_tokens", required=True),
    ]  # fmt: skip
    for n, read in enumerate(readers):
        with pytest.raises(ValueError, match="malformed usage field"):
            read()
            pytest.fail(f"reader {n} took {count!r}")
    assert (
        from_anthropic({"input_tokens": MAX_TOKENS, "output_tokens": 0}).input_tokens == MAX_TOKENS
    )
    # a provider that sends no usage is estimated, as before
    assert parse_embeddings(b'{"data": []}', estimate=3).estimated


def test_anthropic_fields_with_ttl_split() -> None:
    raw = {
        "input_tokens": 7,
        "cache_read_input_tokens": 9000,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
        "output_tokens": 50,
    }
    assert from_anthropic(raw) == Usage(
        7, 50, cache_read_tokens=9000, cache_write_5m_tokens=100, cache_write_1h_tokens=200
    )
    # without the split (older API versions) a creation is a 5-minute write
    assert from_anthropic({"input_tokens": 1, "cache_creation_input_tokens": 40,
                           "output_tokens": 2}).cache_write_5m_tokens == 40  # fmt: skip


def test_anthropic_stream_usage_merges_cumulatively() -> None:
    acc: dict = {}
    merge_anthropic(acc, {"input_tokens": 7, "cache_read_input_tokens": 9000,
                          "cache_creation": {"ephemeral_1h_input_tokens": 5},
                          "cache_creation_input_tokens": 5, "output_tokens": 1})  # fmt: skip
    merge_anthropic(acc, {"output_tokens": 40, "cache_read_input_tokens": None})
    assert from_anthropic(acc) == Usage(7, 40, cache_read_tokens=9000, cache_write_1h_tokens=5)


def test_rendering_round_trips_in_each_dialect() -> None:
    u = Usage(7, 50, cache_read_tokens=9000, cache_write_5m_tokens=100, cache_write_1h_tokens=200,
              reasoning_tokens=20)  # fmt: skip
    a = anthropic_json(u)
    assert a["input_tokens"] == 7 and a["cache_creation_input_tokens"] == 300
    assert from_anthropic(a) == Usage(7, 50, cache_read_tokens=9000, cache_write_5m_tokens=100,
                                      cache_write_1h_tokens=200)  # fmt: skip
    o = openai_json(u)
    assert o["prompt_tokens"] == 9307 and o["total_tokens"] == 9357
    assert o["prompt_tokens_details"] == {"cached_tokens": 9000}
    assert o["completion_tokens_details"] == {"reasoning_tokens": 20}
    # OpenAI has no cache-write field: Anthropic's ride along at the top level, read back
    assert o["cache_creation_input_tokens"] == 300
    assert from_openai(o) == u
    assert "cache_creation_input_tokens" not in openai_json(Usage(1, 1))


def test_default_prices_follow_each_providers_rules() -> None:
    claude = prices_of(with_default_prices(ModelConfig("c", "p", "claude", 3.0, 15.0), "anthropic"))
    assert claude == Prices(per_mtok("3"), per_mtok("15"), per_mtok("0.3"), per_mtok("3.75"),
                            per_mtok("6"))  # fmt: skip
    for deployment, price, cached in [
        ("gpt-4o-mini", 0.15, "0.075"), ("gpt-4.1-mini", 0.4, "0.1"), ("gpt-5", 1.25, "0.125"),
        ("o3", 2.0, "0.5"), ("o3-mini", 1.1, "0.55"), ("some-new", 0.2, "0.1"),
    ]:  # fmt: skip
        model = ModelConfig("g", "p", deployment, price, 1)
        p = prices_of(with_default_prices(model, "openai"))
        assert p.cache_read == per_mtok(cached), deployment
        assert p.cache_write_5m == p.cache_write_1h == p.input
    compat = prices_of(
        with_default_prices(ModelConfig("x", "p", "x", 1.0, 2.0), "openai_compatible")
    )
    assert compat.cache_read == compat.cache_write_1h == compat.input
    # a configured bucket price wins over the rule
    given = ModelConfig("c", "p", "claude", 3.0, 15.0, cache_read_per_mtok=0.25)
    assert prices_of(with_default_prices(given, "anthropic")).cache_read == per_mtok("0.25")


def test_a_resolved_model_carries_its_prices_and_a_copy_does_not() -> None:
    settings = parse_settings(
        {
            "providers": {"a": {"kind": "anthropic", "base_url": "http://127.0.0.1:9",
                                "api_key_env": "K"}},
            "models": {"c": {"provider": "a", "input_per_mtok": 3.0, "output_per_mtok": 15.0}},
            "routes": {"r": {"chains": {"default": [{"model": "c"}]}}},
            "api_keys": [{"name": "k", "key_sha256": "0" * 64, "team": "t"}],
        },
        env={"K": "x"},
    )  # fmt: skip
    model = settings.routes["r"].chains["default"].targets[0].spec
    assert model.resolved_prices == Prices(per_mtok("3"), per_mtok("15"), per_mtok("0.3"),
                                           per_mtok("3.75"), per_mtok("6"))  # fmt: skip
    assert prices_of(model) is model.resolved_prices  # read, not computed again
    dearer = dataclasses.replace(model, input_per_mtok=4.0)  # a copy never keeps stale prices
    assert dearer.resolved_prices is None and prices_of(dearer).input == per_mtok("4")


def test_bill_prices_each_bucket_once_and_rounds_up_once() -> None:
    p = prices_of(with_default_prices(ModelConfig("c", "p", "claude", 3.0, 15.0), "anthropic"))
    u = Usage(7, 50, cache_read_tokens=9000, cache_write_5m_tokens=100, cache_write_1h_tokens=200,
              reasoning_tokens=20)  # fmt: skip
    # 7*3 + 9000*0.3 + 100*3.75 + 200*6 + 50*15 = 21 + 2700 + 375 + 1200 + 750 = 5046 µUSD
    b = bill(u, p)
    assert b.micros == 5046
    assert b.no_cache_micros == 9307 * 3 + 750
    assert b.cache_savings_micros == 28671 - 5046
    # a fraction of a µUSD rounds up, once for the whole call
    tiny = Prices(Fraction(1, 3), Fraction(1, 3), Fraction(1, 3), Fraction(1, 3), Fraction(1, 3))
    assert bill(Usage(1, 1), tiny).micros == 1
    # a write-only call costs more than no cache: negative savings
    w = bill(Usage(0, 0, cache_write_1h_tokens=1000), p)
    assert (w.micros, w.cache_savings_micros) == (6000, -3000)


def test_worst_case_uses_the_dearest_input_bucket() -> None:
    p = prices_of(with_default_prices(ModelConfig("c", "p", "claude", 3.0, 15.0), "anthropic"))
    assert worst_case_micros(p, 1000, 10) == 6000 + 150
    for usage in (Usage(1000, 10), Usage(0, 10, cache_write_1h_tokens=1000),
                  Usage(0, 10, cache_read_tokens=500, cache_write_5m_tokens=500)):  # fmt: skip
        assert bill(usage, p).micros <= worst_case_micros(p, usage.prompt_tokens, 10)


@pytest.mark.parametrize(
    "texts",
    [
        ("0.15", "0.6", "0.075", "0.1875", "0.3"),
        ("3", "15", "0.3", "3.75", "6"),
        ("1", "3", "1", "7", "2"),
    ],
)
@pytest.mark.parametrize(("prompt", "out"), [(0, 0), (1, 0), (7, 3), (1000, 10), (123457, 4096)])
def test_bounds_in_integers_equal_the_exact_fractions(
    texts: tuple[str, ...], prompt: int, out: int
) -> None:
    import math

    ins, outp, read, w5m, w1h = (Fraction(t) / 3 for t in texts)  # thirds: a non-decimal grid
    p = Prices(ins, outp, read, w5m, w1h)
    assert worst_case_micros(p, prompt, out) == math.ceil(prompt * max(ins, read, w5m, w1h)
                                                          + out * outp)  # fmt: skip
    assert least_micros(p, prompt) == math.ceil(prompt * min(ins, read, w5m, w1h))
