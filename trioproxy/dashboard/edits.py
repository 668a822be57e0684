"""In-place edits, one rule for every editable setting (budgets, alert thresholds, token
windows, key rates): parse what was sent, field by field, into changes.

A change names each field it touches: **keep** (a blank form field, or a JSON key left
out), **clear** (the form's ``clear_<field>`` box, or JSON ``null``) or **set** to a
parsed value. A field that does not parse is reported by name (:class:`EditError`, 400,
shown next to the field), and nothing is written unless every field is valid.

Parsers are pure: ``parse(raw) -> value`` or :class:`Invalid` with the message. Money is
parsed with :class:`~decimal.Decimal` to integer µUSD (the ledger's and the budgets' unit),
never through a float.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    Context,
    Decimal,
    DecimalException,
    Inexact,
    InvalidOperation,
    Rounded,
)
from typing import Any, Generic, Literal, TypeVar

from trioproxy.dashboard.actions import ActionError

T = TypeVar("T")
MICROS = Decimal(1_000_000)
MAX_USD = 1_000_000_000
"""Largest limit accepted (one billion USD): far above any real budget, far below any
store's integer range (µUSD fit in 2**53)."""
MAX_MICROS = MAX_USD * 1_000_000
_EXACT = Context(prec=100, Emin=MIN_EMIN, Emax=MAX_EMAX, traps=[Inexact, Rounded, InvalidOperation])
"""Exact for an amount of at most 64 characters: at the default 28 digits the product was
rounded first, and 12.345678999999999999999999999999 passed as 12.345679 (a review)."""
_THOUSANDS = re.compile(r"\d{1,3}(,\d{3})+(\.\d*)?")


class Invalid(ValueError):
    """The message to show next to the field."""


class EditError(ActionError):
    """Some fields are wrong: ``fields`` maps each to its message (400)."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()), 400)
        self.fields = dict(fields)


@dataclass(frozen=True, slots=True)
class Change(Generic[T]):
    op: Literal["keep", "clear", "set"]
    value: T | None = None

    def apply(self, current: T | None) -> T | None:
        if self.op == "keep":
            return current
        return None if self.op == "clear" else self.value


KEEP: Change[Any] = Change("keep")
Parser = Callable[[Any], Any]


# --- parsers ------------------------------------------------------------------------


def usd_micros(raw: Any) -> int:
    """A USD amount → integer µUSD: ``12``, ``12.5``, ``$1,000.25``; at most 6 decimals,
    not negative, at most ``MAX_USD``. Commas only as thousands separators."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise Invalid("must be a number of USD")
    text = str(raw).strip().removeprefix("$").strip() if isinstance(raw, str) else repr(raw)
    if "," in text:
        if not _THOUSANDS.fullmatch(text):
            raise Invalid("commas only between thousands (1,000.50); use '.' for decimals")
        text = text.replace(",", "")
    if len(text) > 64:
        raise Invalid(f"must be at most {MAX_USD:,} USD")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise Invalid("must be a number of USD") from None
    if not value.is_finite():
        raise Invalid("must be a finite number of USD")
    if value < 0:
        raise Invalid("must be a non-negative number of USD")
    if value > MAX_USD:
        raise Invalid(f"must be at most {MAX_USD:,} USD")
    try:
        micros: Decimal | None = _EXACT.multiply(value, MICROS)
    except DecimalException:  # not exact even at 100 digits: far more than 6 decimals
        micros = None
    if micros is None or micros != _EXACT.to_integral_value(micros):
        raise Invalid("at most 6 decimals (1 µUSD is the smallest unit)")
    return int(micros)


def whole(lo: int, hi: int, unit: str) -> Parser:
    """A whole number of ``unit`` in ``[lo, hi]`` (``1,000`` accepted)."""

    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise Invalid(f"must be a whole number of {unit}")
        if isinstance(raw, str):
            text = raw.strip()
            if "," in text and re.fullmatch(r"\d{1,3}(,\d{3})+", text):
                text = text.replace(",", "")
            if re.fullmatch(r"-\s*[0-9,]+", text):  # "-10" is a whole number, just too small
                raise Invalid(f"must be between {lo:,} and {hi:,} {unit}")
            if not re.fullmatch(r"[0-9]{1,19}", text):
                raise Invalid(f"must be a whole number of {unit}")
            raw = int(text)
        if not isinstance(raw, int):
            raise Invalid(f"must be a whole number of {unit}")
        if not lo <= raw <= hi:
            raise Invalid(f"must be between {lo:,} and {hi:,} {unit}")
        return raw

    return parse


def percent_share(raw: Any) -> float:
    """A form's percentage (``80`` or ``80%``, 1 to 100) → a share (0.8)."""
    text = str(raw).strip().removesuffix("%").strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise Invalid("must be a percentage from 1 to 100") from None
    if not value.is_finite() or not 1 <= value <= 100:
        raise Invalid("must be a percentage from 1 to 100")
    return float(value / 100)


def share(raw: Any) -> float:
    """JSON's share of a limit, above 0 and at most 1 (0.8 = 80 %)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= 1:
        raise Invalid("must be a number above 0 and at most 1")
    return float(raw)


# --- forms and JSON -------------------------------------------------------------------


def from_form(form: Mapping[str, str], parsers: Mapping[str, Parser]) -> dict[str, Change[Any]]:
    """A form: blank keeps, the ``clear_<field>`` box clears, anything else is parsed.

    A pre-filled field sent back as it was shown (its hidden ``orig_<field>``) keeps too: the
    page showed a cached value, and saving another field of the row must not write it back
    over a change made meanwhile elsewhere (another admin, the API, another worker)."""
    changes: dict[str, Change[Any]] = {}
    errors: dict[str, str] = {}
    for name, parse in parsers.items():
        raw = form.get(name, "").strip()
        if form.get(f"clear_{name}") in ("on", "1", "true"):
            changes[name] = Change("clear")
        elif not raw or raw == form.get(f"orig_{name}", "").strip():
            changes[name] = KEEP
        else:
            try:
                changes[name] = Change("set", parse(raw))
            except Invalid as err:
                errors[name] = str(err)
    if errors:
        raise EditError(errors)
    return changes


def from_json(body: Mapping[str, Any], parsers: Mapping[str, Parser]) -> dict[str, Change[Any]]:
    """A JSON object: a key left out keeps, ``null`` clears, anything else is parsed."""
    unknown = sorted(set(body) - set(parsers))
    if unknown:
        raise EditError({k: "unknown field" for k in unknown})
    changes: dict[str, Change[Any]] = {}
    errors: dict[str, str] = {}
    for name, parse in parsers.items():
        if name not in body:
            changes[name] = KEEP
        elif body[name] is None:
            changes[name] = Change("clear")
        else:
            try:
                changes[name] = Change("set", parse(body[name]))
            except Invalid as err:
                errors[name] = str(err)
    if errors:
        raise EditError(errors)
    return changes


def usd_text(micros: int | None) -> str:
    """``$1,234.5``: exact, no float, no trailing zeros; ``none`` for no limit."""
    if micros is None:
        return "none"
    return "$" + plain_usd(micros, group=True)


def plain_usd(micros: int | None, *, group: bool = False) -> str:
    """A µUSD amount as USD for an input field: exact, up to 6 decimals, no exponent."""
    if micros is None:
        return ""
    whole_part, frac = divmod(micros, 1_000_000)
    head = f"{whole_part:,}" if group else str(whole_part)
    tail = f"{frac:06d}".rstrip("0")
    return f"{head}.{tail}" if tail else head


__all__ = [
    "KEEP",
    "MAX_MICROS",
    "MAX_USD",
    "Change",
    "EditError",
    "Invalid",
    "from_form",
    "from_json",
    "percent_share",
    "plain_usd",
    "share",
    "usd_micros",
    "usd_text",
    "whole",
]
