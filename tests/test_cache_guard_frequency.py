"""After held-out v22: "how often" asks for a frequency, which "how much" (an amount) and "how
long" (another measure) do not answer, while "how many times" (a count) may: the question
rule's kinds (:mod:`~trioproxy.cache.question_kinds`). Examples written here, not taken from the
sets. Pure core."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import near_miss
from trioproxy.cache.question_kinds import asks_differently


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("How often should I feed a goldfish?", "How much food should I give a goldfish?",
         "question"),
        ("How often should I run each week?", "How long should I run each week?", "question"),
        # a count, a thing, the same kind: the same question
        ("How often should I feed a goldfish?", "How many times should I feed a goldfish?",
         None),
        ("How often should I feed a goldfish?", "What is a good feeding schedule for a goldfish?",
         None),
        ("How often should I feed a goldfish?", "How often do I need to feed a goldfish?", None),
    ],
)  # fmt: skip
def test_guard_frequency(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("a", "b", "apart"),
    [
        ("frequency", "amount", True),
        ("frequency", "measure", True),
        ("count", "amount", True),
        ("frequency", "count", False),
        ("frequency", "what:time", True),
        ("frequency", "thing", False),
        ("frequency", "manner", False),
    ],
)
def test_frequency_kinds(a: str, b: str, apart: bool) -> None:
    assert asks_differently(frozenset({a}), frozenset({b})) is apart
    assert asks_differently(frozenset({b}), frozenset({a})) is apart
