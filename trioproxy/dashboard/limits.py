"""Editing users' token windows and keys' requests / tokens per minute, like budgets.

Both are policy overrides in the budget store (:mod:`trioproxy.budget.policy`): the
gate reads them on this worker from its next request and on every other worker and
instance within its ``limits_ttl_s``. Fields follow :mod:`.edits`; each change is audited.
Each edit is computed from the entry the store holds and written with compare-and-set
(:func:`~trioproxy.dashboard.actions.edit_override`): two admins changing a key's rpm and its
tpm at once both land, and the audit's old value is the value the edit replaced.

Who may edit what: a user's window belongs to the teams of that user's keys, a key's
rates to its team; an admin limited to some teams edits only those.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trioproxy.admin.keys import MAX_RATE
from trioproxy.admin.sessions import Principal
from trioproxy.admin.store import AdminStore
from trioproxy.budget.policy import (
    DEFAULT_USER,
    RATE,
    WINDOW,
    KeyLimits,
    Policy,
    rate_entry,
    window_entry,
)
from trioproxy.config.model import UserWindow
from trioproxy.dashboard.actions import ActionError, Swap, budget_gate, edit_override
from trioproxy.dashboard.edits import KEEP, Change, EditError, Parser, whole
from trioproxy.edge.app import Gateway

MAX_TOKENS = 10**12
MAX_WINDOW_S = 31 * 86400
DEFAULT_WINDOW_S = 3600
WINDOW_FIELDS: dict[str, Parser] = {
    "tokens": whole(1, MAX_TOKENS, "tokens"),
    "window_s": whole(1, MAX_WINDOW_S, "seconds"),
}
RATE_FIELDS: dict[str, Parser] = {
    "rpm": whole(1, MAX_RATE, "requests"),
    "tpm": whole(1, MAX_RATE, "tokens"),
}


def html_id(prefix: str, name: str) -> str:
    return f"{prefix}-" + hashlib.sha256(name.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    name: str
    team: str
    user: str
    rpm: int | None
    tpm: int | None


async def all_keys(gw: Gateway, store: AdminStore) -> list[KeyInfo]:
    """Active keys: the config's and the dashboard's."""
    keys = [KeyInfo(k.name, k.team, k.user, k.rpm, k.tpm) for k in gw.settings.api_keys.values()]
    keys += [
        KeyInfo(k.name, k.team, k.user, k.rpm, k.tpm)
        for k in await store.api_keys(active_only=True)
    ]
    return keys


async def user_teams(gw: Gateway, store: AdminStore) -> dict[str, set[str]]:
    """Every user a window may apply to, with the teams of their keys (config-only users:
    no team)."""
    out: dict[str, set[str]] = {u: set() for u in gw.settings.budgets.users if u != "*"}
    for k in await all_keys(gw, store):
        out.setdefault(k.user, set()).add(k.team)
    return out


def may_edit_user(who: Principal, teams: set[str]) -> bool:
    """Whether ``who`` may change the token window of a user whose keys are in ``teams``: a
    window binds the user's keys in every team, so all of them must be ``who``'s (one key
    in a team of theirs was enough, and a key made there for another team's user took that
    user's window over)."""
    return who.teams is None or (bool(teams) and teams <= who.teams)


@dataclass(frozen=True, slots=True)
class WindowRow:
    user: str
    id: str
    window: UserWindow | None
    overridden: bool
    """Set in the dashboard (else from the config, or none)."""


async def window_rows(gw: Gateway, store: AdminStore, who: Principal) -> list[WindowRow]:
    """The default (``*``, for admins of every team: it binds every team's users) first,
    then each user."""
    gate = budget_gate(gw)
    policy = await gate.policy()
    rows = []
    if who.teams is None:
        window = policy.window(DEFAULT_USER, gate.configured_window(DEFAULT_USER))
        rows.append(WindowRow(DEFAULT_USER, html_id("u", DEFAULT_USER), window,
                              DEFAULT_USER in policy.windows))  # fmt: skip
    for user, teams in sorted((await user_teams(gw, store)).items()):
        if may_edit_user(who, teams):
            window = policy.window(user, gate.configured_window(user))
            rows.append(WindowRow(user, html_id("u", user), window, user in policy.windows))
    return rows


def window_text(w: UserWindow | None) -> str:
    return "none" if w is None else f"{w.tokens:,} tokens / {w.window_s:,} s"


def rate_text(r: KeyLimits) -> str:
    return f"rpm {r.rpm or '-'}, tpm {r.tpm or '-'}"


async def edit_window(
    gw: Gateway, store: AdminStore, who: Principal, user: str,
    changes: Mapping[str, Change[Any]], *, now: float,
) -> None:  # fmt: skip
    if user == DEFAULT_USER:
        if who.teams is not None:
            raise ActionError("the default window binds every team: an admin of every team "
                              "sets it", 403)  # fmt: skip
    else:
        teams = (await user_teams(gw, store)).get(user)
        if teams is None or not may_edit_user(who, teams):
            raise ActionError(f"unknown user {user!r}", 404)
    configured = budget_gate(gw).configured_window(user)
    tokens_change = changes.get("tokens", KEEP)
    window_change = changes.get("window_s", KEEP)

    def step(policy: Policy) -> Swap[UserWindow | None] | None:
        old = policy.window(user, configured)
        if tokens_change.op == "clear" or window_change.op == "clear":
            new = None
        else:
            tokens = tokens_change.apply(old.tokens if old else None)
            window_s = window_change.apply(old.window_s if old else None)
            if tokens is None:  # no window yet, and no tokens given
                if window_s is None:
                    return None
                raise EditError({"tokens": "a window needs a number of tokens"})
            new = UserWindow(user, tokens, window_s or DEFAULT_WINDOW_S)
        return None if new == old else Swap(old, new, window_entry(user, new)[1])

    await edit_override(gw, store, who, now=now, name=WINDOW + user, step=step,
                        action="window.set", subject=user, text=window_text,
                        what=f"the token window of {user!r}")  # fmt: skip


async def key_info(gw: Gateway, store: AdminStore, who: Principal, name: str) -> KeyInfo:
    found = next((k for k in await all_keys(gw, store) if k.name == name), None)
    if found is None or not who.may_see(found.team):
        raise ActionError(f"no active key {name!r}", 404)
    return found


async def edit_key_rate(
    gw: Gateway, store: AdminStore, who: Principal, name: str,
    changes: Mapping[str, Change[Any]], *, now: float,
) -> None:  # fmt: skip
    key = await key_info(gw, store, who, name)
    rpm, tpm = changes.get("rpm", KEEP), changes.get("tpm", KEEP)

    def step(policy: Policy) -> Swap[KeyLimits] | None:
        old = policy.key_limits(name, key.rpm, key.tpm)
        new = KeyLimits(rpm.apply(old.rpm), tpm.apply(old.tpm))
        return None if new == old else Swap(old, new, rate_entry(name, new)[1])

    await edit_override(gw, store, who, now=now, name=RATE + name, step=step,
                        action="key.limits", subject=name, text=rate_text,
                        what=f"the rates of key {name!r}")  # fmt: skip


__all__ = [
    "RATE_FIELDS",
    "WINDOW_FIELDS",
    "KeyInfo",
    "WindowRow",
    "all_keys",
    "edit_key_rate",
    "edit_window",
    "html_id",
    "key_info",
    "rate_text",
    "window_rows",
    "window_text",
]
