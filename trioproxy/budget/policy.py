"""Run-time overrides of the config's admission policy, set by an admin (dashboard or API).

Kept in the budget store beside the team limits (``BudgetStore.get_policy`` /
``swap_policy``, a compare-and-set, or ``set_policy``: one string per name), so every worker
and every instance sharing the store reads the same values. Three kinds, each named by what it applies to:

* ``threshold:<team>``: the team's alert threshold (a share of each limit, ``null``: no
  alerts), instead of ``[budgets.teams.<team>] alert_threshold``;
* ``window:<user>``: the user's token window (``{"tokens": n, "window_s": s}``, ``null``:
  no window), instead of ``[budgets.users.<user>]`` (or ``*``);
* ``rate:<key name>``: the key's requests and tokens per minute (``{"rpm": n|null,
  "tpm": n|null}``), instead of the key's own.

Pure: values in, values out. An entry that does not decode is ignored (logged), so a bad
write can never stop admissions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trioproxy.budget.ticket import KeyRate
from trioproxy.config.model import UserWindow

log = logging.getLogger(__name__)

THRESHOLD = "threshold:"
WINDOW = "window:"
RATE = "rate:"


@dataclass(frozen=True, slots=True)
class KeyLimits:
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True, slots=True)
class Policy:
    thresholds: Mapping[str, float | None] = field(default_factory=dict)
    windows: Mapping[str, UserWindow | None] = field(default_factory=dict)
    rates: Mapping[str, KeyLimits] = field(default_factory=dict)

    @classmethod
    def decode(cls, raw: Mapping[str, str]) -> Policy:
        thresholds: dict[str, float | None] = {}
        windows: dict[str, UserWindow | None] = {}
        rates: dict[str, KeyLimits] = {}
        for name, text in raw.items():
            try:
                value = json.loads(text)
                if name.startswith(THRESHOLD):
                    thresholds[name[len(THRESHOLD) :]] = _share(value)
                elif name.startswith(WINDOW):
                    user = name[len(WINDOW) :]
                    windows[user] = None if value is None else _window(user, value)
                elif name.startswith(RATE):
                    rates[name[len(RATE) :]] = KeyLimits(_count(value["rpm"]), _count(value["tpm"]))
                else:
                    raise ValueError("unknown kind")
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("ignored policy entry %r: %s", name, exc)
        return cls(thresholds, windows, rates)

    def threshold(self, team: str, configured: float | None) -> float | None:
        return self.thresholds[team] if team in self.thresholds else configured

    def window(self, user: str, configured: UserWindow | None) -> UserWindow | None:
        """``user``'s own override; else, for a user whose ``configured`` window is the
        config's default (``*``) or none, the default's override; else ``configured``."""
        if user in self.windows:
            return self.windows[user]
        if DEFAULT_USER in self.windows and (configured is None or configured.user == DEFAULT_USER):
            return self.windows[DEFAULT_USER]
        return configured

    def key_limits(self, key: str, rpm: int | None, tpm: int | None) -> KeyLimits:
        return self.rates.get(key, KeyLimits(rpm, tpm))

    def rate(self, rate: KeyRate | None) -> KeyRate | None:
        if rate is None or rate.key not in self.rates:
            return rate
        r = self.rates[rate.key]
        return KeyRate(rate.key, r.rpm, r.tpm)


def _share(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"threshold {value!r} not in (0, 1]")
    return float(value)


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{value!r} is not a positive whole number")
    return value


def _window(user: str, value: Any) -> UserWindow:
    tokens, window_s = _count(value["tokens"]), _count(value["window_s"])
    if tokens is None or window_s is None:
        raise ValueError("a window needs tokens and window_s")
    return UserWindow(user, tokens, window_s)


def threshold_entry(team: str, share: float | None) -> tuple[str, str]:
    return THRESHOLD + team, json.dumps(share)


DEFAULT_USER = "*"
"""The token window of every user without one of their own (``[budgets.users."*"]``)."""


def window_entry(user: str, window: UserWindow | None) -> tuple[str, str]:
    value = None if window is None else {"tokens": window.tokens, "window_s": window.window_s}
    return WINDOW + user, json.dumps(value)


def rate_entry(key: str, limits: KeyLimits) -> tuple[str, str]:
    return RATE + key, json.dumps({"rpm": limits.rpm, "tpm": limits.tpm})


__all__ = ["DEFAULT_USER", "KeyLimits", "Policy", "rate_entry", "threshold_entry", "window_entry"]
