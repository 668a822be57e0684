"""The Keys page: caller API keys created, revoked and rotated in the dashboard.

Keys from the config file are listed read-only. A created or rotated key's secret is shown
once, in the answer to that POST, and stored only as its SHA-256 (admin store). Every change
is audited. Every worker looks a key up in the store at most once per
``server.key_cache_ttl_s`` (``edge/keycache.py``), so a revoke or rotation holds on every
worker of the host within that.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, g, render_template, request
from quart.typing import ResponseReturnValue

from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.keys import MAX_RATE, NAME, PRIORITIES, StoredKey, new_secret, rotated
from trioproxy.budget.policy import Policy
from trioproxy.dashboard import snapshot
from trioproxy.dashboard.access import Access
from trioproxy.dashboard.actions import ActionError
from trioproxy.dashboard.edits import EditError, from_form
from trioproxy.dashboard.limits import (
    RATE_FIELDS,
    edit_key_rate,
    html_id,
    may_edit_user,
    user_teams,
)


class KeyFormError(ValueError):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def _rate(raw: str, name: str, errors: dict[str, str]) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        errors[name] = "must be a whole number"
        return None
    if not 0 < value <= MAX_RATE:
        errors[name] = f"must be between 1 and {MAX_RATE:,}"
    return value


def parse_key_form(form: Any, routes: list[str], taken: set[str]) -> dict[str, Any]:
    """The new key's fields from the form, or :class:`KeyFormError` naming each bad field."""
    errors: dict[str, str] = {}
    name = form.get("name", "").strip()
    team = form.get("team", "").strip()
    user = form.get("user", "").strip() or name
    feature = form.get("feature", "").strip() or "default"
    for field, value in (("name", name), ("team", team), ("user", user), ("feature", feature)):
        if not NAME.fullmatch(value):
            errors[field] = "letters, digits, '_', '.', '-' (at most 64)"
    if "name" not in errors and name in taken:
        errors["name"] = "an active key already has this name"
    chosen = form.getlist("routes")
    bad = [r for r in chosen if r not in routes]
    if bad:
        errors["routes"] = f"unknown routes: {', '.join(bad)}"
    priority = form.get("priority", "medium")
    if priority not in PRIORITIES:
        errors["priority"] = "low, medium or high"
    rpm = _rate(form.get("rpm", ""), "rpm", errors)
    tpm = _rate(form.get("tpm", ""), "tpm", errors)
    if errors:
        raise KeyFormError(errors)
    return {
        "name": name, "team": team, "user": user, "feature": feature,
        "routes": frozenset(chosen) if chosen else None, "priority": priority,
        "rpm": rpm, "tpm": tpm,
    }  # fmt: skip


def describe(k: StoredKey) -> str:
    routes = "all routes" if k.routes is None else ", ".join(sorted(k.routes))
    limits = f"rpm {k.rpm or '-'}, tpm {k.tpm or '-'}"
    return f"team {k.team}, user {k.user}, feature {k.feature}, {routes}, {k.priority}, {limits}"


def install(app: Quart, acc: Access, pages: dict[str, Any]) -> None:
    gw = acc.gw
    store = acc.store

    async def render(status: int = 200, **extra: Any) -> Any:
        who = g.principal
        stored = [k for k in await store.api_keys() if who.may_see(k.team)]
        config = [k for k in gw.settings.api_keys.values() if who.may_see(k.team)]
        gate = snapshot.gate_of(gw)
        policy = await gate.policy() if gate is not None else Policy()
        html = await render_template(
            "page.html", page="keys", spec=pages["keys"], title=pages["keys"].title, pages=pages,
            stored=stored, config_keys=sorted(config, key=lambda k: k.name),
            routes=sorted(gw.settings.routes), priorities=PRIORITIES, tz=snapshot.zone(gw),
            limits=policy.key_limits, row_id=html_id, editable_rates=gate is not None,
            limits_ttl_s=gate.limits_ttl_s if gate is not None else None, **extra,
        )  # fmt: skip
        return html, status

    async def taken_names() -> set[str]:
        active = {k.name for k in await store.api_keys(active_only=True)}
        return active | {k.name for k in gw.settings.api_keys.values()}

    @app.get("/keys")
    async def keys_view() -> ResponseReturnValue:
        return await render()

    @app.post("/keys")
    async def create_key() -> ResponseReturnValue:
        form = await request.form
        try:
            fields = parse_key_form(form, sorted(gw.settings.routes), await taken_names())
        except KeyFormError as err:
            return await render(400, fields=err.fields, values=form)
        if not g.principal.may_see(fields["team"]):
            return await render(403, fields={"team": "you may not manage this team"}, values=form)
        earlier = await store.api_keys()  # revoked ones too: their history is their team's
        if any(k.name == fields["name"] and k.team != fields["team"] for k in earlier):
            # the audit log finds a key's entries by its name: another team's revoked key's
            # history would have become this team's to read
            return await render(400, fields={"name": "another team's key had this name; "
                                             "choose another"}, values=form)  # fmt: skip
        teams = (await user_teams(gw, store)).get(fields["user"])
        revoked_teams = {k.team for k in earlier if k.user == fields["user"]}
        if revoked_teams:
            teams = (teams or set()) | revoked_teams
        if teams is not None and not may_edit_user(g.principal, teams | {fields["team"]}):
            # the key would spend that user's token window, which binds their other teams' keys
            return await render(403, fields={"user": "this user has keys in teams you do not "
                                             "manage"}, values=form)  # fmt: skip
        secret, digest = new_secret()
        now = acc.clock()
        key = StoredKey(digest, created=now, created_by=g.principal.name, **fields)
        if not await store.add_key(key):
            return await render(400, fields={"name": "an active key already has this name"},
                                values=form)  # fmt: skip
        await store.audit(AuditEntry(now, g.principal.name, "key.create", key.name, "",
                                     describe(key)))  # fmt: skip
        return await render(201, secret=secret, secret_for=key.name)

    async def active(name: str) -> StoredKey | None:
        return next((k for k in await store.api_keys(active_only=True) if k.name == name), None)

    @app.post("/keys/<name>/revoke")
    async def revoke_key(name: str) -> ResponseReturnValue:
        key = await active(name)
        if key is None or not g.principal.may_see(key.team):
            return await render(404, page_error=f"No active key {name!r}.")
        now = acc.clock()
        await store.revoke_key(name, now)
        gw.keys.known.forget(key.key_hash)  # this process; the others within their TTL
        await store.audit(AuditEntry(now, g.principal.name, "key.revoke", name, "active",
                                     "revoked"))  # fmt: skip
        ttl = gw.settings.server.key_cache_ttl_s
        return await render(notice=f"Key {name!r} revoked: every worker refuses it within "
                            f"{ttl:g} s (server.key_cache_ttl_s).")  # fmt: skip

    @app.post("/keys/<name>/limits")
    async def key_limits(name: str) -> ResponseReturnValue:
        form = await request.form
        try:
            changes = from_form(form, RATE_FIELDS)
            await edit_key_rate(gw, store, g.principal, name, changes, now=acc.clock())
        except EditError as err:
            return await render(400, rate_msg={"key": name, "fields": err.fields,
                                               "values": dict(form)})  # fmt: skip
        except ActionError as err:
            return await render(err.status, page_error=err.message[:1].upper() + err.message[1:])
        return await render(rate_msg={"key": name, "notice": "Saved."})

    @app.post("/keys/<name>/rotate")
    async def rotate_key(name: str) -> ResponseReturnValue:
        key = await active(name)
        if key is None or not g.principal.may_see(key.team):
            return await render(404, page_error=f"No active key {name!r}.")
        secret, digest = new_secret()
        now = acc.clock()
        if await store.replace_key(name, rotated(key, digest, now, g.principal.name), now) is None:
            return await render(404, page_error=f"No active key {name!r}.")
        gw.keys.known.forget(key.key_hash)  # the old secret: as a revoke
        await store.audit(AuditEntry(now, g.principal.name, "key.rotate", name,
                                     "old secret", "new secret"))  # fmt: skip
        return await render(secret=secret, secret_for=name)


__all__ = ["KeyFormError", "install", "parse_key_form"]
