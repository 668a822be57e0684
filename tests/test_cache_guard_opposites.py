"""After held-out v22: an antonym put at the very place of a word ("the end index" / "the start
index") asks the opposite even when both words also stand elsewhere ("slice(start, end)"), so
the guard's antonym rule has an in-place form (:func:`~trioproxy.cache.polarity.opposite_in_place`,
WordNet antonyms or the guard's own pairs). Examples written here, not taken from the sets; the
paraphrases are what the rule must still serve. Pure core."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import near_miss
from trioproxy.cache.polarity import opposite_in_place
from trioproxy.cache.prompt_features import features
from trioproxy.cache.thesaurus import wordnet


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # both words of the pair on both sides, one put in place of the other
        ("Does Python range(start, stop) include the stop value?",
         "Does Python range(start, stop) include the start value?", "antonym"),
        ("Does substring(begin, end) keep the character at the end position?",
         "Does substring(begin, end) keep the character at the begin position?", "antonym"),
        # the same words in another order keep the order rule's reason
        ("In a deque, how do I pop the first item and keep the last?",
         "In a deque, how do I pop the last item and keep the first?", "order"),
        # a WordNet antonym pair the guard's list does not name
        ("Is the lower bound of randint inclusive?", "Is the lower bound of randint exclusive?",
         "antonym"),
        ("How do I lighten a photo that came out too dark?",
         "How do I darken a photo that came out too bright?", "antonym"),
        # two antonyms that only trade places: the same question, or the order rule's case
        ("Is coffee good or bad for you?", "Is coffee bad or good for you?", None),
        ("What are the pros and cons of remote work?", "What are the cons and pros of remote work?",
         None),
        ("Does a tenant pay the landlord?", "Does the landlord pay a tenant?", "order"),
        # synonyms in place, or a rewrite: the same question
        ("How do I start a Flask app in debug mode?", "How do I launch a Flask app in debug mode?",
         None),
        ("Read a file from start to end", "Read a file from beginning to end", None),
        ("Is the upper bound of numpy arange inclusive?", "Does numpy arange include the upper bound?",
         None),
    ],
)  # fmt: skip
def test_opposite_in_place(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("a", "b", "found"),
    [
        ("the element at the end index of slice start end", "the element at the start index of slice start end", True),
        ("an inclusive range", "an exclusive range", True),
        ("good or bad for you", "bad or good for you", False),
        ("is it good or bad now", "is it bad or good", False),
        ("the top row", "the bottom row", True),
        ("the first row", "the first rows", False),  # not an antonym
        ("start the server", "launch the server", False),  # synonyms
        # more than two edits: words at the same place are no longer one put for the other
        ("start the server then stop the worker now", "stop a server and then start its worker", False),
        ("a b", "a b", False),
    ],
)  # fmt: skip
def test_in_place_sequences(a: str, b: str, found: bool) -> None:
    assert opposite_in_place(tuple(a.split()), tuple(b.split()), frozenset()) is found


def test_listed_pairs_count_either_way() -> None:
    listed = frozenset({("tenant", "landlord")})
    a, b = ("can", "the", "tenant", "pay"), ("can", "the", "landlord", "pay")
    assert opposite_in_place(a, b, listed)
    assert opposite_in_place(b, a, listed)
    assert not opposite_in_place(a, b, frozenset())


def test_wordnet_antonyms() -> None:
    th = wordnet()
    assert th.antonyms("start", "end")
    assert th.antonyms("inclusive", "exclusive")
    assert not th.antonyms("start", "begin")
    assert not th.antonyms("hour", "minute")  # sisters: opposed, not antonyms
    assert th.opposed("hour", "minute")


def test_features_feed_the_rule() -> None:
    n = features("Does JS slice(start, end) include the end index?")
    c = features("Does JS slice(start, end) include the start index?")
    assert opposite_in_place(n.seq, c.seq, frozenset())
