"""After held-out v22: one of a thing counted against many or all of it ("delete a row" /
"delete multiple rows", "restart a pod" / "restart all pods") asks another question, a
quantifier rule the classes of :func:`~trioproxy.cache.quantifiers.quantities` miss ("a" is
no class, "multiple" none either): :func:`~trioproxy.cache.quantifiers.one_against_many`.
Examples written here, not taken from the sets; the paraphrases are what the rule must still
serve. Pure core."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import _STOP, near_miss
from trioproxy.cache.prompt_features import features
from trioproxy.cache.quantifiers import one_against_many


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("How do I delete a row in a SQL table?", "How do I delete multiple rows in a SQL table?",
         "quantifier"),
        ("restart a service on Ubuntu", "restart all services on Ubuntu", "quantifier"),
        ("How do I merge a branch into main?", "How do I merge every feature branch into main?",
         "quantifier"),
        # a vague count, a bare plural, "more than one", the same count: the same question
        ("Recommend a good book on statistics", "Recommend some good books on statistics", None),
        ("How do I delete files in a folder?", "How do I delete a file in a folder?", None),
        ("Can a function return more than one value in C?",
         "How do I return multiple values from a C function?", None),
        ("How do I rename all files in a folder?", "How do I rename every file in a folder?", None),
        ("Is it possible to put multiple files in one split?", "Can I use multiple files per split?",
         None),
    ],
)  # fmt: skip
def test_guard_one_against_many(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("a", "b", "found"),
    [
        ("remove a stopped container", "remove all stopped containers", True),
        ("uninstall a pip package", "uninstall every pip package", True),
        ("select a single column", "select multiple columns", True),
        # the head of the phrase is counted, not its first word
        ("a struct type becomes one column", "each struct field becomes a column", False),
        # counted both ways on one side
        ("split each column into a single column", "split a column", False),
        ("return more than one value", "return multiple values", False),
    ],
)  # fmt: skip
def test_one_against_many(a: str, b: str, found: bool) -> None:
    sa, sb = features(a).seq, features(b).seq
    assert one_against_many(sa, sb, _STOP) is found
