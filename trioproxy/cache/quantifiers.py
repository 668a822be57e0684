"""How much of a thing a prompt asks about: the quantifier classes the near-miss guard's
"quantifier" rule compares ("one pod" / "all pods", "a few examples" / "many examples";
"each" = "every" = "all"). Pure: a word sequence in, its classes out."""

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


__all__ = ["quantities"]
