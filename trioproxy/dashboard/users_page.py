"""The Users page: dashboard users created by an admin (admin store), and the config's.

Only an admin who sees every team manages users (a team-limited admin could otherwise
create an unlimited one). A password is hashed with scrypt (:mod:`trioproxy.admin.passwords`,
in a worker thread) and never shown or logged. Changing a user's role or teams, or
disabling them, revokes their sessions on every worker, so the change holds from their
next click. Every session is bound to the password hash it signed in with
(:meth:`~trioproxy.dashboard.access.Access.current`): a new password ends it wherever it was
set, and creating (or deleting) a user ends every session of that name (a config user's,
removed from the file since: it never acts as the new account). Every change is audited.
Users from ``[dashboard.users]`` are listed read-only (change them in the config file).

No one locks the users out of user management: an admin cannot demote, limit or disable
themselves, and when the config file has no admin of every team (user or admin API key), a
change that would leave no enabled stored admin of every team is refused, atomically in the
store (two admins demoting each other at once: one of them stays).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from quart import Quart, g, render_template, request
from quart.typing import ResponseReturnValue

from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.keys import NAME
from trioproxy.admin.passwords import MAX_PASSWORD_BYTES, MIN_PASSWORD
from trioproxy.admin.sessions import Role
from trioproxy.admin.store import StoredUser
from trioproxy.config.model import Settings
from trioproxy.dashboard import snapshot
from trioproxy.dashboard.access import Access
from trioproxy.dashboard.http_helpers import refuse

ROLES: tuple[Role, ...] = ("viewer", "admin")


class UserFormError(ValueError):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def parse_teams(raw: str, known: set[str], errors: dict[str, str]) -> frozenset[str] | None:
    """``ops, research`` → those teams; blank → every team (None)."""
    teams = frozenset(t.strip() for t in raw.split(",") if t.strip())
    unknown = sorted(teams - known)
    if unknown:
        errors["teams"] = f"unknown teams: {', '.join(unknown)}"
    return teams or None


def parse_role(raw: str, errors: dict[str, str]) -> Role:
    if raw not in ROLES:
        errors["role"] = "viewer or admin"
        return "viewer"
    return raw  # type: ignore[return-value]


def check_password(password: str, errors: dict[str, str]) -> None:
    if len(password) < MIN_PASSWORD:
        errors["password"] = f"at least {MIN_PASSWORD} characters"
    elif len(password.encode()) > MAX_PASSWORD_BYTES:
        errors["password"] = f"at most {MAX_PASSWORD_BYTES} bytes"


def scope_text(role: str, teams: frozenset[str] | None, disabled: bool = False) -> str:
    scope = "all teams" if teams is None else "teams " + ", ".join(sorted(teams))
    return f"{role}, {scope}" + (", disabled" if disabled else "")


def standing_manager(settings: Settings) -> bool:
    """Whether the config file gives a way to manage users that the dashboard cannot take
    away: a ``[dashboard.users]`` admin of every team, or an admin API key (it signs in too).
    Without one, the stored users must keep an enabled admin of every team."""
    users = settings.dashboard.users.values()
    return any(u.role == "admin" and u.teams is None for u in users) or any(
        k.admin for k in settings.api_keys.values()
    )


LAST_MANAGER = ("the last admin of every team (no admin in the config file): make another "
                "one first")  # fmt: skip


def install(app: Quart, acc: Access, pages: dict[str, Any]) -> None:
    gw = acc.gw
    store = acc.store

    async def render(status: int = 200, **extra: Any) -> Any:
        html = await render_template(
            "page.html", page="users", spec=pages["users"], title=pages["users"].title,
            pages=pages, users=await store.users(), config_users=sorted(gw.settings.dashboard.users.values(), key=lambda u: u.name),
            roles=ROLES, tz=snapshot.zone(gw), min_password=MIN_PASSWORD, **extra,
        )  # fmt: skip
        return html, status

    def manager() -> bool:
        who = g.principal
        return who is not None and who.manages_users

    @app.before_request
    async def only_managers() -> ResponseReturnValue | None:
        if request.path == "/users" or request.path.startswith("/users/"):
            if g.get("principal") is not None and not manager():
                return await refuse(403, "Only an admin of every team manages dashboard users.")
        return None

    @app.get("/users")
    async def users_view() -> ResponseReturnValue:
        return await render()

    @app.post("/users")
    async def create_user() -> ResponseReturnValue:
        form = await request.form
        errors: dict[str, str] = {}
        name = form.get("name", "").strip()
        if not NAME.fullmatch(name):
            errors["name"] = "letters, digits, '_', '.', '-' (at most 64)"
        elif name in gw.settings.dashboard.users:
            errors["name"] = "a user from the config file has this name"
        password = form.get("password", "")
        check_password(password, errors)
        role = parse_role(form.get("role", "viewer"), errors)
        teams = parse_teams(form.get("teams", ""), set(await snapshot.all_teams(gw)), errors)
        values = {k: v for k, v in form.items() if k != "password"}
        if errors:
            return await render(400, fields=errors, values=values)
        encoded = await acc.new_hash(password)
        now = acc.clock()
        user = StoredUser(name, encoded, role, teams, now, g.principal.name)
        if not await store.add_user(user):
            return await render(400, fields={"name": "a user with this name exists"},
                                values=values)  # fmt: skip
        await store.audit(AuditEntry(now, g.principal.name, "user.create", name, "",
                                     scope_text(role, teams)))  # fmt: skip
        return await render(201, notice=f"User {name!r} created: they can sign in now.")

    async def stored(name: str) -> StoredUser | None:
        return await store.user(name)

    @app.post("/users/<name>")
    async def update_user(name: str) -> ResponseReturnValue:
        user = await stored(name)
        if user is None:
            return await render(404, page_error=f"No user {name!r} created here.")
        form = await request.form
        errors: dict[str, str] = {}
        role = parse_role(form.get("role", user.role), errors)
        teams = parse_teams(form.get("teams", ""), set(await snapshot.all_teams(gw)), errors)
        if errors:
            return await render(400, row_fields={name: errors}, row_values={name: dict(form)})
        if name == g.principal.name and role != "admin":
            return await render(400, row_fields={name: {"role": "you cannot demote yourself"}},
                                row_values={name: dict(form)})  # fmt: skip
        if name == g.principal.name and teams is not None:
            lockout = ("you cannot limit your own teams: only an admin of every team manages "
                       "users, so no one here could undo it")  # fmt: skip
            return await render(400, row_fields={name: {"teams": lockout}},
                                row_values={name: dict(form)})  # fmt: skip
        new = replace(user, role=role, teams=teams)
        if new == user:
            return await render(notice="Nothing changed.")
        done = await store.update_user(
            new, keep_manager=not standing_manager(gw.settings), columns=("role", "teams")
        )
        if done is None:
            return await render(404, page_error=f"No user {name!r} created here.")
        if not done:
            field = "role" if role != "admin" else "teams"
            return await render(400, row_fields={name: {field: f"{name} is {LAST_MANAGER}"}},
                                row_values={name: dict(form)})  # fmt: skip
        ended = await store.revoke_user(name)
        await store.audit(AuditEntry(acc.clock(), g.principal.name, "user.update", name,
                                     scope_text(user.role, user.teams),
                                     scope_text(role, teams)))  # fmt: skip
        return await render(notice=f"User {name!r} updated ({ended} sessions ended).")

    @app.post("/users/<name>/password")
    async def set_password(name: str) -> ResponseReturnValue:
        user = await stored(name)
        if user is None:
            return await render(404, page_error=f"No user {name!r} created here.")
        errors: dict[str, str] = {}
        password = (await request.form).get("password", "")
        check_password(password, errors)
        if errors:
            return await render(400, row_fields={name: errors})
        encoded = await acc.new_hash(password)
        if not await store.set_password(name, encoded):
            return await render(404, page_error=f"No user {name!r} created here.")
        ended = await store.revoke_user(name)
        await store.audit(AuditEntry(acc.clock(), g.principal.name, "user.password", name,
                                     "old password", "new password"))  # fmt: skip
        return await render(notice=f"New password of {name!r} set ({ended} sessions ended).")

    async def set_disabled(name: str, disabled: bool) -> ResponseReturnValue:
        user = await stored(name)
        if user is None:
            return await render(404, page_error=f"No user {name!r} created here.")
        if name == g.principal.name and disabled:
            return await render(400, page_error="You cannot disable yourself.")
        if user.disabled == disabled:
            return await render(notice="Nothing changed.")
        keep = not standing_manager(gw.settings)
        done = await store.update_user(
            replace(user, disabled=disabled), keep_manager=keep, columns=("disabled",)
        )
        if done is None:
            return await render(404, page_error=f"No user {name!r} created here.")
        if not done:
            return await render(400, page_error=f"Cannot disable {name!r}: {LAST_MANAGER}.")
        ended = await store.revoke_user(name)
        word = "disabled" if disabled else "enabled"
        await store.audit(AuditEntry(acc.clock(), g.principal.name, f"user.{word[:-1]}", name,
                                     "enabled" if disabled else "disabled", word))  # fmt: skip
        extra = f" ({ended} sessions ended)" if disabled else ""
        return await render(notice=f"User {name!r} {word}{extra}.")

    @app.post("/users/<name>/disable")
    async def disable_user(name: str) -> ResponseReturnValue:
        return await set_disabled(name, True)

    @app.post("/users/<name>/enable")
    async def enable_user(name: str) -> ResponseReturnValue:
        return await set_disabled(name, False)


__all__ = ["install", "parse_teams", "standing_manager"]
