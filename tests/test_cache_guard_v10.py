"""Issue 12, after held-out v9: a comparison reads the same either way, a call "f()" names the
word "f", and "I'm curious" is a sign-off. Examples written here, not taken from the sets.
Pure core: the guard and the filler stripper."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import near_miss
from trioproxy.cache.preamble import without_filler


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # a comparison names its two sides in either order
        ("Redis vs Memcached", "Memcached vs Redis", None),
        ("What's the difference between a mutex and a semaphore?",
         "semaphore vs mutex?", None),
        ("Compare SQLite and PostgreSQL for a small web app",
         "Compare PostgreSQL and SQLite for a small web app", None),
        ("Espresso versus drip coffee: which has more caffeine?",
         "Drip coffee versus espresso: which has more caffeine?", None),
        # "than" still reads one way, and a swap outside a comparison still counts
        ("Is Redis faster than Memcached?", "Is Memcached faster than Redis?", "direction"),
        ("Does a parent process wait for a child process or exit?",
         "Does a child process wait for its parent process or exit?", "swap"),
    ],
)  # fmt: skip
def test_a_comparison_reads_either_way(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule


def test_a_call_names_its_word() -> None:
    assert near_miss("How do I use map() on a dict in Python?",
                     "How do I use map on a dict in Python?") is None  # fmt: skip
    # another call is still another term
    assert near_miss("How do I use filter() on a dict in Python?",
                     "How do I use map() on a dict in Python?") is not None  # fmt: skip


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("Why do cats purr? I'm curious.", "Why do cats purr?"),
        ("How tall is Everest? Just curious!", "How tall is Everest?"),
        ("Why is my build slow? Any help appreciated.", "Why is my build slow?"),
        ("Are cats curious?", "Are cats curious?"),
    ],
)
def test_curiosity_is_a_sign_off(text: str, plain: str) -> None:
    assert without_filler(text) == plain


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # an acronym and its words, either side
        ("What does NATO do?", "What does the North Atlantic Treaty Organization do?", None),
        ("How is the body mass index computed?", "How is BMI computed?", None),
        ("Explain the Department of Energy budget", "Explain the DOE budget", None),
        # another acronym, or two letters (units and symbols: their case is meaning)
        ("What does NATO do?", "What does the OECD do?", "term"),
        ("Is 500 mL of water enough before a run?", "Is 500 ML of water enough before a run?",
         "term"),
    ],
)  # fmt: skip
def test_an_acronym_spelled_out(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
