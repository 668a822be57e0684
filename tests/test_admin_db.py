"""The admin store's SQL, written once, on both engines: SQLite (one host) and PostgreSQL
(every instance sharing it). One write transaction rolls back whole (the SQLite connection is
in autocommit mode, where ``with conn:`` opens none: a DELETE then INSERT pair was not atomic)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import psycopg
import pytest
import trio

from tests.fixtures_servers import PgServer
from trioproxy.admin.audit import AuditEntry
from trioproxy.admin.db import Sql
from trioproxy.admin.keys import StoredKey
from trioproxy.admin.pg_engine import PgEngine
from trioproxy.admin.sessions import Principal, Session
from trioproxy.admin.store import AdminStore, Heartbeat, StoredUser, StoreError
from trioproxy.admin.throttle import Seen
from trioproxy.edge.auth import KeyRing
from trioproxy.errors import ErrorKind, PolicyError


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AdminStore]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    s = AdminStore.open_sync(tmp_path, url)
    yield s
    s.close()


async def test_a_failing_step_rolls_the_whole_transaction_back(store: AdminStore) -> None:
    await store.beat(Heartbeat("w1", 1.0, True, ""), forget_before=0.0)

    def failing(db: Sql) -> None:
        with db.transaction():
            db.execute("DELETE FROM heartbeats")
            db.execute("INSERT INTO heartbeats VALUES ('w2', 2.0, NULL, '')")  # NOT NULL

    with pytest.raises(StoreError):
        await store._run(failing)
    assert [h.worker for h in await store.heartbeats()] == ["w1"]

    def clear(db: Sql) -> None:  # a new transaction opens: the failed one was ended
        with db.transaction():
            db.execute("DELETE FROM heartbeats")

    await store._run(clear)
    assert await store.heartbeats() == []


async def test_the_audit_filter_is_a_plain_prefix(store: AdminStore) -> None:
    for action in ("keyXrotate", "key_rotate", "key%"):
        await store.audit(AuditEntry(1.0, "admin", action, "t", "", ""))
    assert [e.action for e in await store.audit_log(action="key_")] == ["key_rotate"]
    assert [e.action for e in await store.audit_log(action="key%")] == ["key%"]
    assert len(await store.audit_log(action="key")) == 3
    page = await store.audit_log(limit=2)
    assert [e.seq for e in page] == [3, 2]
    assert [e.seq for e in await store.audit_log(before_seq=page[-1].seq)] == [1]


async def test_every_table_round_trips(store: AdminStore) -> None:
    user = StoredUser("ann", "scrypt$x", "viewer", frozenset({"ops"}), 1.0, "root")
    assert await store.add_user(user)
    assert not await store.add_user(user)  # the name is taken
    await store.put_user(StoredUser("ann", "scrypt$y", "admin", None, 1.0, "root", True))
    assert await store.user("ann") == StoredUser("ann", "scrypt$y", "admin", None, 1.0, "root",
                                                 True)  # fmt: skip
    key = StoredKey("h1", "k", "ops", "ann", routes=frozenset({"chat"}), rpm=5, created=2.0)
    assert await store.add_key(key)
    assert not await store.add_key(StoredKey("h2", "k", "ops", "ann"))  # one active per name
    found = await store.lookup("h1")
    assert found is not None and found.user == "ann" and found.rpm == 5
    rotated = await store.replace_key("k", StoredKey("h3", "k", "ops", "ann"), 3.0)
    assert rotated is not None and rotated.key_hash == "h1"
    assert await store.lookup("h1") is None and await store.lookup("h3") is not None
    assert [k.key_hash for k in await store.api_keys()] == ["h3", "h1"]  # active first
    assert [k.key_hash for k in await store.api_keys(active_only=True)] == ["h3"]
    revoked = await store.revoke_key("k", 4.0)
    assert revoked is not None and revoked.user == "ann"
    assert await store.api_keys(active_only=True) == []
    assert await store.add_key(StoredKey("h9", "other", "dev", "bob"))
    assert sorted(await store.key_teams()) == ["dev", "ops"]  # a revoked key's team too, once
    assert await store.revoke_key("k", 5.0) is None
    first = await store.record_alert(1.0, "ops", "team:ops:day:x", "warn", 0.8, 8, 10, "pending")
    second = await store.record_alert(2.0, "dev", "team:dev:day:x", "warn", 0.8, 8, 10, "pending")
    assert second > first
    await store.alert_delivered(first, "delivered", 1, None, 3.0)
    log = await store.alert_log(teams=frozenset({"ops"}))
    assert [(a.id, a.delivery, a.done_at) for a in log] == [(first, "delivered", 3.0)]
    await store.beat(Heartbeat("w", 1.0, True, ""), forget_before=0.0)
    await store.beat(Heartbeat("w", 2.0, False, "down: redis"), forget_before=0.0)
    assert await store.heartbeats() == [Heartbeat("w", 2.0, False, "down: redis")]
    principal = Principal("ann", "admin", frozenset({"ops"}))
    session = Session("s1", principal, "csrf", 10.0, 10.0)
    await store.create_session(session, purge_before=0.0)
    await store.touch_session("s1", 20.0)
    assert await store.get_session("s1") == Session("s1", principal, "csrf", 10.0, 20.0)
    assert await store.revoke_user("ann") == 1 and await store.get_session("s1") is None
    await store.record_failure(["user:ann", "ip:1"], 5.0, keep_after=0.0)
    await store.record_failure(["user:ann"], 6.0, keep_after=0.0)
    assert await store.failures(["user:ann", "ip:1", "ip:2"], 0.0) == {
        "user:ann": Seen(2, 5.0, 6.0), "ip:1": Seen(1, 5.0, 5.0)
    }  # fmt: skip
    await store.clear_failures("user:ann")
    assert await store.failures(["user:ann"], 0.0) == {}
    await store.add_device("d1", "ann", 10.0, replaces=None, purge_before=0.0)
    assert await store.device_user("d1", 5.0) == "ann"
    assert await store.device_user("d1", 11.0) is None  # older than that
    await store.add_device("d2", "ann", 20.0, replaces="d1", purge_before=0.0)
    assert await store.device_user("d1", 0.0) is None and await store.device_user("d2", 0.0)
    await store.add_device("d3", "bob", 30.0, replaces=None, purge_before=25.0)
    assert await store.device_user("d2", 0.0) is None  # purged


async def test_a_principal_of_no_team_lists_no_alert(store: AdminStore) -> None:
    """A user of ``teams = []`` read the alerts with ``team IN ()``: a syntax error on
    PostgreSQL (the Alerts page a 500; a review)."""
    await store.record_alert(1.0, "ops", "team:ops:day:x", "warn", 0.8, 8, 10, "pending")
    assert await store.alert_log(teams=frozenset()) == []
    assert await store.alert_log(teams=frozenset(), team="ops") == []
    assert [a.team for a in await store.alert_log(teams=frozenset({"ops"}))] == ["ops"]


async def test_budget_overrides_keep_the_last_value_per_name(store: AdminStore) -> None:
    assert await store.overrides() == {}
    await store.save_override("limits:t", '{"daily": 1, "monthly": null}')
    await store.save_override("window:u", '{"tokens": 5, "window_s": 60}')
    await store.save_override("limits:t", '{"daily": 2, "monthly": null}')
    assert await store.overrides() == {
        "limits:t": '{"daily": 2, "monthly": null}',
        "window:u": '{"tokens": 5, "window_s": 60}',
    }


async def test_an_override_saved_by_its_fields_keeps_the_others(store: AdminStore) -> None:
    await store.save_override("limits:t", '{"daily": 1, "monthly": 2}', fields=["daily"])
    assert (await store.overrides())["limits:t"] == '{"daily": 1, "monthly": 2}'  # none yet
    await store.save_override("limits:t", '{"daily": 5, "monthly": 9}', fields=["monthly"])
    assert (await store.overrides())["limits:t"] == '{"daily": 1, "monthly": 9}'
    await store.save_override("window:u", "null")
    await store.save_override("window:u", '{"tokens": 5, "window_s": 60}', fields=["tokens"])
    assert (await store.overrides())["window:u"] == '{"tokens": 5, "window_s": 60}'  # whole


async def test_field_saves_from_two_handles_at_once_lose_none(
    store: AdminStore, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Each save sets its own field of one override, through two handles (two processes,
    two instances) at once: the read and the write of a merge are a compare-and-set, so none
    is lost."""
    url = request.getfixturevalue("pg_url") if isinstance(store.engine, PgEngine) else None
    other = AdminStore.open_sync(tmp_path, url)
    n = 24
    zeros = {f"f{i}": 0 for i in range(n)}
    await store.save_override("x", json.dumps(zeros))
    try:
        async with trio.open_nursery() as nursery:
            for i in range(n):
                value = json.dumps({**zeros, f"f{i}": 1})
                handle = (store, other)[i % 2]
                nursery.start_soon(partial(handle.save_override, "x", value, fields=[f"f{i}"]))
    finally:
        other.close()
    assert json.loads((await store.overrides())["x"]) == {f"f{i}": 1 for i in range(n)}


async def test_keys_in_postgres_are_refused_with_503_while_it_is_down_then_work_again(
    pg_server: PgServer, pg_url: str, tmp_path: Path
) -> None:
    store = AdminStore.open_sync(tmp_path, pg_url)
    ring = KeyRing({}, store)
    secret = "tp-made-in-the-dashboard"
    headers = {b"authorization": f"Bearer {secret}".encode()}
    try:
        assert await store.add_key(
            StoredKey(hashlib.sha256(secret.encode()).hexdigest(), "k", "ops", "ann")
        )
        assert (await ring.resolve(headers)).name == "k"
        await trio.to_thread.run_sync(pg_server.stop)
        try:
            with pytest.raises(PolicyError) as refused:  # 503 within the look-up bound
                await ring.resolve(headers)
            assert refused.value.kind is ErrorKind.OVERLOADED
            with pytest.raises((StoreError, trio.TooSlowError)):
                await store.audit_log()
        finally:
            await trio.to_thread.run_sync(pg_server.start)
        with trio.fail_after(60):  # the pool connects again by itself
            while True:
                try:
                    if (await ring.resolve(headers)).name == "k":
                        break
                except PolicyError:
                    await trio.sleep(0.2)
    finally:
        store.close()


def _admin(name: str, **change: object) -> StoredUser:
    return dataclasses.replace(StoredUser(name, "scrypt$x", "admin", None, 1.0, "root"), **change)


async def test_the_last_admin_of_every_team_is_kept(store: AdminStore) -> None:
    for name in ("ada", "bob"):
        assert await store.add_user(_admin(name))
    assert await store.update_user(_admin("bob", role="viewer"), keep_manager=True)
    for last in (_admin("ada", role="viewer"), _admin("ada", teams=frozenset({"ops"})),
                 _admin("ada", disabled=True)):  # fmt: skip
        assert not await store.update_user(last, keep_manager=True)
        assert await store.user("ada") == _admin("ada")  # nothing written
    assert await store.update_user(_admin("ada", role="viewer"), keep_manager=False)
    assert (await store.user("ada")).role == "viewer"  # type: ignore[union-attr]


async def test_two_admins_demoting_each_other_at_once_leave_one(pg_url: str) -> None:
    """The other demotion is committed while this one runs (PostgreSQL, read committed):
    its count must see it, so it waits on the admins' rows, then refuses."""
    store = AdminStore.open_sync("/nonexistent", pg_url)
    try:
        for name in ("ada", "bob"):
            assert await store.add_user(_admin(name))
        other = psycopg.connect(pg_url)  # bob demotes ada: written, not yet committed
        other.execute("UPDATE users SET role = 'viewer' WHERE name = 'ada'")
        result: list[bool] = []

        async def demote_bob() -> None:
            result.append(await store.update_user(_admin("bob", role="viewer"),
                                                  keep_manager=True))  # fmt: skip

        async with trio.open_nursery() as nursery:
            nursery.start_soon(demote_bob)
            watch = psycopg.connect(pg_url, autocommit=True)
            waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted"
            while not result and watch.execute(waiting).fetchone() == (0,):
                await trio.sleep(0.01)  # polls observed state: a lock waiter, or the end
            watch.close()
            other.commit()
            other.close()
        assert result == [False]
        assert (await store.user("bob")) == _admin("bob")
    finally:
        store.close()


async def test_close_waits_for_a_call_whose_caller_gave_up(tmp_path: Path) -> None:
    """A cancelled call's thread still runs on the SQLite connection; closing the store under
    it crashed the process (a segfault, seen in a suite run on a busy box): close waits."""
    store = AdminStore.open_sync(tmp_path)
    started, go = threading.Event(), threading.Event()
    ran: list[object] = []

    def slow(db: Sql) -> None:
        started.set()
        go.wait(30)
        ran.append(db.execute("SELECT count(*) FROM heartbeats").fetchone())

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.engine.run, slow)
            await trio.to_thread.run_sync(started.wait)
            scope.cancel()  # the caller gives up; its thread is abandoned, still running
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # waiting for the abandoned call (on the old code: closed at once)
    go.set()
    await trio.to_thread.run_sync(closer.join)
    assert ran == [(0,)]  # the running statement finished on an open connection
    with pytest.raises(StoreError):  # and the closed store refuses further calls cleanly
        await store.beat(Heartbeat("w1", 1.0, True, ""), forget_before=0.0)


async def test_sign_in_housekeeping_searches_indexes(tmp_path: Path) -> None:
    """Each sign-in drops old sessions and each failed one old failures; a revoke drops a
    user's sessions. Spread-out brute force grows login_failures: none of these deletes may
    scan its table."""
    import re

    from trioproxy.admin.sessions import Principal, Session
    from trioproxy.admin.store import AdminStore

    store = AdminStore.open_sync(tmp_path)
    conn = store.engine._sql.conn  # type: ignore[attr-defined]
    ran: list[str] = []
    conn.set_trace_callback(ran.append)
    who = Principal("ann", "admin")
    await store.create_session(Session("h1", who, "c", 10.0, 10.0), purge_before=5.0)
    await store.record_failure(["ann"], 20.0, keep_after=15.0)
    await store.revoke_user("ann")
    conn.set_trace_callback(None)
    deletes = [q for q in ran if q.startswith("DELETE")]
    assert len(deletes) == 3, ran
    for sql in deletes:
        plan = " / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert not re.search(r"\bSCAN (sessions|login_failures)\b", plan), (sql, plan)
    store.engine.close()


async def test_edits_write_only_their_columns_and_never_bring_a_user_back(
    store: AdminStore,
) -> None:
    assert await store.add_user(_admin("ada"))
    assert await store.add_user(_admin("bob"))
    stale = await store.user("bob")  # read before the password change below
    assert stale is not None and await store.set_password("bob", "scrypt$new")
    assert await store.update_user(dataclasses.replace(stale, disabled=True),
                                   keep_manager=True, columns=("disabled",))  # fmt: skip
    assert await store.user("bob") == _admin("bob", password_hash="scrypt$new", disabled=True)
    assert await store.delete_user("bob")
    assert await store.update_user(_admin("bob", role="viewer"), keep_manager=True) is None
    assert not await store.set_password("bob", "scrypt$again")
    assert await store.user("bob") is None  # an upsert re-created a user deleted meanwhile


async def test_a_user_created_or_deleted_ends_the_sessions_of_its_name(store: AdminStore) -> None:
    """A session of a name (a config user's, since removed from the file) outlived the
    creation of a stored user of that name: the old cookie acted as the new account."""
    old = Principal("vic", "viewer", None, "password", "c0ffee")
    await store.create_session(Session("s1", old, "csrf", 10.0, 10.0), purge_before=0.0)
    await store.create_session(
        Session("s2", Principal("ann", "admin"), "csrf", 10.0, 10.0), purge_before=0.0
    )
    await store.add_device("dev", "vic", 10.0, replaces=None, purge_before=0.0)
    assert await store.add_user(_admin("vic"))
    assert await store.get_session("s1") is None
    assert await store.device_user("dev", 0.0) is None  # no exemption for the new account
    await store.create_session(Session("s3", old, "csrf", 11.0, 11.0), purge_before=0.0)
    assert not await store.add_user(_admin("vic"))  # taken: nothing created, nothing ended
    assert await store.get_session("s3") is not None
    assert await store.delete_user("vic")
    assert await store.get_session("s3") is None
    assert await store.get_session("s2") is not None  # another name's session goes on
