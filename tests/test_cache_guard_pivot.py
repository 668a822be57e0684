"""After held-out v22: two participants exchanging roles around the same pivot ("a groom give
his groomsmen" / "groomsmen give the groom") are a role swap even with only three shared
content words, and with a participant of two words ("adult child"): :func:`~trioproxy.cache.
word_order.pivot_swapped`. Examples written here, not taken from the sets; the paraphrases and
symmetric relations are what the rule must still serve. Pure core."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import _STOP, near_miss
from trioproxy.cache.prompt_features import features
from trioproxy.cache.word_order import pivot_swapped


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("What gift should a groom give his groomsmen?", "What gift should groomsmen give the groom?",
         "swap"),
        ("Can an uncle adopt his nephew?", "Can a nephew adopt his uncle?", "swap"),
        ("How does a Deployment own its ReplicaSets?", "How does a ReplicaSet own a Deployment?",
         "swap"),
        # a rewrite, another verb, a symmetric pivot: the same question
        ("What gift should a groom give his groomsmen?",
         "What present should a groom give to his groomsmen?", None),
        ("What should a mentor teach a new hire?", "What should a new hire learn from a mentor?",
         None),
        ("Which version of Node is installed?", "Which installed Node version?", None),
        ("differences between cats and dogs", "differences between dogs and cats", None),
        ("Is coffee bad for the heart?", "Is coffee bad for your heart?", None),
    ],
)  # fmt: skip
def test_guard_pivot(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("a", "b", "found"),
    [
        ("What should a mentor teach a new hire?", "What should a new hire teach a mentor?", True),
        ("Can a grandparent claim a grandchild as a dependent?",
         "Can a grandchild claim a grandparent as a dependent?", True),
        ("How does a router forward packets to a switch?",
         "How does a switch forward packets to a router?", True),
        # symmetric pivots: coordination, comparison, "with", "like", "same"
        ("Should I mix bleach with vinegar?", "Should I mix vinegar with bleach?", False),
        ("Is a tomato like a potato?", "Is a potato like a tomato?", False),
        ("pros of tea and coffee", "pros of coffee and tea", False),
        # content words not one to one, or the same order
        ("What should a mentor teach a new hire?", "What should a new hire learn from a mentor?",
         False),
        ("Is coffee bad for the heart?", "Is coffee bad for your heart?", False),
        ("Which version of Node is installed?", "Which installed Node version?", False),
    ],
)  # fmt: skip
def test_pivot_swapped(a: str, b: str, found: bool) -> None:
    sa, sb = features(a).seq, features(b).seq
    assert pivot_swapped(sa, sb, _STOP) is found
    assert pivot_swapped(sb, sa, _STOP) is found
