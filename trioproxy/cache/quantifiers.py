"""How much of a thing a prompt asks about: the quantifier classes the near-miss guard's
"quantifier" rule compares ("one pod" / "all pods", "a few examples" / "many examples";
"each" = "every" = "all"), and one thing counted against many of it (:func:`one_against_many`:
"delete a row" / "delete multiple rows"). Pure: word sequences in, classes or a verdict out."""

from __future__ import annotations

_QUANTIFIERS = {
    "all": "all", "every": "all", "each": "all", "entire": "all", "whole": "all",
    "some": "some", "few": "some", "several": "some", "couple": "some", "any": "some",
    "many": "many", "lots": "many", "numerous": "many", "plenty": "many",
    "most": "most", "both": "both", "either": "either", "one": "one", "single": "one",
}  # fmt: skip
"""How much of a thing a prompt asks about, by class: "each" pod and "every" pod are one
class ("all"), "one" pod, "a few" examples and "many" examples are others."""
_PAIRED = {"either": "or", "both": "and"}
_NOT_ONE = frozenset("which the this that each every any no of another more".split())
"""Words around "one" that make it a pronoun or part of a phrase ("which one", "one of")."""


def quantities(seq: tuple[str, ...], stop: frozenset[str]) -> frozenset[str]:
    """The quantifier classes of a prompt (``_QUANTIFIERS``); "one" / "single" only before
    a word that is not a pronoun's, a phrase's or a function word of ``stop`` ("restart one
    pod", not "which one", "one of"); "either" / "both" not as coordinations ("either X or
    Y"); "once" is one ("once a day"), but not in "at once"."""
    out = set()
    for i, w in enumerate(seq):
        if w == "once":  # "once a day" / "several times a day"; not "at once"
            if not i or seq[i - 1] != "at":
                out.add("one")
            continue
        q = _QUANTIFIERS.get(w)
        if q == "one":
            prev = seq[i - 1] if i else ""
            nxt = seq[i + 1] if i + 1 < len(seq) else ""
            if prev in _NOT_ONE or not nxt or nxt in _NOT_ONE or nxt in stop:
                continue
        elif q in _PAIRED and _PAIRED[q] in seq[i + 1 :]:
            continue  # a coordination: "either X or Y", "both X and Y"
        if q is not None:
            out.add(q)
    return frozenset(out)


_ONE = frozenset("a an one single".split())
"""Words that count one of the noun they stand before ("a row", "one pod")."""
_MANY = frozenset("all every each multiple many several".split())
"""Words that count more than one, or every one, of the noun they stand before ("multiple
rows", "all pods"); not "some", "any" or "a few", which a paraphrase puts for "a" ("recommend
a good book" / "recommend some good books")."""
_THAN = frozenset({"than"})
"""Before a counting word, a comparison: "more than one value" counts many."""


_NOT_NOUN = frozenset(
    "per from into onto over under about across through between among within without after "
    "before during since until via than that which who whose where when while".split()
)
"""Words that end a noun phrase as the guard's function words do ("multiple files per split")."""
_RUN = 2
"""The longest run of words a counting word's noun phrase is read from ("every pip package"):
a third would be the verb as often ("a struct type becomes")."""


def _participle(word: str) -> bool:
    """A word in "-ed" or "-ing" ("stopped", "running"), read as an adjective before a noun."""
    return len(word) > 4 and word.endswith(("ed", "ing"))


def _counted(seq: tuple[str, ...], words: frozenset[str], stop: frozenset[str]) -> set[str]:
    """The nouns, in the singular, that a word of ``words`` counts: the last word of the run
    of words right after it (past other counting words and participles), each of letters,
    three at least, and not a function word of ``stop`` nor of :data:`_NOT_NOUN`: its noun
    phrase's head ("a single row", "all stopped containers", "every pip package", "each
    struct field" -> "field"); a plural's final "s" or "es" dropped. Not after "than" ("more
    than one value")."""
    out: set[str] = set()
    for i, w in enumerate(seq):
        if w not in words or (i and seq[i - 1] in _THAN):
            continue
        k = i + 1
        while k < len(seq) and (seq[k] in _ONE or seq[k] in _MANY or _participle(seq[k])):
            k += 1
        run = []
        for x in seq[k : k + _RUN]:
            if len(x) < 3 or not x.isalpha() or x in stop or x in _NOT_NOUN:
                break
            run.append(x)
        if run:
            x = run[-1]
            out |= {x, x[:-1] if x.endswith("s") else x, x[:-2] if x.endswith("es") else x}
    return out


def one_against_many(a: tuple[str, ...], b: tuple[str, ...], stop: frozenset[str]) -> bool:
    """``a`` counts one of a thing ("a row", "one pod", "a single cell") that ``b`` counts as
    many or all ("multiple rows", "all pods", "every cell"), and neither also counts it the
    other way: "delete a row in pandas" / "delete multiple rows in pandas". A plural without
    a counting word ("delete rows") or a vague one ("some", "any") does not count."""
    one = _counted(a, _ONE, stop) - _counted(a, _MANY, stop)
    many = _counted(b, _MANY, stop) - _counted(b, _ONE, stop)
    return bool(one & many)


__all__ = ["one_against_many", "quantities"]
