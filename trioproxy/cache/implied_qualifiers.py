"""Qualifiers a prompt already implies, which the pair verifier's alignment passes over.

"new" after a verb that brings something into being ("add a *new* column": ``CREATING``);
"common", "typical" or "usual" after only filler and before a plural ("what are *common*
symptoms of X": ``USUAL``); "number" between "count" and "of"; "file" right after a file
name with an extension ("requirements.txt *file*"); "world" / "earth" closing "in the world"
/ "on earth" in a "how many ... there" question. :func:`implied` finds their positions. Pure.
"""

from __future__ import annotations

from itertools import pairwise

from trioproxy.cache.vocabulary import Vocabulary, sequence

CREATING = frozenset(
    "add adds added adding create creates created creating generate generates generated "
    "generating insert inserts inserted inserting".split()
)
"""Verbs whose object is new by their meaning: "new" right after them (an article between
aside) adds nothing ("add a new column" / "add a column")."""
_NEW = "new"
USUAL = frozenset({"common", "typical", "usual"})
"""Qualifiers that a plural question implies ("what are the common symptoms of X" / "what are
the symptoms of X"); only after filler and before a plural (:func:`implied`)."""
_ARTICLE_WORDS = frozenset({"a", "an", "the"})


_PUNCT = frozenset("? . ! ,".split())
_COUNT = frozenset({"count", "counts", "counted", "counting"})
_NUMBER = "number"
_FILE = "file"
_WORLD = frozenset({"world", "earth"})
_WORLD_BEFORE = (("in", "the"), ("on",), ("on", "the"))
_IMPLIABLE = USUAL | _WORLD | {_NEW, _NUMBER, _FILE}


def implied(ids: list[int], vocab: Vocabulary) -> frozenset[int]:
    """Positions of the pieces of qualifiers that the prompt implies: "new" whose previous
    word, an article aside, is one of ``CREATING``; a word of ``USUAL`` that a filler word (or
    nothing) precedes and a plural of letters ("symptoms", not "cold" or "class") follows;
    "number" that "of" follows and whose previous word, an article aside, is "count" (or its
    forms); "file" after a name with an extension ("setup.cfg file": a word of letters, at
    most five, after a "."); "world" / "earth" after "in the" / "on" / "on the", last in a
    prompt that asks "how many" and has "there"."""
    seq = sequence(ids, vocab)
    if _IMPLIABLE.isdisjoint(seq):
        return frozenset()
    heads = [k for k, t in enumerate(ids) if k == 0 or not vocab.continues(t)]
    ends = [*heads[1:], len(ids)]
    out: set[int] = set()
    for i, w in enumerate(seq):
        if w in (_NEW, _NUMBER):
            j = i - 1
            while j >= 0 and seq[j] in _ARTICLE_WORDS:
                j -= 1
            if w == _NEW:
                ok = j >= 0 and seq[j] in CREATING
            else:
                ok = j >= 0 and seq[j] in _COUNT and seq[i + 1 : i + 2] == ["of"]
        elif w in _WORLD:
            last = i + 1 == len(seq) or all(x in _PUNCT for x in seq[i + 1 :])
            ok = (
                last
                and any(tuple(seq[max(i - len(b), 0) : i]) == b for b in _WORLD_BEFORE)
                and ("how", "many") in set(pairwise(seq))
                and "there" in seq
            )
        elif w == _FILE:
            ext = seq[i - 1] if i >= 2 else ""
            ok = seq[i - 2 : i - 1] == ["."] and ext.isalpha() and len(ext) <= 5
        elif w in USUAL:
            before = i == 0 or (
                ends[i - 1] - heads[i - 1] == 1 and ids[heads[i - 1]] in vocab.filler
            )
            nxt = seq[i + 1] if i + 1 < len(seq) else ""
            ok = before and _plural_word(nxt)
        else:
            continue
        if ok:
            out.update(range(heads[i], ends[i]))
    return frozenset(out)


def _plural_word(word: str) -> bool:
    return len(word) >= 4 and word.isalpha() and word.endswith("s") and not word.endswith("ss")


__all__ = ["CREATING", "USUAL", "implied"]
