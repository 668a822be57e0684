"""After held-out v23: an aside after the question's end ("? Any ideas?", "? I've always
wondered.") is a sign-off, taken off before the prompt is embedded and guarded; the same
words inside the question stay. Examples written here, not taken from the sets. Pure core."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import near_miss
from trioproxy.cache.preamble import without_filler


@pytest.mark.parametrize(
    ("typed", "plain"),
    [
        ("How do I stop my sink from gurgling? Any ideas?", "How do I stop my sink from gurgling?"),
        ("Why is the sky blue? I've always wondered.", "Why is the sky blue?"),
        ("Can owls see in colour? Just wondering", "Can owls see in colour?"),
        ("My bread is too dense. Any tips?", "My bread is too dense."),
        # inside the question, or all there is: it stays
        ("Any ideas for a retirement gift?", "Any ideas for a retirement gift?"),
        ("Any tips for a first marathon?", "Any tips for a first marathon?"),
        ("Any ideas?", "Any ideas?"),
        ("I've always wondered why the sky is blue", "I've always wondered why the sky is blue"),
    ],
)  # fmt: skip
def test_asides_are_taken_off(typed: str, plain: str) -> None:
    assert without_filler(typed) == plain


def test_an_aside_hides_no_change() -> None:
    assert (
        near_miss("How do I speed up my laptop? Any ideas?", "How do I slow down my laptop?")
        is not None
    )
