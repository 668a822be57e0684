"""The pair verifier's WordNet relation: the parser on a small hand-written extract, the shipped
extract on realistic word pairs, and the verifier with and without it (both directions)."""

from __future__ import annotations

import pytest

from trioproxy.cache.embedder import OnnxMiniLM, blingfire_pieces
from trioproxy.cache.thesaurus import Thesaurus, wordnet
from trioproxy.cache.verifier import verify
from trioproxy.cache.vocabulary import build_vocabulary

SMALL = """# a hand-written extract in the shipped format
W delete 1
W erase 1
W remove 2
W leave 3
W quit 4
W exit 5
W wet 6
W dry 7
W write 8
W author 10
W mother 11
W father 12
W make 13
W see 14
S 1 delete erase
S 2 remove take_away
S 3 leave go_forth
S 4 depart quit leave
S 5 exit leave
S 6 wet
S 7 dry
S 8 write compose
S 9 liquid
S 10 author writer
S 11 mother
S 12 father
S 13 make
S 14 see
S 15 parent
H 1 2
H 10 8
H 11 15
H 12 15
A 6 7
X wrote write
X made make
X saw see
"""


def test_parse_and_relations_on_a_small_extract() -> None:
    th = Thesaurus.parse(SMALL)
    assert th.related("delete", "erase") and th.related("erase", "delete")  # one synset
    assert th.related("delete", "remove") and th.related("remove", "delete")  # hypernym step
    assert th.related("author", "wrote") and th.related("wrote", "author")  # irregular form
    assert not th.related("quit", "exit") and not th.related("exit", "quit")  # a lemma only
    assert not th.related("wet", "dry") and th.opposed("dry", "wet")  # antonyms
    assert th.opposed("mother", "father") and not th.related("father", "mother")  # sisters
    assert th.bases("wrote") == {"write"}
    assert th.bases("deleted") == {"delete"} and th.bases("removes") == {"remove"}
    assert not th.related("delete", "unknown") and th.bases("unknown") == frozenset()


def test_inflections_of_a_word_are_its_forms_not_other_words() -> None:
    th = Thesaurus.parse(SMALL)
    assert {"made", "makes", "making"} <= th.inflections("make")
    assert {"saw", "sees"} <= th.inflections("see")
    assert "seed" not in Thesaurus.parse(SMALL + "W seed 16\n").inflections("see")
    assert wordnet().inflections("show") >= {"shows", "shown", "showed"}
    assert "seed" not in wordnet().inflections("see")


@pytest.mark.parametrize(
    ("a", "b"),
    [("delete", "remove"), ("make", "create"), ("author", "wrote"), ("deleting", "removed")],
)
def test_shipped_wordnet_relates_synonyms(a: str, b: str) -> None:
    assert wordnet().related(a, b) and wordnet().related(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("next", "previous"),
        ("end", "start"),
        ("create", "activate"),
        ("horizontally", "vertically"),
        ("mother", "father"),
        ("hour", "minute"),
        ("push", "pull"),
        ("since", "until"),
        ("tagalog", "cebuano"),
        ("increase", "decrease"),
    ],
)
def test_shipped_wordnet_keeps_antonyms_and_siblings_apart(a: str, b: str) -> None:
    assert not wordnet().related(a, b) and not wordnet().related(b, a)


@pytest.fixture(scope="module")
def minilm() -> OnnxMiniLM:
    return OnnxMiniLM()


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("How do I delete a local git branch?", "How do I remove a local git branch?"),
        ("Who is the author of Hamlet?", "Who wrote Hamlet?"),
        ("How do I erase a file in Linux?", "How do I delete a file in Linux?"),
        ("Why is the sky blue?", "What makes the sky blue?"),
        ("How do I find out my IP address?", "How do I discover my IP address?"),
        ("How do I get rid of ants in the kitchen?", "How do I eliminate ants in the kitchen?"),
    ],
)
def test_wordnet_synonyms_and_request_verb_forms_align(
    minilm: OnnxMiniLM, cached: str, new: str
) -> None:
    a, b = minilm.embed_one(cached).tokens, minilm.embed_one(new).tokens
    assert a is not None and b is not None
    plain = build_vocabulary(minilm.tokenize, blingfire_pieces(), Thesaurus.parse(""))
    assert verify(b, a, plain) is not None  # the token vectors alone refuse the pair
    vocab = minilm.vocabulary()
    assert verify(b, a, vocab) is None and verify(a, b, vocab) is None


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("How do I create a Python virtual environment?", "How do I activate a Python virtual environment?"),
        ("Show sales for the next quarter", "Show sales for the previous quarter"),
        ("How do I collapse all folders in VS Code?", "How do I expand all folders in VS Code?"),
        # WordNet relates these (one synset or a hypernym step) in some sense, not in this one
        ("How do I allocate memory on the heap in C?", "How do I allocate memory on the stack in C?"),
        ("What is the cause of inflation?", "What is the effect of inflation?"),
        ("How much memory does my phone have?", "How much storage does my phone have?"),
    ],
)  # fmt: skip
def test_swapped_slots_stay_refused_with_wordnet(minilm: OnnxMiniLM, cached: str, new: str) -> None:
    a, b = minilm.embed_one(cached).tokens, minilm.embed_one(new).tokens
    assert a is not None and b is not None
    vocab = minilm.vocabulary()
    assert verify(b, a, vocab) is not None and verify(a, b, vocab) is not None
