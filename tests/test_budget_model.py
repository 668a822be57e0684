"""The pure budget model on explicit clocks: periods, windows, prices, splits."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from trioproxy.budget.claims import (
    Claim,
    WorstCase,
    distribute,
    initial_reservation,
    merge_claims,
    scaled,
    usd_to_micros,
    worst_case,
)
from trioproxy.budget.periods import period_at, window_retry_after, window_usage
from trioproxy.config.model import ModelConfig
from trioproxy.config.pricing import prices_of, with_default_prices
from trioproxy.core.billing import bill
from trioproxy.core.types import Usage

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")


def ts(s: str, tz: ZoneInfo = UTC) -> float:
    return datetime.fromisoformat(s).replace(tzinfo=tz).timestamp()


@pytest.mark.parametrize(
    ("now", "kind", "name", "start", "end"),
    [
        ("2026-11-30T23:59:59", "month", "2026-11", "2026-11-01T00:00", "2026-12-01T00:00"),
        ("2026-12-01T00:00:00", "month", "2026-12", "2026-12-01T00:00", "2027-01-01T00:00"),
        ("2026-12-31T23:59:59.999", "month", "2026-12", "2026-12-01T00:00", "2027-01-01T00:00"),
        ("2028-02-29T12:00:00", "day", "2028-02-29", "2028-02-29T00:00", "2028-03-01T00:00"),
        ("2028-02-29T12:00:00", "month", "2028-02", "2028-02-01T00:00", "2028-03-01T00:00"),
    ],
)
def test_utc_periods(now: str, kind: str, name: str, start: str, end: str) -> None:
    p = period_at(kind, ts(now), UTC)  # type: ignore[arg-type]
    assert (p.name, p.start, p.end) == (name, ts(start), ts(end))


def test_berlin_day_resets_at_local_midnight() -> None:
    # 22:59:59 UTC on 21 Nov is 23:59:59 in Berlin (CET, UTC+1): still the 21st
    assert period_at("day", ts("2026-11-21T22:59:59"), BERLIN).name == "2026-11-21"
    p = period_at("day", ts("2026-11-21T23:00:00"), BERLIN)
    assert p.name == "2026-11-22"  # UTC still says the 21st
    assert p.start == ts("2026-11-22T00:00", BERLIN) == ts("2026-11-21T23:00")
    assert p.end - p.start == 86400


def test_berlin_dst_days_are_23_and_25_hours() -> None:
    spring = period_at("day", ts("2026-03-29T12:00", BERLIN), BERLIN)
    autumn = period_at("day", ts("2026-10-25T12:00", BERLIN), BERLIN)
    assert spring.end - spring.start == 23 * 3600
    assert autumn.end - autumn.start == 25 * 3600


def test_berlin_month_boundary() -> None:
    assert period_at("month", ts("2026-11-30T22:59:59"), BERLIN).name == "2026-11"
    p = period_at("month", ts("2026-11-30T23:00:00"), BERLIN)
    assert p.name == "2026-12" and p.end == ts("2027-01-01T00:00", BERLIN)


def test_window_usage_and_slide() -> None:
    log = [(100.0, 10), (130.0, 20), (150.0, 30)]
    assert window_usage(log, 159.9, 60) == 60
    assert window_usage(log, 160.0, 60) == 50  # an entry at exactly now - window has left
    assert window_usage(log, 209.9, 60) == 30
    assert window_usage(log, 210.0, 60) == 0


def test_window_retry_after() -> None:
    log = [(100.0, 10), (130.0, 20), (150.0, 30)]
    assert window_retry_after(log, 155.0, 60, 60, 0) == 0.0
    assert window_retry_after(log, 155.0, 60, 60, 5) == pytest.approx(5.0)  # (100,10) leaves at 160
    assert window_retry_after(log, 155.0, 60, 60, 15) == pytest.approx(35.0)  # and (130,20) at 190
    assert window_retry_after(log, 155.0, 60, 60, 60) == pytest.approx(55.0)
    assert window_retry_after(log, 155.0, 60, 60, 61) is None


def _model(name: str, inp: float, out: float, cap: int = 4096) -> ModelConfig:
    return ModelConfig(name, "p", name, inp, out, max_output_tokens=cap)


def test_prices_are_exact_micros() -> None:
    m = _model("m", 0.15, 0.6)
    # 0.15 µUSD/token as a float would drift; 1,000,000 tokens cost exactly $0.15
    prices = prices_of(m)
    assert bill(Usage(1_000_000, 0), prices).micros == 150_000
    assert bill(Usage(3, 1), prices).micros == 2  # 0.45 + 0.6 = 1.05 µUSD, rounded up
    assert sum(bill(Usage(1_000_000, 0), prices).micros for _ in range(10)) == 1_500_000
    assert usd_to_micros(0.1) == 100_000 and usd_to_micros(12.34) == 12_340_000


def test_worst_case_takes_most_expensive_model_per_request() -> None:
    cheap_in = _model("a", 1.0, 10.0, cap=1000)
    cheap_out = _model("b", 5.0, 2.0, cap=8000)
    # prompt-heavy: b is dearer; output-heavy: a is dearer
    assert worst_case(10_000, 10, [cheap_in, cheap_out]).usd_micros == 50_020
    assert worst_case(10, 800, [cheap_in, cheap_out]).usd_micros == 8_010
    # no max_tokens: each model's own cap
    wc = worst_case(100, None, [cheap_in, cheap_out])
    assert wc.usd_micros == max(100 + 10_000, 500 + 16_000)
    assert wc.tokens == 8100
    with pytest.raises(ValueError):
        worst_case(1, 1, [])


def test_worst_case_asks_no_model_for_more_than_its_cap() -> None:
    """A max_tokens above a model's ``max_output_tokens`` costs that model's cap (the
    upstream request carries the cap): 2**31 - 1 tokens asked reserve what 1,000 can cost."""
    a = _model("a", 1.0, 10.0, cap=1000)
    b = _model("b", 5.0, 2.0, cap=8000)
    assert worst_case(10, 5_000, [a, b]) == WorstCase(max(10 + 10_000, 50 + 10_000), 5_010)
    assert worst_case(10, 2**31 - 1, [a]) == worst_case(10, None, [a]) == WorstCase(10_010, 1_010)
    assert worst_case(10, 300, [a], n=3) == WorstCase(10 + 9_000, 910)  # 3 answers of 300
    assert worst_case(10, None, [a], n=2) == WorstCase(10 + 20_000, 2_010)


def test_worst_case_prices_the_prompt_in_the_dearest_input_bucket() -> None:
    claude = with_default_prices(_model("c", 3.0, 15.0), "anthropic")  # 1-hour write: $6/Mtok
    gpt = with_default_prices(_model("g", 2.5, 10.0), "openai")  # writes cost the input price
    assert worst_case(1_000, 100, [claude]).usd_micros == 6_000 + 1_500
    assert worst_case(1_000, 100, [gpt]).usd_micros == 2_500 + 1_000


def test_reservation_cap_floor_and_scaling() -> None:
    assert initial_reservation(1000, None) == 1000
    assert initial_reservation(1000, 300) == 300
    assert initial_reservation(1000, 300, floor=450) == 450
    assert initial_reservation(200, 300) == 200
    assert scaled(1000, 300, 1000) == 300 and scaled(1000, 1, 3) == 334


def test_distribute_keeps_earliest_holds_whole() -> None:
    assert distribute(250, [100, 100, 100]) == [100, 100, 50]
    assert distribute(0, [100, 100]) == [0, 0]
    assert distribute(350, [100, 100]) == [100, 250]  # excess on the last hold
    assert distribute(5, []) == []


def test_merge_claims_adds_per_bucket() -> None:
    a, b = Claim("x", 1, 10), Claim("y", 2, 10)
    assert merge_claims([a, b, Claim("x", 3, 10)]) == [Claim("x", 4, 10), b]
