"""After held-out v23: a frequency adverb of a unit of time ("daily") is the rate "per" /
"each" / "every" that unit (the shipped alias table), while "all day" (a length of time),
"every other day" and another unit stay apart; "turn on" / "turn off" is "enable" /
"disable"; "OK" is "okay". Examples written here, not taken from the
sets. Pure core, except the verifier test, which needs the embedding model's token vectors."""

from __future__ import annotations

import pytest

from trioproxy.cache.aliases import embedding_text
from trioproxy.cache.embedder import OnnxMiniLM
from trioproxy.cache.guard import near_miss
from trioproxy.cache.verifier import verify


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("How much protein should I eat daily?", "How much protein should I eat every day?"),
        ("How much protein should I eat daily?", "How much protein should I eat per day?"),
        ("Is it bad to drink coffee each day?", "Is it bad to drink coffee daily?"),
        ("How much should I budget for groceries weekly?",
         "How much should I budget for groceries every week?"),
        ("Do I need to water a cactus monthly?", "Do I need to water a cactus each month?"),
        ("How much does a plumber charge hourly?", "How much does a plumber charge per hour?"),
    ],
)  # fmt: skip
def test_frequency_adverbs_are_their_rate(cached: str, new: str) -> None:
    assert near_miss(new, cached) is None
    assert near_miss(cached, new) is None
    assert embedding_text(new) == embedding_text(cached)


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # another unit of time is another frequency, however each side writes it
        ("How much should I save monthly?", "How much should I save weekly?", "term"),
        ("How much should I save monthly?", "How much should I save every week?", "term"),
        ("What is the daily limit for card payments?", "What is the yearly limit for card payments?",
         "term"),
        # a count per unit is not the unit's adverb
        ("Can I take aspirin twice a day?", "Can I take aspirin daily?", "number"),
    ],
)  # fmt: skip
def test_frequency_adverbs_keep_their_unit(cached: str, new: str, rule: str) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


def test_not_everyday_nor_every_other_day() -> None:
    assert embedding_text("everyday carry essentials") == "everyday carry essentials"
    assert "every other day" in embedding_text("Should I run every other day?")
    assert "all day" in embedding_text("Is it bad to sit all day?")


@pytest.fixture(scope="module")
def minilm() -> OnnxMiniLM:
    return OnnxMiniLM()


@pytest.mark.parametrize(
    ("cached", "new", "same"),
    [
        ("Is it healthy to swim daily?", "Is it healthy to swim every day?", True),
        # a length of time ("all day") or another rhythm is not a frequency
        ("Is it bad to stand all day?", "Is it bad to stand daily?", False),
        ("Is it bad to stand all day?", "Is it bad to stand every day?", False),
        ("Should I wash my hair every other day?", "Should I wash my hair daily?", False),
    ],
)  # fmt: skip
def test_verifier_on_frequencies(minilm: OnnxMiniLM, cached: str, new: str, same: bool) -> None:
    a = minilm.embed_one(embedding_text(cached))
    b = minilm.embed_one(embedding_text(new))
    assert a.tokens is not None and b.tokens is not None
    vocab = minilm.vocabulary()
    verdict = (
        verify(b.tokens, a.tokens, vocab) is None and verify(a.tokens, b.tokens, vocab) is None
    )
    assert verdict is same


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("How do I enable spell check in Word?", "How do I turn on spell check in Word?", None),
        ("Is the firewall disabled by default?", "Is the firewall turned off by default?", None),
        # the opposite setting stays an antonym, however each side writes it
        ("How do I enable spell check in Word?", "How do I turn off spell check in Word?",
         "antonym"),
        ("How do I turn on spell check in Word?", "How do I turn off spell check in Word?",
         "antonym"),
    ],
)  # fmt: skip
def test_turn_on_is_enable(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("Is it OK to reheat soup twice?", "Is it okay to reheat soup twice?", None),
        ("is it ok to reheat soup twice", "Is it okay to reheat soup twice?", None),
        # a state's code against another state is still another term
        ("What is the sales tax in OK?", "What is the sales tax in Texas?", "term"),
    ],
)  # fmt: skip
def test_ok_is_okay(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule
    same = embedding_text(new).lower().rstrip("?") == embedding_text(cached).lower().rstrip("?")
    assert same is (rule is None)
