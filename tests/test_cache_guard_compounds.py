"""After held-out v22: a compound of the two words the other prompt joins by "and" ("datetime"
/ "date and time") names what they name together, so it is no sibling of either; a compound
of one of them alone still is ("date" / "datetime"). Examples written here, not taken from the
sets. Pure core."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import near_miss


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("How do I format the date and time in Go?", "go: format a datetime", None),
        ("How do I read input and output streams in Java?", "java inputoutput streams", None),
        # one of the two words only, or joined by "or": still siblings
        ("How do I format the date in Go?", "go: format a datetime", "sibling"),
        ("How do I format the date or time in Go?", "go: format a datetime", "sibling"),
        ("Is it open on weekdays and holidays?", "Is it open on weekends and holidays?", "sibling"),
    ],
)  # fmt: skip
def test_guard_and_compound(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule
