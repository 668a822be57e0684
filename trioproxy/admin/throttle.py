"""How many wrong passwords and admin keys the admin port lets a client try (pure).

Every failure (a wrong password, a wrong admin key) is recorded under **subjects**, each
counted over a sliding window of ``login_window_s`` (``N`` below is ``login_attempts``):

* ``addr:<address>``: the client's address (an IPv6 address by its /64: one host's
  addresses count as one; behind a reverse proxy, the address it names when it is one of
  ``dashboard.trusted_proxies``: :mod:`trioproxy.edge.client_address`). Every sign-in and
  every admin key on the admin port (admin API, ``/metrics``) counts here. At ``N``
  failures the address is **blocked** (429) until its oldest failure leaves the window,
  whatever it sends, the right password or key too (else a right guess would tell itself
  apart).
* ``user:<name>``: a user name, from every address together. Never a block: a **delay**.
  The first ``N`` failures in the window cost nothing; then each failure sets the name's
  "not before" time, 1, 2, 4, 8 and then :data:`MAX_USER_DELAY_S` seconds after it, and a
  sign-in as that name before then gets 429 with ``Retry-After``, whatever the password. So
  guessing one name from any number of addresses goes at most one guess per
  :data:`MAX_USER_DELAY_S` (8,640 a day), and keeping a user out costs a steady stream of
  wrong passwords while costing the user seconds. (Before, ``10 x N`` failures from all
  addresses refused the right password for the whole window: ten addresses, or one IPv6
  /64, kept ``root`` out with one request every 3 s.)
* ``device:<id>``: a browser or a place that signed in as that name before. A successful
  password sign-in gives the browser a **device cookie** (a random token, HttpOnly, sent to
  the sign-in page only, kept :data:`DEVICE_TTL_S`; the admin store keeps its hash and the
  user's name) and makes the address (by its /64 for IPv6) a **known place** of the user
  for as long. A sign-in as that name presenting the cookie, or else from a known place,
  is not delayed by the name's failures: an attacker's stream may hold the name at its
  delay and win each slot as it opens (a flood of refused requests costs it nothing), and
  the user's browser would only ever be told to wait. It is limited by its own count
  instead, ``N`` per window, blocked like an address; its failures still count for the
  name. So only a new browser at a new place, during such a flood, can be kept waiting (it
  has nothing an attacker lacks): sign in from a known browser or place, or with an admin
  key (by address only).

While a subject's attempts are being checked (a password's scrypt runs in a thread), each
counts as a failure to be: guesses sent side by side cannot all pass one count; past its
first ``N``, a name is tried one attempt at a time.

:class:`FailureLog` keeps the failures in the process as well, for when the admin store does
not answer and for ``/metrics`` served without the dashboard.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from trioproxy.core.addresses import parse_ip

MAX_USER_DELAY_S = 10.0
"""The longest a user name's sign-ins wait after a failure (the delays double up to it)."""
FIRST_USER_DELAY_S = 1.0
DEVICE_TTL_S = 90 * 86400.0
"""How long a device cookie exempts its browser from its user name's delay."""
MAX_SUBJECTS = 4096
"""Subjects a :class:`FailureLog` keeps; past it the one that failed least recently goes."""
MAX_TIMES = 1024
"""Failure times a :class:`FailureLog` keeps per subject (its newest)."""
Limit = Literal["address", "user", "device"]


@dataclass(frozen=True, slots=True)
class Seen:
    """A subject's failures in the window."""

    count: int
    oldest: float
    newest: float


@dataclass(frozen=True, slots=True)
class Throttle:
    """A block: ``attempts`` failures per ``window_s``, then none until the oldest leaves."""

    attempts: int = 10
    window_s: float = 300.0

    def retry_after(self, seen: Seen | None, now: float, checking: int = 0) -> int | None:
        """Seconds until the next attempt may be tried, or None if it may be tried now.
        ``checking``: the subject's attempts being verified right now, each a failure to be:
        guesses sent side by side are counted before their credentials are checked (else all
        of them passed the count, then failed)."""
        failures = seen.count if seen is not None else 0
        if failures + checking < self.attempts:
            return None
        if seen is None or failures < self.attempts:
            return 1  # the ones being checked decide; ask again in a second
        return max(1, math.ceil(seen.oldest + self.window_s - now))


@dataclass(frozen=True, slots=True)
class UserDelay:
    """A delay: ``free`` failures per window cost nothing, then each one holds the next
    attempt back, doubling from ``first_s`` up to ``max_s``."""

    free: int = 10
    first_s: float = FIRST_USER_DELAY_S
    max_s: float = MAX_USER_DELAY_S

    def delay_s(self, failures: int) -> float:
        """How long after the newest of ``failures`` the next attempt waits."""
        if failures < self.free:
            return 0.0
        return min(self.max_s, self.first_s * 2.0 ** min(failures - self.free, 64))

    def retry_after(self, seen: Seen | None, now: float, checking: int = 0) -> int | None:
        failures = seen.count if seen is not None else 0
        if failures + checking < self.free:
            return None
        if checking or seen is None:
            return 1  # past the free ones, one attempt at a time
        not_before = seen.newest + self.delay_s(failures)
        return None if now >= not_before else max(1, math.ceil(not_before - now))


Rule = Throttle | UserDelay | None
"""How a subject limits an attempt; None: its failures are recorded, it limits nothing."""


@dataclass(frozen=True, slots=True)
class Refusal:
    wait_s: int
    limit: Limit


@dataclass(frozen=True, slots=True)
class SignInLimits:
    """The admin port's limits, from ``login_attempts`` and ``login_window_s``."""

    attempts: int = 10
    window_s: float = 300.0

    @property
    def block(self) -> Throttle:
        return Throttle(self.attempts, self.window_s)

    @property
    def delay(self) -> UserDelay:
        return UserDelay(self.attempts)

    def rules(self, addr: str, name: str = "", device: str | None = None) -> dict[str, Rule]:
        """The subjects of an attempt from ``addr`` as user ``name`` (blank: an admin key),
        from a browser whose device cookie ``device`` is one of that user's."""
        rules: dict[str, Rule] = {address_subject(addr): self.block}
        if name:
            rules[f"user:{name}"] = None if device else self.delay
        if name and device:
            rules[f"device:{device}"] = self.block
        return rules

    def refusal(
        self,
        rules: Mapping[str, Rule],
        seen: Mapping[str, Seen],
        checking: Mapping[str, int],
        now: float,
    ) -> Refusal | None:
        """Whether to refuse the attempt now (the longest wait of its subjects), or None."""
        worst: Refusal | None = None
        for subject, rule in rules.items():
            if rule is None:
                continue
            wait = rule.retry_after(seen.get(subject), now, checking.get(subject, 0))
            if wait is not None and (worst is None or wait > worst.wait_s):
                worst = Refusal(wait, _LIMITS[subject.partition(":")[0]])
        return worst


_LIMITS: dict[str, Limit] = {"addr": "address", "user": "user", "device": "device"}


def throttled_address(addr: str) -> str:
    """The address as the throttle counts it (read by
    :func:`~trioproxy.core.addresses.parse_ip`; anything else as it is): an IPv6 address by
    its /64 (a host gets a /64, so one client's addresses count as one), an IPv4 address
    (an IPv4-mapped one too) as it is."""
    ip = parse_ip(addr)
    if ip is None:
        return addr
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip), 64), strict=False))
    return str(ip)


def address_subject(addr: str) -> str:
    return f"addr:{throttled_address(addr)}"


def done_checking(checking: Counter[str], subjects: Iterable[str]) -> None:
    """``subjects``' attempts (one each) are no longer being checked: ``checking`` (the
    attempts being checked per subject, each a failure to be) without them, and without a
    subject none is left of."""
    for subject in subjects:
        checking[subject] -= 1
        if checking[subject] <= 0:
            del checking[subject]


def known_place(name: str, addr: str) -> str:
    """The device id of an address a user signed in from (as the throttle counts it: an
    IPv6 address by its /64)."""
    return hashlib.sha256(f"place\0{name}\0{throttled_address(addr)}".encode()).hexdigest()


class FailureLog:
    """Failure times per subject in this process, forgotten after the window (at most
    :data:`MAX_SUBJECTS` subjects, :data:`MAX_TIMES` times each)."""

    def __init__(self, max_subjects: int = MAX_SUBJECTS) -> None:
        self.max_subjects = max_subjects
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def record(self, subjects: Iterable[str], now: float) -> None:
        for subject in subjects:
            times = self._times.pop(subject, None)
            if times is None:
                times = deque(maxlen=MAX_TIMES)
            times.append(now)
            self._times[subject] = times  # the most recent failure last
            while len(self._times) > self.max_subjects:
                self._times.popitem(last=False)

    def seen(self, subject: str, since: float) -> Seen | None:
        """The subject's failures since ``since``, or None."""
        times = self._times.get(subject)
        if times is None:
            return None
        while times and times[0] < since:
            times.popleft()
        if not times:
            del self._times[subject]
            return None
        return Seen(len(times), times[0], times[-1])

    def seen_of(self, subjects: Iterable[str], since: float) -> dict[str, Seen]:
        """:meth:`seen` of each subject that failed since ``since``."""
        return {s: seen for s in subjects if (seen := self.seen(s, since)) is not None}


__all__ = [
    "DEVICE_TTL_S",
    "MAX_SUBJECTS",
    "MAX_USER_DELAY_S",
    "FailureLog",
    "Limit",
    "Refusal",
    "Rule",
    "Seen",
    "SignInLimits",
    "Throttle",
    "UserDelay",
    "address_subject",
    "done_checking",
    "known_place",
    "throttled_address",
]
