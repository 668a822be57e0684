"""After held-out v22: a terse query's word order ("football corner kick rules", "free bank
balance check how") says nothing of who does what to whom, so two content words it puts in
another order than the full question are no swap unless a function word stands between them
on both sides (:func:`~trioproxy.cache.word_order.swapped`). Examples written here, not taken
from the sets. Pure core."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import _STOP, near_miss
from trioproxy.cache.prompt_features import features
from trioproxy.cache.word_order import swapped


@pytest.mark.parametrize(
    ("a", "b", "found"),
    [
        # roles given by function words on both sides: a swap
        ("How does a parent process wait for a child process in C?",
         "How does a child process wait for its parent process in C?", True),
        ("Should the main thread join the worker thread before exit?",
         "Should the worker thread join the main thread before exit?", True),
        # a stack of content words on one side: no roles to swap
        ("What are the rules for a corner kick in football?", "football corner kick rules", False),
        ("How do I check my bank balance for free?", "free bank balance check how", False),
        ("How do I set a proxy variable in a Makefile?", "makefile proxy variable how to set", False),
    ],
)  # fmt: skip
def test_swapped_needs_function_words(a: str, b: str, found: bool) -> None:
    sa, sb = features(a).seq, features(b).seq
    assert swapped(sa, sb, _STOP) is found
    assert swapped(sb, sa, _STOP) is found


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("What are the rules for a corner kick in football?", "football corner kick rules", None),
        ("How do I check my bank balance for free?", "free bank balance check, how?", None),
        ("Does a parent process wait for a child process to exit?",
         "Does a child process wait for a parent process to exit?", "order"),
        ("How does a parent process wait for a child process in C?",
         "How does a child process wait for its parent process in C?", "swap"),
    ],
)  # fmt: skip
def test_guard_terse(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule
