"""The Users page: admins of every team create dashboard users (scrypt hashes), set role
and team scope, disable them; every change audited and effective at the next click."""

from __future__ import annotations

import dataclasses
import re
import threading

import pytest
import trio

from tests.dash_fixtures import sign_in, start_dash
from tests.test_dashboard_handlers import access, limits, text
from trioproxy.admin.passwords import hash_password, verify_password
from trioproxy.admin.store import StoredUser
from trioproxy.config.model import Settings
from trioproxy.dashboard import access as access_module


async def test_admin_creates_a_viewer_who_signs_in_and_cannot_edit(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    page = await text(await c.get("/users"))
    assert 'data-config-user="alice"' in page and 'data-config-user="tess"' in page
    form = {"name": "vera", "password": "vera-password-12", "role": "viewer", "teams": "ops",
            "csrf": csrf}  # fmt: skip
    r = await c.post("/users", form=form)
    page = await text(r)
    assert r.status_code == 201 and "User &#39;vera&#39; created" in page
    assert 'data-user="vera"' in page and "vera-password-12" not in page
    stored = await access(d).store.user("vera")
    assert stored is not None and stored.role == "viewer" and stored.teams == {"ops"}
    assert stored.password_hash.startswith("scrypt$")
    assert verify_password("vera-password-12", stored.password_hash)

    vera = d.app.test_client()
    vcsrf = await sign_in(vera, "vera", "vera-password-12")
    budgets = await text(await vera.get("/budgets"))
    assert 'data-team="ops"' in budgets and 'data-team="demo"' not in budgets
    r = await vera.post("/budgets/ops", form={"daily_usd": "1", "csrf": vcsrf})
    assert r.status_code == 403 and "Viewers cannot change" in await text(r)
    assert (await vera.get("/users")).status_code == 403

    # role and scope change: vera's sessions end, so it holds from her next click
    r = await c.post("/users/vera", form={"role": "admin", "teams": "", "csrf": csrf})
    assert r.status_code == 200 and "1 sessions ended" in await text(r)
    assert (await vera.get("/budgets")).status_code == 303
    vcsrf = await sign_in(vera, "vera", "vera-password-12")
    assert (
        await vera.post("/budgets/ops", form={"daily_usd": "1", "csrf": vcsrf})
    ).status_code == 200

    # disabled: signed out everywhere, and sign-in refused like a wrong password
    r = await c.post("/users/vera/disable", form={"csrf": csrf})
    assert r.status_code == 200 and "disabled" in await text(r)
    assert (await vera.get("/budgets")).status_code == 303
    r = await vera.post("/login", form={"user": "vera", "password": "vera-password-12"})
    assert r.status_code == 401
    await c.post("/users/vera/enable", form={"csrf": csrf})
    await sign_in(vera, "vera", "vera-password-12")

    log = await text(await c.get("/audit?action=user."))
    actions = re.findall(r'<td data-label="Action">([^<]*)</td>', log)
    assert actions == ["user.enable", "user.disable", "user.update", "user.create"]
    assert "viewer, teams ops" in log and "admin, all teams" in log


async def test_bad_user_forms_are_400_next_to_the_field(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    cases = [
        ({"name": "bad name!", "password": "long-enough-pw"}, "name"),
        ({"name": "alice", "password": "long-enough-pw"}, "name"),  # a config user
        ({"name": "short", "password": "short"}, "password"),
        ({"name": "x1", "password": "long-enough-pw", "role": "root"}, "role"),
        ({"name": "x2", "password": "long-enough-pw", "teams": "alpah"}, "teams"),
    ]
    for form, field in cases:
        r = await c.post("/users", form={"role": "viewer", **form, "csrf": csrf})
        page = await text(r)
        assert r.status_code == 400, form
        assert 'aria-invalid="true"' in page and 'class="error field-error"' in page, form
        assert f'id="u-{field}-err"' in page, form
        assert "long-enough-pw" not in page  # a password is never echoed
    assert await access(d).store.users() == []
    await c.post("/users", form={"name": "dup", "password": "long-enough-pw", "role": "viewer",
                                 "csrf": csrf})  # fmt: skip
    r = await c.post("/users", form={"name": "dup", "password": "long-enough-pw",
                                     "role": "viewer", "csrf": csrf})  # fmt: skip
    assert r.status_code == 400 and "exists" in await text(r)
    r = await c.post("/users/dup", form={"role": "viewer", "teams": "alpah", "csrf": csrf})
    assert r.status_code == 400 and "unknown teams: alpah" in await text(r)
    assert (await c.post("/users/ghost/disable", form={"csrf": csrf})).status_code == 404
    assert (await c.post("/users/alice/disable", form={"csrf": csrf})).status_code == 404


async def test_only_admins_of_every_team_manage_users(nursery: trio.Nursery) -> None:
    d = await start_dash(nursery)
    for name in ("victor", "tess"):  # a viewer; an admin limited to team ops
        c = d.app.test_client()
        csrf = await sign_in(c, name)
        assert (await c.get("/users")).status_code == 403
        nav = (await text(await c.get("/budgets"))).split("</nav>")[0]
        assert 'href="/budgets"' in nav and 'href="/users"' not in nav  # no link to a 403
        r = await c.post("/users", form={"name": "evil", "password": "long-enough-pw",
                                         "role": "admin", "csrf": csrf})  # fmt: skip
        assert r.status_code == 403
    assert await access(d).store.users() == []
    admin = d.app.test_client()
    await sign_in(admin)  # an admin of every team: the link is there
    assert 'href="/users"' in (await text(await admin.get("/budgets"))).split("</nav>")[0]


async def test_passwords_are_reset_and_admins_cannot_lock_themselves_out(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery)
    c = d.app.test_client()
    csrf = await sign_in(c)
    await c.post("/users", form={"name": "ada", "password": "ada-password-12", "role": "admin",
                                 "csrf": csrf})  # fmt: skip
    ada = d.app.test_client()
    acsrf = await sign_in(ada, "ada", "ada-password-12")
    r = await ada.post("/users/ada", form={"role": "viewer", "teams": "", "csrf": acsrf})
    assert r.status_code == 400 and "you cannot demote yourself" in await text(r)
    r = await ada.post("/users/ada", form={"role": "admin", "teams": "ops", "csrf": acsrf})
    page = await text(r)
    assert r.status_code == 400 and "you cannot limit your own teams" in page
    assert re.search(r'name="teams"[^>]*aria-invalid="true"', page)
    stored = await access(d).store.user("ada")
    assert stored is not None and stored.role == "admin" and stored.teams is None
    assert await access(d).store.audit_log(action="user.update") == []
    r = await ada.post("/users/ada/disable", form={"csrf": acsrf})
    assert r.status_code == 400 and "cannot disable yourself" in await text(r)
    r = await ada.post("/users/ada", form={"role": "admin", "teams": "", "csrf": acsrf})
    assert r.status_code == 200 and "Nothing changed." in await text(r)
    # a new password: too short is 400 next to the field; then set, sessions end
    r = await c.post("/users/ada/password", form={"password": "short", "csrf": csrf})
    page = await text(r)
    assert r.status_code == 400 and re.search(r'name="password"[^>]*aria-invalid="true"', page)
    r = await c.post("/users/ada/password", form={"password": "ada-new-password", "csrf": csrf})
    assert r.status_code == 200 and "1 sessions ended" in await text(r)
    assert (await ada.get("/budgets")).status_code == 303
    r = await ada.post("/login", form={"user": "ada", "password": "ada-password-12"})
    assert r.status_code == 401
    await sign_in(ada, "ada", "ada-new-password")
    assert (
        await c.post("/users/ghost/password", form={"password": "x" * 20, "csrf": csrf})
    ).status_code == 404
    log = await text(await c.get("/audit?action=user.password"))
    assert "new password" in log and "ada-new-password" not in log


def no_admin_in_config(settings: Settings) -> Settings:
    """Neither a config user nor an admin key manages users: only the stored users do."""
    keys = {h: dataclasses.replace(k, admin=False) for h, k in settings.api_keys.items()}
    dash = dataclasses.replace(settings.dashboard, users={})
    return dataclasses.replace(settings, api_keys=keys, dashboard=dash)


async def test_the_last_admin_of_every_team_cannot_be_demoted_limited_or_disabled(
    nursery: trio.Nursery,
) -> None:
    d = await start_dash(nursery, adjust=no_admin_in_config)
    store = access(d).store
    pw = "stored-admin-pw-1"
    for name in ("ada", "bob"):
        await store.add_user(StoredUser(name, hash_password(pw, log2_n=10), "admin", None, 1.0,
                                        "bootstrap"))  # fmt: skip
    ada, bob = d.app.test_client(), d.app.test_client()
    acsrf = await sign_in(ada, "ada", pw)
    await sign_in(bob, "bob", pw)
    # bob demotes ada in a request of his own that has written but not yet ended ada's
    # sessions; ada's demotion of bob, meanwhile, must not leave no admin at all. Each
    # request reads its principal afresh, so ada is a viewer at once (the store's own
    # last-admin check, for a demotion racing between that read and the write, is
    # tests/test_admin_db.py's)
    await store.put_user(dataclasses.replace(await store.user("ada"), role="viewer"))  # type: ignore[type-var]
    for form in ({"role": "viewer", "teams": ""}, {"role": "admin", "teams": "ops"}):
        r = await ada.post("/users/bob", form={**form, "csrf": acsrf})
        assert r.status_code == 403 and "Viewers cannot change" in await text(r)
    r = await ada.post("/users/bob/disable", form={"csrf": acsrf})
    assert r.status_code == 403
    stored = await store.user("bob")
    assert stored is not None and (stored.role, stored.teams, stored.disabled) == ("admin", None,
                                                                                  False)  # fmt: skip
    assert await store.audit_log(action="user.") == []
    # with another admin of every team, the same change goes through
    await store.put_user(dataclasses.replace(await store.user("ada"), role="admin"))  # type: ignore[type-var]
    r = await ada.post("/users/bob", form={"role": "viewer", "teams": "", "csrf": acsrf})
    assert r.status_code == 200 and "updated" in await text(r)


def test_the_unknown_user_hash_is_made_at_the_current_cost() -> None:
    """Signing in as nobody verifies against it: the same work as a real user's hash."""
    from trioproxy.dashboard.access import _DUMMY_HASH

    assert _DUMMY_HASH == hash_password("not a password", salt=b"0" * 16)
    assert not verify_password("anything", _DUMMY_HASH)


async def test_a_password_set_while_another_admin_disables_the_user_keeps_both(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Admin A sets mallory's password; while it is hashed, admin B disables mallory. The
    password page wrote back the whole row it had read before the hash: mallory was enabled
    again, with no 'user.enable' in the audit. Then the other way round: a role change made
    while a password is hashed keeps the new password."""
    d = await start_dash(nursery)
    store = access(d).store
    a, b = d.app.test_client(), d.app.test_client()
    csrf_a, csrf_b = await sign_in(a), await sign_in(b)
    form = {"name": "mallory", "password": "initial-pass-1", "role": "viewer", "teams": "",
            "csrf": csrf_a}  # fmt: skip
    assert (await a.post("/users", form=form)).status_code == 201
    hashing, go_on = threading.Event(), threading.Event()

    def held_hash(password: str) -> str:
        hashing.set()
        go_on.wait(10)
        return hash_password(password)

    monkeypatch.setattr(access_module, "hash_password", held_hash)

    async def set_password(password: str) -> None:
        r = await a.post("/users/mallory/password", form={"password": password, "csrf": csrf_a})
        assert r.status_code == 200

    for password, other_edit, check in (
        ("brand-new-pass-2", ("/users/mallory/disable", {}), lambda u: u.disabled),
        ("brand-new-pass-3", ("/users/mallory", {"role": "admin", "teams": "ops"}),
         lambda u: u.role == "admin"),
    ):  # fmt: skip
        hashing.clear(), go_on.clear()
        async with trio.open_nursery() as admins:
            admins.start_soon(set_password, password)
            await trio.to_thread.run_sync(hashing.wait, 10)
            path, fields = other_edit
            assert (await b.post(path, form={**fields, "csrf": csrf_b})).status_code == 200
            go_on.set()
        user = await store.user("mallory")
        assert user is not None and check(user), user
        assert verify_password(password, user.password_hash)


async def test_an_old_session_is_not_taken_over_by_a_new_account_of_its_name(
    nursery: trio.Nursery,
) -> None:
    """victor (a config viewer) signs in; a reload removes him from the file; an admin
    creates a stored admin named victor. victor's old cookie acted as the new admin (the
    session was checked by name only), and the audit wrote its edits under that account."""
    d = await start_dash(nursery)
    admin = d.app.test_client()
    csrf = await sign_in(admin)
    old = d.app.test_client()
    old_csrf = await sign_in(old, "victor")
    users = {n: u for n, u in d.gw.settings.dashboard.users.items() if n != "victor"}
    dashboard = dataclasses.replace(d.gw.settings.dashboard, users=users)
    d.gw.settings = dataclasses.replace(d.gw.settings, dashboard=dashboard)
    form = {"name": "victor", "password": "new-victor-pw-1", "role": "admin", "teams": "",
            "csrf": csrf}  # fmt: skip
    assert (await admin.post("/users", form=form)).status_code == 201
    r = await old.post("/budgets/demo", form={"daily_usd": "3", "csrf": old_csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert (
        await limits(d) == (None, None) and await access(d).store.audit_log(action="budget") == []
    )
    assert (await old.get("/budgets")).status_code == 303
    new = d.app.test_client()
    ncsrf = await sign_in(new, "victor", "new-victor-pw-1")
    r = await new.post("/budgets/demo", form={"daily_usd": "3", "csrf": ncsrf})
    assert r.status_code == 200 and await limits(d) == (3_000_000, None)


async def test_a_stored_users_session_is_bound_to_its_password(nursery: trio.Nursery) -> None:
    """A stored user's session ends when the user's password hash is no longer the one it
    signed in with, whoever changed it (the Users page also ends the sessions; a sign-in
    with the old password that raced that change, or a user replaced in the store, kept
    its session)."""
    d = await start_dash(nursery)
    store = access(d).store
    user = StoredUser("vera", hash_password("vera-password-12", log2_n=10), "viewer", None,
                      1.0, "alice")  # fmt: skip
    assert await store.add_user(user)
    vera = d.app.test_client()
    await sign_in(vera, "vera", "vera-password-12")
    assert (await vera.get("/budgets")).status_code == 200
    await store.put_user(dataclasses.replace(user, role="admin"))  # same password: still in
    assert (await vera.get("/budgets")).status_code == 200
    assert await store.set_password("vera", hash_password("vera-password-34", log2_n=10))
    assert (await vera.get("/budgets")).status_code == 303
    await sign_in(vera, "vera", "vera-password-34")
    assert (await vera.get("/budgets")).status_code == 200
