"""After held-out v23: the alignment passes over a qualifier that the rest of the prompt
implies (:func:`~trioproxy.cache.implied_qualifiers.implied`): "new" after a verb that brings its object
into being, "common" / "typical" / "usual" after filler and before a plural, "number" in
"count the number of", "file" after a file name, "in the world" closing a "how many ...
there" question. A qualifier the
other prompt replaces, or one that names a thing ("the common cold", "greatest common
divisor"), still refuses. Examples written here, not taken from the sets; the verdicts need
the embedding model's token vectors."""

from __future__ import annotations

import pytest

from trioproxy.cache.embedder import OnnxMiniLM
from trioproxy.cache.implied_qualifiers import implied
from trioproxy.cache.verifier import verify
from trioproxy.cache.vocabulary import words


@pytest.fixture(scope="module")
def minilm() -> OnnxMiniLM:
    return OnnxMiniLM()


def _aligned(minilm: OnnxMiniLM, cached: str, new: str) -> bool:
    a, b = minilm.embed_one(cached), minilm.embed_one(new)
    assert a.tokens is not None and b.tokens is not None
    vocab = minilm.vocabulary()
    return verify(b.tokens, a.tokens, vocab) is None and verify(a.tokens, b.tokens, vocab) is None


def _implied(minilm: OnnxMiniLM, text: str) -> set[str]:
    ids = minilm.embed_one(text).tokens
    assert ids is not None
    seq = ids.ids.tolist()
    mine = words(seq, minilm.vocabulary())
    return {mine[k] for k in implied(seq, minilm.vocabulary())}


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("How do I create a new user in MySQL?", {"new"}),
        ("insert new rows into a table", {"new"}),
        ("What are the typical signs of burnout?", {"typical"}),
        ("usual causes of a flat tyre", {"usual"}),
        # "new" after another verb, a qualifier before a singular or after a content word
        ("Should I buy a new laptop?", set()),
        ("What is new in Python 3.12?", set()),
        ("How long does the common cold last?", set()),
        ("find the greatest common divisor of two numbers", set()),
        ("What is a common class in CSS?", set()),
        ("count the number of files in a folder", {"number"}),
        ("How do I reload the nginx.conf file?", {"file"}),
        # "number" not after "count", "file" not after a file name
        ("limit the number of rows", set()),
        ("count a number in a list", set()),
        ("how big is a log file", set()),
        ("How many rivers are there in the world?", {"world"}),
        ("how many species of ants are there on earth", {"earth"}),
        # not the end of a count of what exists
        ("Is there life on Earth?", set()),
        ("What is the deepest lake in the world?", set()),
        ("How many people in the world are left-handed?", set()),
    ],
)  # fmt: skip
def test_implied_qualifiers(minilm: OnnxMiniLM, text: str, found: set[str]) -> None:
    assert _implied(minilm, text) == found


@pytest.mark.parametrize(
    ("cached", "new", "same"),
    [
        ("How do I create a user in MySQL?", "How do I create a new user in MySQL?", True),
        ("What are the signs of burnout?", "What are the typical signs of burnout?", True),
        ("What are the causes of hair loss?", "What are common causes of hair loss?", True),
        # the other prompt's qualifier has no counterpart: still refused
        ("What are the causes of hair loss?", "What are rare causes of hair loss?", False),
        ("What are common causes of hair loss?", "What are rare causes of hair loss?", False),
        ("How do I create a user in MySQL?", "How do I create a temporary user in MySQL?", False),
        ("How do I create a new user in MySQL?", "How do I delete a user in MySQL?", False),
        # not implied where it names something
        ("How long does the cold last?", "How long does the common cold last?", False),
        ("Should I buy a car?", "Should I buy a new car?", False),
        ("How do I count words in a string?", "How do I count the number of words in a string?",
         True),
        ("How do I validate a setup.cfg file?", "How do I validate setup.cfg?", True),
        ("How do I count words in a string?", "How do I count the unique words in a string?",
         False),
        ("How do I validate a setup.cfg file?", "How do I validate a setup.cfg section?", False),
        ("How many rivers are there?", "How many rivers are there in the world?", True),
        ("What is the longest river?", "What is the longest river in the world?", False),
        ("How many rivers are there?", "How many rivers are there in Europe?", False),
    ],
)  # fmt: skip
def test_verifier_passes_over_implied_qualifiers(
    minilm: OnnxMiniLM, cached: str, new: str, same: bool
) -> None:
    assert _aligned(minilm, cached, new) is same
