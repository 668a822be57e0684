"""The edit parsers: money as Decimal to integer µUSD with bounds, whole numbers, shares."""

from __future__ import annotations

import pytest

from trioproxy.dashboard.app import usd
from trioproxy.dashboard.edits import (
    KEEP,
    Change,
    EditError,
    Invalid,
    from_form,
    from_json,
    percent_share,
    plain_usd,
    usd_micros,
    usd_text,
    whole,
)


@pytest.mark.parametrize(
    ("raw", "micros"),
    [
        ("12", 12_000_000),
        ("0.000001", 1),
        ("$1,000.25", 1_000_250_000),
        ("1,234,567", 1_234_567_000_000),
        (" 7.5 ", 7_500_000),
        ("1e3", 1_000_000_000),
        ("12.345678000000000000000000000000", 12_345_678),  # zeros are no decimals
        ("1000000000", 10**15),
        (0.1, 100_000),  # JSON numbers: their shortest decimal form, never binary noise
        (5, 5_000_000),
    ],
)
def test_usd_to_integer_micros(raw: object, micros: int) -> None:
    assert usd_micros(raw) == micros


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("1e13", "at most 1,000,000,000 USD"),
        (1e13, "at most 1,000,000,000 USD"),
        ("1000000000.000001", "at most 1,000,000,000 USD"),
        ("0.0000001", "at most 6 decimals"),
        # past 28 digits: the product was rounded at the default precision (12.345679) first
        ("12.345678999999999999999999999999", "at most 6 decimals"),
        ("0.00000000000000000000000000001", "at most 6 decimals"),
        ("1e-999999999999999999", "at most 6 decimals"),
        ("-1", "non-negative"),
        ("-0.000001", "non-negative"),
        ("NaN", "finite"),
        ("nan", "finite"),
        ("-inf", "finite"),
        ("Infinity", "finite"),
        ("1,5", "commas only between thousands"),
        ("1,00", "commas only between thousands"),
        ("12,345,67", "commas only between thousands"),
        ("lots", "must be a number"),
        ("1" * 400, "at most 1,000,000,000 USD"),
        (True, "must be a number"),
        ([1], "must be a number"),
    ],
)
def test_bad_usd_says_what_is_wrong(raw: object, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        usd_micros(raw)


def test_usd_text_is_exact() -> None:
    assert usd_text(None) == "none"
    assert usd_text(10) == "$0.00001"
    assert usd_text(1_234_500_000) == "$1,234.5"
    assert plain_usd(10**15) == "1000000000"
    assert plain_usd(None) == ""


def test_whole_numbers_and_percentages() -> None:
    rpm = whole(1, 100, "requests")
    assert rpm("60") == 60 and rpm(" 1 ") == 1 and rpm(100) == 100
    for bad in ("0", "101", "1.5", "-3", "x", True, 2.0):
        with pytest.raises(Invalid):
            rpm(bad)
    assert whole(1, 10**9, "tokens")("1,000,000") == 1_000_000
    # -10 is a whole number, below the range (it said "must be a whole number of tokens")
    for negative in ("-10", "- 10", "-1,000"):
        with pytest.raises(Invalid, match="must be between 1 and 100 requests"):
            rpm(negative)
    assert percent_share("80") == 0.8 and percent_share("12.5%") == 0.125
    for bad in ("0", "101", "nan", "x"):
        with pytest.raises(Invalid):
            percent_share(bad)


def test_forms_keep_clear_set_and_report_every_bad_field() -> None:
    parsers = {"a": usd_micros, "b": usd_micros, "c": usd_micros}
    changes = from_form({"a": "", "b": "2", "clear_c": "on", "c": "9"}, parsers)
    assert changes == {"a": KEEP, "b": Change("set", 2_000_000), "c": Change("clear")}
    with pytest.raises(EditError) as err:
        from_form({"a": "-1", "b": "x", "c": "3"}, parsers)
    assert set(err.value.fields) == {"a", "b"} and err.value.status == 400
    assert from_json({"b": None, "c": 1}, parsers) == {
        "a": KEEP, "b": Change("clear"), "c": Change("set", 1_000_000),
    }  # fmt: skip
    with pytest.raises(EditError) as err:
        from_json({"d": 1}, parsers)
    assert err.value.fields == {"d": "unknown field"}
    assert (
        Change("set", 3).apply(1) == 3 and KEEP.apply(1) == 1 and Change("clear").apply(1) is None
    )


def test_a_limit_below_a_cent_is_shown_as_it_is() -> None:
    assert usd(0.00001, 2) == "$0.00001" and usd(12.345, 2) == "$12.345"
    assert usd(100.0, 2) == "$100.00" and usd(1234.5, 2) == "$1,234.50"
    assert usd(0.000152) == "$0.000152" and usd(None) == "-"
