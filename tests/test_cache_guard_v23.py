"""After held-out v23: a phrase that opens with "as" (the role the asker speaks in) may move
to the front like a phrase that opens with a preposition. Examples written here, not taken
from the sets; the refusals are what the rule must still refuse. Pure core."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import near_miss
from trioproxy.cache.word_order import moved_block


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("Can I work part time in Canada as a student?", "As a student, can I work part time in Canada?",
         None),
        ("As a beginner, which guitar should I buy?", "Which guitar should I buy as a beginner?", None),
        # two participants traded around "as" are no moved phrase
        ("Can I use a tablet as a laptop?", "Can I use a laptop as a tablet?", "order"),
        ("Is Rust as fast as C?", "Is C as fast as Rust?", "order"),
        ("Is a tomato classified as a fruit?", "Is a fruit classified as a tomato?", "order"),
    ],
)  # fmt: skip
def test_guard_as_phrase_moved(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


def test_moved_block_as() -> None:
    a = tuple("can i vote in france as a dual citizen".split())
    b = tuple("as a dual citizen can i vote in france".split())
    assert moved_block(a, b)
    assert moved_block(b, a)
    # "as" moved alone, or a block that does not open with it: still an order change
    assert not moved_block(tuple("use x as y".split()), tuple("use y as x".split()))
