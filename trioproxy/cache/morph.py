"""How two different words are related by their letters: one lemma, or siblings.

Two words that share a stem and differ only by an inflection or derivation ending
("summarize"/"summary", "boil"/"boiling", "painted"/"painter") ask the same thing: the
pair verifier counts them as counterparts even where their token vectors drift apart.
Two words that share a stem and differ by anything else ("weekdays"/"weekends",
"gpt-4o"/"gpt-4o-mini", "330i"/"330e", "java"/"javascript", "useful"/"useless") name
different things: the guard vetoes the hit. Degree endings are never one lemma
("cheap"/"cheaper"/"cheapest"): the answer changes with them.

Pure: strings in, a verdict out.
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache

from trioproxy.cache.thesaurus import wordnet

SUFFIXES = frozenset(
    "e s es ed d ing ion ions ation ations ization ize izes ized izing ise ises ised ising "
    "y ies ied ily ly al ally ment ments ity ive or ors er ers ure ures ence ences ance ances able ability".split()
) | {""}
"""Endings that keep a word's meaning for an answer (inflection and common derivation).
Never "less"/"ful"/"able"/"ant"/"est": they change it ("useless", "important")."""

_DOUBLED = frozenset({"ing", "ed", "en"})
"""Endings after a doubled last consonant ("stop"/"stopping"/"stopped", "forgot"/"forgotten")."""
_VOWELS = frozenset("aeiou")

_DEGREE = ({"", "er"}, {"", "est"}, {"er", "est"}, {"", "r"}, {"", "st"}, {"r", "st"})
"""Ending pairs that make a comparative or superlative of the same stem."""

MIN_STEM = 4
"""Shortest shared stem for one lemma ("boil", "read"); shorter ones ("man"/"many") are not."""
MIN_SIBLING_STEM = 4
"""Shortest shared stem for siblings ("week-days"/"week-ends", "java"/"java-script"), and
it must cover half the shorter word: "con-tain"/"con-vert" share a syllable, not a stem."""


class Relation(Enum):
    LEMMA = "lemma"
    SIBLING = "sibling"


def _stem_len(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@lru_cache(maxsize=16384)
def relation(a: str, b: str) -> Relation | None:
    """How lower-case words ``a`` and ``b`` (a != b) relate; None when they share no stem."""
    if a == b:
        return Relation.LEMMA
    n = _stem_len(a, b)
    # a stem ending in a doubled letter or "e"/"y" changes at the seam ("stopped", "making",
    # "summary"/"summarize"): let the shorter tail give back up to two letters
    for back in (0, 1, 2):
        stem = n - back
        if stem < MIN_STEM:
            break
        ta, tb = a[stem:], b[stem:]
        if ta in SUFFIXES and tb in SUFFIXES and {ta, tb} not in _DEGREE:
            return Relation.LEMMA
    if n >= MIN_STEM and (_doubled(a, b, n) or _doubled(b, a, n)):
        return Relation.LEMMA
    if n >= MIN_SIBLING_STEM and 2 * n >= min(len(a), len(b)):
        ta, tb = a[n:], b[n:]
        if {ta, tb} in _DEGREE or (ta in SUFFIXES and tb in SUFFIXES):
            return None  # degree: the guard's "degree" rule; short stems: unrelated
        if any(0 < len(t) < 3 for t in (ta, tb)):
            return None  # a seam change of a derivation ("convert"/"conversion")
        return Relation.SIBLING
    return None


def _doubled(a: str, b: str, n: int) -> bool:
    """``b`` is ``a``'s stem (``n`` letters, ending in a consonant) with that consonant doubled
    before an ending of ``_DOUBLED``, and ``a`` ends at the stem or with a suffix."""
    last, tail = a[n - 1], b[n:]
    return last not in _VOWELS and tail[:1] == last and tail[1:] in _DOUBLED and a[n:] in SUFFIXES


MIN_TYPO_LEN = 6
"""Shortest word a typo is forgiven in: shorter names differ by one letter ("Iran"/"Iraq")."""


def typo(a: str, b: str) -> bool:
    """``b`` is ``a`` typed with one letter left out, one added, or two neighbours swapped,
    inside the word: first and last letters as typed, words of letters only, six letters at
    least ("statement"/"statment", "Kubernetes"/"Kubernets", "Python"/"Pyhton"). Never one
    letter for another ("Ireland"/"Iceland", "Colombia"/"Columbia"), never at an end
    ("Dominica"/"Dominican"), never digits (codes, numbers) nor short words (units)."""
    if a == b or not (a.isalpha() and b.isalpha()) or min(len(a), len(b)) < MIN_TYPO_LEN:
        return False
    if a[0] != b[0] or a[-1] != b[-1] or abs(len(a) - len(b)) > 1:
        return False
    if len(a) != len(b):
        short, long = sorted((a, b), key=len)
        return any(long[:i] + long[i + 1 :] == short for i in range(1, len(long) - 1))
    diffs = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return (
        len(diffs) == 2
        and diffs[1] == diffs[0] + 1
        and a[diffs[0]] == b[diffs[1]]
        and (a[diffs[1]] == b[diffs[0]])
    )


def clipped(a: str, b: str) -> bool:
    """One word is the other cut short ("temp"/"temperature", "calc"/"calculator", "vocab"/
    "vocabulary"): the shorter word of letters begins the longer, and what the longer adds is
    neither a word of its own in WordNet nor an ending that makes another word of the shorter
    (``_DERIVATIONS``). A compound of two words ("java"/"javascript", "pass"/"password",
    "date"/"datetime") and a derived word ("guitar"/"guitarist", "care"/"careful") stay
    siblings: they name something else."""
    short, long = sorted((a, b), key=len)
    if not (short.isalpha() and long.isalpha()) or not long.startswith(short):
        return False
    rest = long[len(short) :]
    return rest not in _DERIVATIONS and not wordnet().synsets(rest)


_DERIVATIONS = frozenset(
    "ful ist ists ism isms ian ians ish ous ic ics ical ant ants ent ents ee ees ess esses "
    "ship ships hood dom ward wards wise like let lets ette ettes ology ologist ologists "
    "ify ified ifies logy logist logists logical".split()
)
"""Endings that make another word of a word ("guitarist", "careful", "booklet", "biology",
"cardio"/"cardiology")."""


__all__ = [
    "MIN_SIBLING_STEM",
    "MIN_STEM",
    "MIN_TYPO_LEN",
    "SUFFIXES",
    "Relation",
    "clipped",
    "relation",
    "typo",
]
