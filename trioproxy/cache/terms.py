"""The guard's term and sibling rules (pure): whether a protected term of one prompt is
missing from the other in every form it may take (:func:`missing`), and a word whose stem the
other prompt uses with another, non-inflectional ending (:func:`siblings`).
:mod:`trioproxy.cache.guard` calls them with its stop words.

A protected term counts as present in its singular or plural form ("Sunday"/"Sundays"), and a
compound typed with hyphens on one side and as separate words in a row on the other is one
term ("Big-O" / "Big O", "cold-brew" / "cold brew": parts in another order or apart do not
count).
"""

from __future__ import annotations

import re

from trioproxy.cache.acronyms import expanded_words, spelled_out
from trioproxy.cache.morph import Relation, clipped, relation, typo
from trioproxy.cache.prompt_features import Features


def missing(own: Features, other: Features, stop: frozenset[str]) -> str | None:
    """A protected term of ``own`` that ``other`` lacks in every form it may take."""
    expanded: frozenset[str] | None = None  # read only when a term is otherwise missing
    for t in sorted(own.protected):
        if t in stop or t in other.words or t in other.protected:
            continue
        if t.endswith("()") and t[:-2] in other.words:  # "fetch()" / "fetch"
            continue
        if spelled_out(t, other.seq):  # "BMI" where the other says "body mass index"
            continue
        if _plural_in(t, other.words) or _lemma_of(t, other.words):
            continue
        if any(typo(t, w) for w in other.words):
            continue
        if _hyphenated(t, own, other):
            continue
        if not t.isalnum() and (t in other.low or _prose_in(t, other.low)):
            continue
        if expanded is None:
            expanded = expanded_words(own, other)
        if t not in expanded:  # "Body Mass Index" where the other says "BMI"
            return t
    return None


def _hyphenated(term: str, own: Features, other: Features) -> bool:
    """``term`` is one compound typed with hyphens on one side and as separate words on the
    other ("Big-O" / "Big O", "cold-brew" / "cold brew", "e-mail" / "e mail"), either way
    round: the hyphenated word's parts, in order, are consecutive words of the other prompt,
    or ``term`` is one part of a hyphenated word of ``other`` whose parts ``own`` has in a row.
    """
    if "-" in term:
        return _in_row(tuple(term.split("-")), other.seq)
    return any(
        term in parts and _in_row(parts, own.seq)
        for w in other.words
        if "-" in w and len(parts := tuple(w.split("-"))) > 1
    )


def _in_row(parts: tuple[str, ...], seq: tuple[str, ...]) -> bool:
    """``parts`` are consecutive words of ``seq``."""
    k = len(parts)
    return all(parts) and any(seq[i : i + k] == parts for i in range(len(seq) - k + 1))


_PROSE = re.compile(r"[a-z ,.!?;:']+")
_PROSE_WORDS = re.compile(r"[a-z0-9']+")


def _prose_in(quoted: str, low: str) -> bool:
    """A quoted string of words and punctuation only ("hello, world!") that ``low`` has word
    for word, its punctuation aside ("print hello world"); code keeps its punctuation."""
    if not _PROSE.fullmatch(quoted):
        return False
    words = " ".join(_PROSE_WORDS.findall(quoted))
    return f" {words} " in f" {' '.join(_PROSE_WORDS.findall(low))} "


def _plural_in(term: str, words: frozenset[str]) -> bool:
    """``words`` has ``term`` as its plural or singular ("sundays"/"sunday"; letters only)."""
    if not term.isalpha() or len(term) < 3:
        return False
    return term + "s" in words or (term.endswith("s") and term[:-1] in words)


def _lemma_of(term: str, words: frozenset[str]) -> bool:
    """``words`` has an inflected or derived form of ``term`` ("night"/"nightly"), also as
    part of a hyphenated word ("week"/"one-week"); words of letters, four at least."""
    if not term.isalpha() or len(term) < 4:
        return False
    parts = {p for w in words for p in w.split("-") if len(p) >= 4 and p.isalpha()}
    return term in parts or any(relation(term, p) is Relation.LEMMA for p in parts)


def siblings(a: Features, b: Features, stop: frozenset[str]) -> str | None:
    """A word of ``a`` whose stem ``b`` uses with another, non-inflectional ending
    ("weekdays"/"weekends", "gpt-4o"/"gpt-4o-mini", "java"/"javascript"); a word ``b`` writes
    as two ("lowercase"/"lower case") is the same word, and so is a compound of the two words
    the other side joins by "and" ("datetime"/"date and time": :func:`_and_joined`)."""
    only_a = [w for w in a.words - b.words if w not in stop and w not in b.joins]
    only_b = [w for w in b.words - a.words if w not in stop and w not in a.joins]
    only_a = [w for w in only_a if w not in _and_joined(b.seq)]
    only_b = [w for w in only_b if w not in _and_joined(a.seq)]
    for x in only_a:
        for y in only_b:
            if relation(x, y) is Relation.SIBLING and not typo(x, y) and not clipped(x, y):
                return x
    return None


def _and_joined(seq: tuple[str, ...]) -> set[str]:
    """The two words on each side of an "and" written as one ("date and time" -> "datetime",
    "input and output" -> "inputoutput")."""
    return {seq[i - 1] + seq[i + 1] for i in range(1, len(seq) - 1) if seq[i] == "and"}


__all__ = ["missing", "siblings"]
