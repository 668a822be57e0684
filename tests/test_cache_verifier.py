"""The pair verifier, the band presets, the semantic record format and the guard's cheap rules."""

from __future__ import annotations

import numpy as np
import pytest

from trioproxy.cache.band import BAND_PRESETS, Band, band_for
from trioproxy.cache.embedder import OnnxMiniLM
from trioproxy.cache.entry import CacheEntry
from trioproxy.cache.guard import near_miss
from trioproxy.cache.morph import Relation, relation
from trioproxy.cache.semantic import route_band
from trioproxy.cache.semantic_record import (
    SemanticRecord,
    confirmed,
    confirmers_from_bytes,
    confirmers_to_bytes,
)
from trioproxy.cache.verifier import verify
from trioproxy.cache.vocabulary import TokenView
from trioproxy.config.model import CacheConfig
from trioproxy.core.types import Usage


@pytest.fixture(scope="module")
def minilm() -> OnnxMiniLM:
    return OnnxMiniLM()


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("How do I reset an iPhone 6?", "How do I reset an iPhone 6s?"),
        ("What is the context window of gpt-4o?", "What is the context window of gpt-4o-mini?"),
        ("Summarize sales for this quarter", "Summarize sales for next quarter"),
        ("How do I reverse a linked list?", "How do I reverse a linked list without recursion?"),
        ("write a hello world program in go", "write a hello world program in zig"),
    ],
)
def test_a_content_token_without_counterpart_is_refused(
    minilm: OnnxMiniLM, cached: str, new: str
) -> None:
    vocab = minilm.vocabulary()
    a, b = minilm.embed_one(cached), minilm.embed_one(new)
    assert a.tokens is not None and b.tokens is not None
    assert verify(b.tokens, a.tokens, vocab) is not None
    assert verify(a.tokens, b.tokens, vocab) is not None  # either way round


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("How do I reverse a string in Python?", "What is the way to reverse a string in Python?"),
        ("How do I undo the last git commit?", "How can I undo my last git commit?"),
        ("Explain how photosynthesis works.", "Can you explain how photosynthesis works?"),
    ],
)
def test_function_word_paraphrases_align(minilm: OnnxMiniLM, cached: str, new: str) -> None:
    a, b = minilm.embed_one(cached), minilm.embed_one(new)
    assert a.tokens is not None and b.tokens is not None
    assert verify(b.tokens, a.tokens, minilm.vocabulary()) is None


def test_token_view_round_trips_as_float16(minilm: OnnxMiniLM) -> None:
    tokens = minilm.embed_one("how do I sort a list").tokens
    assert tokens is not None
    back = TokenView.from_bytes(tokens.to_bytes())
    assert back.ids.tolist() == tokens.ids.tolist()
    assert np.allclose(back.vecs.astype(np.float32), tokens.vecs.astype(np.float32))
    with pytest.raises(ValueError):
        TokenView.from_bytes(tokens.to_bytes()[:-2])


def test_band_presets_and_route_overrides() -> None:
    assert band_for(0.01) == BAND_PRESETS[0.01]
    assert band_for(0.03) == BAND_PRESETS[0.02]  # the largest target not above the asked one
    assert band_for(0.001) == BAND_PRESETS[min(BAND_PRESETS)]  # stricter than any: strictest
    default = route_band(CacheConfig())
    assert default == BAND_PRESETS[0.01]
    explicit = route_band(CacheConfig(semantic_band=(0.7, 0.95)))
    d = BAND_PRESETS[0.01]
    # an explicit floor is a floor: the cross-encoder serves nothing below it (no reach)
    assert explicit == Band(0.7, 0.95, d.align, d.cut, None, d.term_cut)
    assert explicit.lowest == 0.7
    assert d.lowest == d.reach == 0.75
    assert route_band(CacheConfig(semantic_threshold=0.9)).lowest == 0.9


def test_semantic_record_round_trip_and_confirmation(minilm: OnnxMiniLM) -> None:
    entry = CacheEntry("answer", "stop", Usage(3, 4), "m", 1_000, 5.0)
    tokens = minilm.embed_one("hello there").tokens
    record = SemanticRecord(entry, tokens, "w1")
    back = SemanticRecord.from_bytes(record.to_bytes())
    assert back.entry == entry and back.writer == "w1" and back.tokens is not None
    assert SemanticRecord.from_bytes(SemanticRecord(entry, None, "").to_bytes()).tokens is None
    with pytest.raises(ValueError):
        SemanticRecord.from_bytes(entry.to_bytes())  # a bare entry is not a record
    assert confirmed(record, frozenset(), "other", 1)  # off
    assert confirmed(record, frozenset(), "w1", 3)  # the writer is always served
    assert not confirmed(record, frozenset({"x"}), "other", 3)
    assert confirmed(record, frozenset({"x", "y"}), "other", 3)
    assert confirmers_from_bytes(confirmers_to_bytes(frozenset({"b", "a"}))) == {"a", "b"}
    assert confirmers_from_bytes(b"not json") == frozenset()


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("Download 10 GB at 50 Mbps", "Download 10 GB at 50 MBps", "case"),
        ("Is a 5 mW laser safe?", "Is a 5 MW laser safe?", "case"),
        ("Is it safe to eat raw dough?", "Is it unsafe to eat raw dough?", "prefix"),
        ("Refund a refundable ticket", "Refund a non-refundable ticket", "prefix"),
        (
            "Write about someone who has courage",
            "Write about someone who lacks courage",
            "negation",
        ),
        ("Find a faster route to Boston", "Find the fastest route to Boston", "degree"),
        ("What does a 2 ms delay mean here?", "What does a 2 Ms delay mean here?", "case"),
        ("horsepower of the audi a4", "horsepower of the audi s4", "code"),
        ("What engine does the bmw 330i have", "What engine does the bmw 330e have", "code"),
        ("Are gyms busier on weekdays?", "Are gyms busier on weekends?", "sibling"),
        ("What does a firewall do?", "What does a firework do?", "sibling"),
        ("Trade 20 dollars for yen", "Trade 20 yen for dollars", "direction"),
        (
            "Convert a pandas DataFrame to a numpy array",
            "Convert a numpy array to a pandas DataFrame",
            "direction",
        ),
        (
            "What is a better alternative to Excel?",
            "What is the best alternative to Excel?",
            "degree",
        ),
        ("Who invented the telephone?", "When was the telephone invented?", "question"),
        ("Where was Mozart born?", "When was Mozart born?", "question"),
    ],
)
def test_guard_cheap_rules(cached: str, new: str, rule: str) -> None:
    assert near_miss(new, cached) == rule


def test_guard_case_rule_spares_ordinary_capitals() -> None:
    assert near_miss("how do I learn python", "How do I learn Python") is None
    assert near_miss("what is gpt", "What is GPT") is None
    assert near_miss("how do i sort a list", "How do I sort a list") is None  # "I" is one letter
    assert near_miss("Ms and ms", "Ms and ms") is None


def test_guard_spares_spelling_variants_of_one_code_and_possessives() -> None:
    assert near_miss("what is new in gpt-4o", "What is new in GPT-4o?") is None
    assert near_miss("Is the m2 chip fast?", "Is the M2 chip fast?") is None
    assert near_miss("Is 5pm too late?", "Is 5 pm too late?") is None
    assert near_miss("How can I clear Chrome's cache?", "How do I clear the Chrome cache?") is None
    assert near_miss("What is gpt-4?", "What is gpt-4o?") is not None
    assert near_miss("Specs of the a4", "Specs of the s4") == "code"
    # a dotted identifier on both sides ("node.js" -> "js") is not a missing term
    assert near_miss("How can I install Node.js?", "How do I install Node.js?") is None
    assert near_miss("How do I install Node.js?", "How do I install Deno?") == "term"
    # one question word alone asks nothing new ("where" vs "what ... location")
    assert near_miss("Where is the Louvre?", "What is the location of the Louvre?") is None


@pytest.mark.parametrize(
    ("a", "b", "rel"),
    [
        ("summarize", "summary", Relation.LEMMA),
        ("boiling", "boil", Relation.LEMMA),
        ("painted", "painter", Relation.LEMMA),
        ("freeze", "freezing", Relation.LEMMA),
        ("weekdays", "weekends", Relation.SIBLING),
        ("java", "javascript", Relation.SIBLING),
        ("gpt-4o", "gpt-4o-mini", Relation.SIBLING),
        ("cheaper", "cheapest", None),  # degree: the guard's own rule
        ("cheap", "cheaper", None),
        ("convert", "conversion", None),  # a seam change, not another thing
        ("man", "many", None),  # too short a stem
        ("con", "convert", None),
    ],
)
def test_word_relations(a: str, b: str, rel: Relation | None) -> None:
    assert relation(a, b) is rel
    assert relation(b, a) is rel


def test_inflected_forms_are_counterparts(minilm: OnnxMiniLM) -> None:
    a = minilm.embed_one("Summarize the plot of Hamlet.").tokens
    b = minilm.embed_one("Give me a summary of the plot of Hamlet.").tokens
    assert a is not None and b is not None
    assert verify(b, a, minilm.vocabulary()) is None
