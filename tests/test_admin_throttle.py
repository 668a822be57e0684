"""The admin port's sign-in throttle and client address, pure, on a mock clock: a client
address is blocked, a user name only delayed (seconds), a known browser not by the name's
failures; behind a trusted proxy the client is the address it names."""

from __future__ import annotations

import ipaddress

from trioproxy.admin.throttle import (
    MAX_USER_DELAY_S,
    FailureLog,
    Refusal,
    Seen,
    SignInLimits,
    UserDelay,
    known_place,
    throttled_address,
)
from trioproxy.core.addresses import parse_ip
from trioproxy.edge.client_address import client_address, networks


class Attack:
    """The failures of a user name and an address as the store would count them."""

    def __init__(self, limits: SignInLimits) -> None:
        self.limits = limits
        self.log = FailureLog()

    def seen(self, subjects: list[str], now: float) -> dict[str, Seen]:
        since = now - self.limits.window_s
        return {s: got for s in subjects if (got := self.log.seen(s, since)) is not None}

    def attempt(self, addr: str, name: str, now: float, *, right: bool = False,
                device: str | None = None) -> Refusal | None:  # fmt: skip
        rules = self.limits.rules(addr, name, device)
        refusal = self.limits.refusal(rules, self.seen(list(rules), now), {}, now)
        if refusal is None and not right:
            self.log.record(rules, now)
        return refusal


def test_a_user_names_failures_delay_it_by_doubling_seconds_never_more() -> None:
    delay = UserDelay(free=10)
    assert [delay.delay_s(n) for n in (0, 9, 10, 11, 12, 13, 14, 15, 10_000)] == [
        0, 0, 1, 2, 4, 8, 10, 10, 10,
    ]  # fmt: skip
    assert delay.retry_after(Seen(9, 0.0, 50.0), 50.0) is None
    assert delay.retry_after(Seen(12, 0.0, 50.0), 50.0) == 4
    assert delay.retry_after(Seen(12, 0.0, 50.0), 53.5) == 1
    assert delay.retry_after(Seen(12, 0.0, 50.0), 54.0) is None
    assert delay.retry_after(Seen(12, 0.0, 50.0), 54.0, checking=1) == 1  # one at a time
    assert delay.retry_after(Seen(8, 0.0, 50.0), 50.0, checking=1) is None  # free ones
    assert delay.retry_after(Seen(9, 0.0, 50.0), 50.0, checking=1) == 1


def hour_of_attack(every: int, device: str | None) -> tuple[int, list[float]]:
    """An hour in steps of 0.1 s: a wrong password for root every ``every`` steps, each from
    a new address; root signs in every minute from its own place, retrying as it is told
    (in each step after the attacker: it loses every race). The attacker's successful
    guesses (wrong ones checked) and root's waits."""
    attack = Attack(SignInLimits(attempts=10, window_s=300))
    guesses, waits = 0, []
    since: float | None = None
    retry_at = 0.0
    for step in range(36_000):
        now = step / 10
        if step % every == 0:
            guesses += attack.attempt(f"198.51.{step // 250}.{step % 250}", "root", now) is None
        if step % 600 == 0:
            since = retry_at = now
        if since is not None and now >= retry_at:
            refusal = attack.attempt("192.0.2.7", "root", now, right=True, device=device)
            if refusal is None:
                waits.append(now - since)
                since = None
            else:
                assert refusal.limit == "user" and refusal.wait_s <= MAX_USER_DELAY_S
                retry_at = now + refusal.wait_s
    return guesses, waits


def test_an_attack_from_many_addresses_costs_the_user_seconds_and_the_attacker_time() -> None:
    """A review kept root out with ten addresses (or one IPv6 /64) and one request every
    3 s: 100 failures from all addresses refused the right password for 5 minutes. Now the
    attacker gets one guess per MAX_USER_DELAY_S at most, however many addresses it has
    (10 free, then 1 + 2 + 4 + 8 s), and at that rate root, retrying as told, waits seconds."""
    bound = 10 + 4 + 3600 / MAX_USER_DELAY_S
    guesses, waits = hour_of_attack(every=30, device=None)  # the review's 1 per 3 s
    assert guesses <= bound and len(waits) == 60 and max(waits) <= MAX_USER_DELAY_S
    # a flood (10 a second) takes every slot as it opens: a new browser at a new place
    # (nothing an attacker lacks) is told to wait, seconds at a time, and gets in only at
    # the start (before the name's first 10 failures);
    guesses, waits = hour_of_attack(every=1, device=None)
    assert guesses <= bound and waits == [0.0]
    # root's own browser (its device cookie) or place is not delayed by the name's failures
    guesses, waits = hour_of_attack(every=1, device="root's laptop")
    assert guesses <= bound and len(waits) == 60 and max(waits) == 0


def test_an_address_is_blocked_whatever_it_sends_and_a_device_only_by_its_own_count() -> None:
    limits = SignInLimits(attempts=3, window_s=60)
    attack = Attack(limits)
    for i in range(3):
        assert attack.attempt("203.0.113.9", f"user{i}", 100.0) is None
    assert attack.attempt("203.0.113.9", "alice", 101.0, right=True) == Refusal(59, "address")
    assert attack.attempt("203.0.113.9", "", 101.0, right=True) == Refusal(59, "address")
    assert attack.attempt("203.0.113.10", "alice", 101.0, right=True) is None
    # alice's name held at its delay by a steady stream (failures at 200, 201, 202, then
    # as the delay lets them: 203, 205, 209, 217; the next not before 227)
    for i in range(20):
        attack.attempt(f"198.51.100.{i}", "alice", 200.0 + i)
    assert attack.attempt("192.0.2.7", "alice", 220.0, right=True) == Refusal(7, "user")
    assert attack.attempt("192.0.2.7", "alice", 227.0, right=True) is None
    # her own browser (a device cookie of hers) is not delayed by the name's failures,
    assert attack.attempt("192.0.2.7", "alice", 220.0, right=True, device="d1") is None
    for _ in range(3):  # only by its own: a stolen cookie is no way around the limits
        attack.attempt("192.0.2.8", "alice", 221.0, device="d2")
    assert attack.attempt("192.0.2.9", "alice", 222.0, device="d2") == Refusal(59, "device")
    assert limits.rules("192.0.2.7", "alice", "d1") == {
        "addr:192.0.2.7": limits.block, "user:alice": None, "device:d1": limits.block,
    }  # fmt: skip


def test_side_by_side_attempts_count_before_they_are_checked() -> None:
    limits = SignInLimits(attempts=3, window_s=60)
    rules = limits.rules("192.0.2.1", "alice")
    checking = dict.fromkeys(rules, 2)
    assert limits.refusal(rules, {}, checking, 0.0) is None
    checking = dict.fromkeys(rules, 3)
    assert limits.refusal(rules, {}, checking, 0.0) == Refusal(1, "address")


def test_ipv6_addresses_count_by_their_64() -> None:
    assert throttled_address("2001:db8:1:2::5") == throttled_address("2001:db8:1:2:ff::9")
    assert throttled_address("2001:db8:1:2::5") == "2001:db8:1:2::/64"
    assert throttled_address("2001:db8:1:3::5") != throttled_address("2001:db8:1:2::5")
    assert throttled_address("::ffff:192.0.2.1") == "192.0.2.1"
    assert throttled_address("192.0.2.1") == "192.0.2.1"
    assert throttled_address("unknown") == "unknown"
    assert known_place("alice", "2001:db8:1:2::5") == known_place("alice", "2001:db8:1:2::9")
    assert known_place("alice", "192.0.2.1") != known_place("bob", "192.0.2.1")


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", v.encode()) for v in values]


def test_the_client_is_the_right_most_address_no_trusted_proxy_wrote() -> None:
    proxies = networks(("127.0.0.1", "10.0.0.0/8", "fd00::/8"))
    # no proxy trusted, or the peer is none: the header is the client's word, ignored
    assert client_address("127.0.0.1", xff("203.0.113.5"), ()) == "127.0.0.1"
    assert client_address("198.51.100.1", xff("203.0.113.5"), proxies) == "198.51.100.1"
    # a trusted peer: the right-most untrusted hop (the left part is forgeable)
    assert client_address("127.0.0.1", xff("203.0.113.5"), proxies) == "203.0.113.5"
    forged = xff("1.2.3.4, 203.0.113.5")
    assert client_address("127.0.0.1", forged, proxies) == "203.0.113.5"
    chain = xff("1.2.3.4", "203.0.113.5, 10.1.1.1")  # two header lines, two proxies
    assert client_address("10.2.2.2", chain, proxies) == "203.0.113.5"
    assert client_address("127.0.0.1", xff("10.1.1.1"), proxies) == "10.1.1.1"  # all trusted
    assert client_address("127.0.0.1", xff("garbage, unknown"), proxies) == "127.0.0.1"
    assert client_address("127.0.0.1", xff("203.0.113.5, unknown"), proxies) == "127.0.0.1"
    assert client_address("127.0.0.1", xff("[2001:db8::1]:4711"), proxies) == "2001:db8::1"
    assert client_address("::ffff:127.0.0.1", xff("203.0.113.5:80"), proxies) == "203.0.113.5"
    assert client_address("127.0.0.1", [], proxies) == "127.0.0.1"
    # Forwarded (RFC 7239) when there is no X-Forwarded-For
    fwd = [(b"Forwarded", b'for=1.2.3.4, for="[2001:db8::7]:80";proto=https;by=fd00::1')]
    assert client_address("fd00::1", fwd, proxies) == "2001:db8::7"
    assert client_address("fd00::1", fwd + xff("203.0.113.9"), proxies) == "203.0.113.9"
    assert client_address(None, xff("203.0.113.5"), proxies) == "unknown"


def test_addresses_are_read_as_headers_write_them() -> None:
    assert parse_ip('"[2001:db8::1]:443"') == ipaddress.ip_address("2001:db8::1")
    assert parse_ip(" 192.0.2.1 ") == ipaddress.ip_address("192.0.2.1")
    assert parse_ip("_hidden") is None and parse_ip("") is None
