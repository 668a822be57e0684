"""Issue 12, after held-out v21: a compound typed with hyphens on one side and as words in a row
on the other is one protected term; a word cut short ("temp") is not a sibling of the word it
clips ("temperature"), while compounds and derived words stay siblings. Examples written here,
not taken from the sets; the refusals are what the two rules must still refuse. Pure core."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import near_miss
from trioproxy.cache.morph import clipped


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
        # a word cut short is the word
        ("ideal fridge temperature", "ideal fridge temp", None),
        ("mortgage calculator for a 30 year loan", "mortgage calc for a 30 year loan", None),
        # a compound, a derived word, another ending: still siblings
        ("Is it open on weekdays?", "Is it open on weekends?", "sibling"),
        ("How do I tune a guitar?", "How do I tune a guitarist?", "sibling"),
        ("is sugar harm", "is sugar harmful", "sibling"),
        ("what is a password", "what is a pass", "sibling"),
        ("date in python", "datetime in python", "sibling"),
        # one manner adverb moved, "to not" for "not to": the same question
        ("How do I close my bank account permanently?", "How do I permanently close my bank account?",
         None),
        ("Is it bad to not stretch before running?", "Is it bad not to stretch before running?", None),
        # a focus adverb moved changes what it bears on; other words moved are still an order
        ("Can only the admin delete posts?", "Can the admin only delete posts?", "order"),
        ("Do nearly all cats purr?", "Do all cats nearly purr?", "order"),
        ("is the user deleted permanently when banned", "is the user banned permanently when deleted",
         "order"),
    ],
)  # fmt: skip
def test_guard_v22(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("a", "b", "cut"),
    [
        ("temp", "temperature", True),
        ("vocab", "vocabulary", True),
        ("cert", "certificate", True),
        ("java", "javascript", False),  # "script" is a word
        ("book", "booklet", False),  # "-let" derives another word
        ("care", "careful", False),
        ("guitar", "guitarist", False),
        ("cardio", "cardiology", False),
        ("gpt-4o", "gpt-4o-mini", False),  # not letters only
        ("temperature", "tempest", False),  # not a prefix
    ],
)
def test_clipped(a: str, b: str, cut: bool) -> None:
    assert clipped(a, b) is cut
    assert clipped(b, a) is cut


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # "how does X differ from Y" compares, in whichever order it names the two
        ("postgres vs mysql for analytics", "How does MySQL differ from Postgres for analytics?",
         None),
        # with "from" on both sides the direction rule still reads the order
        ("How does a lion differ from a tiger when hunting?",
         "How does a tiger differ from a lion when hunting?", "direction"),
        # a comparison on one side only keeps the order rule
        ("my boss hired my friend", "my friend hired my boss", "order"),
    ],
)  # fmt: skip
def test_differ_from_compares(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


def test_differ_is_a_comparison_word_for_the_alignment() -> None:
    from trioproxy.cache.embedder import OnnxMiniLM
    from trioproxy.cache.verifier import verify

    minilm = OnnxMiniLM()
    vocab = minilm.vocabulary()

    def check(cached: str, new: str) -> tuple[int | None, int | None]:
        a, b = minilm.embed_one(cached), minilm.embed_one(new)
        assert a.tokens is not None and b.tokens is not None
        return verify(b.tokens, a.tokens, vocab), verify(a.tokens, b.tokens, vocab)

    assert check("Rust vs Go for a CLI tool", "How does Go differ from Rust for a CLI tool?") == (
        None,
        None,
    )
    # a comparison word needs a comparison on the other side
    assert check("Rust for a CLI tool", "How does Rust differ from Go for a CLI tool?")[0]


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("How many glasses of water should I drink each day?",
         "How many glasses of water should I drink every day?"),
        ("Can you suggest some stretches for a stiff neck?",
         "Can you suggest a few stretches for a stiff neck?"),
    ],
)  # fmt: skip
def test_a_quantifier_of_the_same_share_aligns(cached: str, new: str) -> None:
    from trioproxy.cache.embedder import OnnxMiniLM
    from trioproxy.cache.verifier import loosely_unmatched

    minilm = OnnxMiniLM()
    vocab = minilm.vocabulary()
    a, b = minilm.embed_one(cached), minilm.embed_one(new)
    assert a.tokens is not None and b.tokens is not None
    assert loosely_unmatched(b.tokens, a.tokens, vocab)[0] == []
    assert loosely_unmatched(a.tokens, b.tokens, vocab)[0] == []


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        # one thing complete is not each of many; "one" and "many" count
        ("delete every row of the sheet", "delete the whole row of the sheet"),
        ("give me a few examples", "give me many examples"),
        ("restart every pod", "restart one pod"),
        ("list some examples", "list many examples"),
    ],
)  # fmt: skip
def test_a_quantifier_of_another_share_stays_unmatched(cached: str, new: str) -> None:
    from trioproxy.cache.embedder import OnnxMiniLM
    from trioproxy.cache.verifier import loosely_unmatched

    minilm = OnnxMiniLM()
    vocab = minilm.vocabulary()
    a, b = minilm.embed_one(cached), minilm.embed_one(new)
    assert a.tokens is not None and b.tokens is not None
    assert loosely_unmatched(b.tokens, a.tokens, vocab)[0] != []


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # a "1" before a word is the weak "one", as "one" and "a" are
        ("How long does it take to walk a mile?", "average time to walk 1 mile", None),
        ("How long does it take to walk one mile?", "How long does it take to walk 1 mile?", None),
        # "1" against another number, or not before a word, is a number
        ("How long does it take to walk 1 mile?", "How long does it take to walk 2 miles?",
         "number"),
        ("What comes after step 1?", "What comes after step two?", "number"),
        ("What comes after step 1?", "What comes after the step?", "number"),
        ("Is keto safe for a type of diabetes?", "Is keto safe for type 1 diabetes?", "number"),
        ("Find the middle of a linked list in a memory-safe way.",
         "Find the middle of a linked list in O(1) memory.", "number"),
        ("Is 1 bigger than 10?", "Is 10 bigger than 100?", "number"),
    ],
)  # fmt: skip
def test_a_digit_one_before_a_word(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


def test_a_digit_one_aligns_with_an_article_only() -> None:
    from trioproxy.cache.embedder import OnnxMiniLM
    from trioproxy.cache.verifier import loosely_unmatched

    minilm = OnnxMiniLM()
    vocab = minilm.vocabulary()

    def left(cached: str, new: str) -> list[int]:
        a, b = minilm.embed_one(cached), minilm.embed_one(new)
        assert a.tokens is not None and b.tokens is not None
        return loosely_unmatched(b.tokens, a.tokens, vocab)[0]

    assert left("how long to walk a mile", "how long to walk 1 mile") == []
    assert left("what comes after the step", "what comes after step 1") != []
