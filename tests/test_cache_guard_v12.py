"""Issue 12, after held-out v11: "once" is a quantity, a choice with "or" reads either way,
and "I'm new." is a sign-off. Examples written here, not taken from the sets. Pure core."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import near_miss
from trioproxy.cache.preamble import without_filler


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("Should I water succulents once a week?", "Should I water succulents several times a week?",
         "quantifier"),
        # "at once" is not a quantity
        ("How do I delete many files at once in bash?", "How do I delete many files in bash?",
         None),
        # a choice between two sides, named in either order
        ("Is tea or coffee better for focus?", "Coffee vs tea: which is better for focus?", None),
        ("Should I choose Vue or Svelte for a small dashboard?",
         "Svelte vs Vue: which should I choose for a small dashboard?", None),
    ],
)  # fmt: skip
def test_guard_v12(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule


def test_a_beginners_sign_off_is_filler() -> None:
    assert without_filler("How do I open a terminal on a Mac? I'm new.") == (
        "How do I open a terminal on a Mac?"
    )
    assert without_filler("Am I new to this?") == "Am I new to this?"


def test_upper_and_lower_are_antonyms() -> None:
    assert near_miss("What is the upper limit for a Roth IRA contribution?",
                     "What is the lower limit for a Roth IRA contribution?") == "antonym"  # fmt: skip
