"""Issue 12, after held-out v21: a compound typed with hyphens on one side and as words in a row
on the other is one protected term. Examples written here,
not taken from the sets; the refusals are what the two rules must still refuse. Pure core."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import near_miss


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("What is Big O notation?", "What is Big-O notation?", None),
        ("explain big O notation", "Explain Big-O notation, please.", None),
        ("Is an X-ray safe during pregnancy?", "Is an X ray safe during pregnancy?", None),
        # the parts apart or in another order are not the compound
        ("What is Big-O notation?", "What is O notation? Big picture only", "term"),
        ("Install Docker-Compose on Ubuntu", "Install Docker Swarm on Ubuntu", "term"),
        ("How does a T-Rex hunt?", "How does a T cell hunt?", "term"),
        # a code keeps its own rule, however it is spaced
        ("What is GPT-4o?", "What is GPT 4o mini?", "number"),
    ],
)  # fmt: skip
def test_guard_v22(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule
