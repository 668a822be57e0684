"""The pair verifier's WordNet relation: the parser on a small hand-written extract, the shipped
extract on realistic word pairs, and the verifier with and without it (both directions)."""

from __future__ import annotations

import pytest

from trioproxy.cache.embedder import OnnxMiniLM, blingfire_pieces
from trioproxy.cache.thesaurus import Thesaurus, wordnet
from trioproxy.cache.verifier import build_vocabulary, verify

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
S 1 delete erase
S 2 remove take_away
S 3 leave go_forth
S 4 depart quit leave
S 5 exit leave
S 6 wet
S 7 dry
S 8 write compose
S 9 liquid
H 1 2
H 6 9
H 7 9
X wrote write
"""


def test_parse_and_relations_on_a_small_extract() -> None:
    th = Thesaurus.parse(SMALL)
    assert th.related("delete", "erase") and th.related("erase", "delete")  # one synset
    assert th.related("delete", "remove") and th.related("remove", "delete")  # hypernym step
    assert th.related("quit", "exit") and th.related("exit", "quit")  # shared lemma "leave"
    assert not th.related("wet", "dry") and not th.related("dry", "wet")  # sisters only
    assert th.bases("wrote") == {"write"}  # irregular form
    assert th.bases("deleted") == {"delete"} and th.bases("removes") == {"remove"}
    assert not th.related("delete", "unknown") and th.bases("unknown") == frozenset()


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
    ],
)
def test_wordnet_synonyms_align_where_token_vectors_do_not(
    minilm: OnnxMiniLM, cached: str, new: str
) -> None:
    a, b = minilm.embed_one(cached).tokens, minilm.embed_one(new).tokens
    assert a is not None and b is not None
    plain = build_vocabulary(minilm.tokenize, blingfire_pieces(), lambda x, y: False)
    assert verify(b, a, plain) is not None  # the token vectors alone refuse the pair
    vocab = minilm.vocabulary()
    assert verify(b, a, vocab) is None and verify(a, b, vocab) is None


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("How do I create a Python virtual environment?", "How do I activate a Python virtual environment?"),
        ("Show sales for the next quarter", "Show sales for the previous quarter"),
        ("How do I collapse all folders in VS Code?", "How do I expand all folders in VS Code?"),
    ],
)  # fmt: skip
def test_swapped_slots_stay_refused_with_wordnet(minilm: OnnxMiniLM, cached: str, new: str) -> None:
    a, b = minilm.embed_one(cached).tokens, minilm.embed_one(new).tokens
    assert a is not None and b is not None
    vocab = minilm.vocabulary()
    assert verify(b, a, vocab) is not None and verify(a, b, vocab) is not None
