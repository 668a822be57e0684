"""Issue 12, after held-out v10: a protected word the stop list holds is still a key of the
direction rule ("a Java List"), a length of time read the other way round, and a relation
turned round by the passive voice with the parties in place. Examples written here, not
taken from the sets. Pure core: the guard."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import near_miss


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # "List" is a request verb in the stop list; capitalised, it is a term
        ("Turn a Kotlin List into a Set", "Turn a Kotlin Set into a List", "direction"),
        # a length of time: newer than it, or older
        ("Delete logs from the last three days", "Delete logs older than three days", "time"),
        ("Which tickets were closed within the past week?",
         "Which tickets were closed more than a week ago?", "time"),
        ("Delete logs from the last three days", "Delete logs from the past three days", None),
        # the passive with the parties in place turns the relation round
        ("List the accounts that follow @nasa", "List the accounts followed by @nasa", "swap"),
        ("Find the employees who manage Priya", "Find the employees managed by Priya", "swap"),
        # ... but not a passive that swaps the parties, nor one party moved before the verb
        ("Which jobs did the scheduler cancel?", "Which jobs were cancelled by the scheduler?",
         None),
        ("The reviewer rejected which pull requests?",
         "Which pull requests were rejected by the reviewer?", None),
    ],
)  # fmt: skip
def test_guard_v11(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
