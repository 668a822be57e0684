"""The guard's question-kind rule (pure): which kind of answer a prompt's question words ask
for ("why" a reason, "when" a time, "how many" a count, "what is the best way" a manner, ...:
:func:`question_kinds`), and whether two prompts ask questions of kinds one question never asks
for both (:func:`asks_differently`). :mod:`trioproxy.cache.guard` calls them on the word
sequences it extracts.
"""

from __future__ import annotations

_ASKS = {
    "why": "reason", "when": "time", "where": "place", "who": "person", "whom": "person",
    "whose": "person", "how": "manner",
}  # fmt: skip
"""Question words and the kind of answer they ask for: "why did Rome fall" and "when did Rome
fall" share every content word and want different answers."""
_HOW = {
    "many": "count", "much": "amount", "long": "measure", "often": "frequency",
    "far": "measure", "old": "measure", "big": "measure", "large": "measure",
    "come": "reason",
}  # fmt: skip
"""After "how": a count ("how many"), an amount ("how much"), a frequency ("how often"),
another measure ("how long" and "how much time" ask the same), or "how come" (why)."""
_WHAT = {
    "year": "time", "time": "time", "date": "time", "day": "time", "century": "time",
    "decade": "time", "month": "time", "place": "place", "country": "place", "city": "place",
    "location": "place",
    "person": "person", "benefits": "reason", "advantages": "reason",
}  # fmt: skip
"""After "what" / "which": a word that fixes the kind."""
_WHAT_REASON = frozenset(
    "causes cause caused causing makes make made reason reasons purpose".split()
)
"""Right after "what": the words that make it ask why ("what causes X" / "why does X happen");
as its second word only the nouns ("what are the main causes")."""
_WHAT_VERBS = frozenset("makes make made".split())
_WHAT_MANNER = frozenset("way ways steps step process method procedure".split())
"""After "what is the" / "what are the": a manner ("what is the best way to X" / "how do I X")."""
_FINDING = frozenset("find see check view locate look".split())
"""After "where can I": verbs that ask how to find something, not for a place to go."""
_MEASURE = frozenset({"measure", "count", "amount", "frequency"})
_APART = (frozenset({"count", "amount"}), frozenset({"frequency", "amount"}),
          frozenset({"frequency", "measure"}))  # fmt: skip
"""Two measures one question never asks for both: a count and an amount ("how many glasses of
water" / "how much water"), a frequency and an amount ("how often should I water it" / "how
much water should I give it"), a frequency and another measure ("how often" / "how long");
a frequency and a count may ask the same ("how often" / "how many times a week")."""
"""Kinds a "how do I ..." (manner) question may be answered with ("how do I check disk usage"
/ "how can I see how much storage is used")."""
_THING = "thing"
_REFINED = "what:"
"""A "what" / "which" question otherwise: a thing, which a manner or a measure may also be
("what is the GDP of Japan" / "how large is ..."), never a reason, time, place or person
("which algorithm is stable" / "why is this algorithm stable")."""
_AUX = frozenset(
    "do does did is are was were can could should would will shall has have had may might "
    "must to".split()
)
"""A question word counts when it opens the prompt or a sentence, or an auxiliary follows it
("when did ..."), not as a conjunction ("it crashes when I open it")."""


def question_kinds(seq: tuple[str, ...], starts: frozenset[int]) -> frozenset[str]:
    """The kinds of answer the prompt's question words ask for (empty: none, or only
    "what"/"which"); a plain "how" counts only without another kind ("how do I find out
    why ..." asks why); a "when" that opens a clause before another question word does not
    count."""
    kinds: set[str] = set()
    for i, w in enumerate(seq):
        nxt = seq[i + 1] if i + 1 < len(seq) else ""
        if w == "how" and nxt in _HOW:
            kinds.add(_HOW[nxt])
        elif w == "where" and _finding(seq, i):
            kinds.add("manner")
        elif w in _ASKS and (nxt in _AUX or ((i == 0 or i in starts) and not _clause(seq, i))):
            kinds.add(_ASKS[w])
        elif w in ("what", "which") and (i == 0 or i in starts or nxt in _WHAT):
            kinds.add(_what_kind(seq, i))
    for loose in ("manner", _THING):
        if len(kinds) > 1:
            kinds.discard(loose)
    return frozenset(kinds)


def _finding(seq: tuple[str, ...], i: int) -> bool:
    """The "where" at ``i`` asks where to find or see something ("where can I see my IP
    address"): how to find it, a manner."""
    return (
        seq[i + 1 : i + 2] in (("can",), ("do",), ("could",), ("should",))
        and seq[i + 2 : i + 3] in (("i",), ("you",), ("we",))
        and seq[i + 3 : i + 4] in tuple((v,) for v in _FINDING)
    )


def _clause(seq: tuple[str, ...], i: int) -> bool:
    """The "when" at ``i`` opens a clause before the question ("When hyenas steal its kill,
    what does a lion do?"): another question word follows it."""
    return seq[i] == "when" and any(w in _ASKS or w in ("what", "which") for w in seq[i + 1 :])


def _what_kind(seq: tuple[str, ...], i: int) -> str:
    """What a question opened by "what" / "which" at ``i`` asks for, from its first two words
    past auxiliaries and articles: a time, place or person ("what year", "what is the best
    time": ``_WHAT``, marked as a thing's refinement), a reason ("what causes"), a manner ("what
    is the best way"), else a thing."""
    after = [w for w in seq[i + 1 : i + 6] if w not in _AUX and w not in ("the", "a", "an", "be")]
    for k, w in enumerate(after[:2]):
        if w in _WHAT:
            return _REFINED + _WHAT[w]
        if w in _WHAT_REASON and (k == 0 or w not in _WHAT_VERBS):
            return "reason"
        if w in _WHAT_MANNER:
            return "manner"
    return _THING


def asks_differently(a: frozenset[str], b: frozenset[str]) -> bool:
    """Both prompts ask a question of a known kind, and not the same: a plain "how" (manner)
    is compatible only with a measure ("how much", "how long", ...)."""
    if not a or not b or a == b:
        return False
    return not (
        all(any(_compatible(x, y) for y in b) for x in a)
        and all(any(_compatible(x, y) for x in a) for y in b)
    )


def _compatible(x: str, y: str) -> bool:
    """Two kinds of answer one question may ask for: the same kind; a thing's refinement
    ("which city", "what are the benefits") and its kind ("where", "why"), a thing or a manner; a thing and a manner or a measure
    ("what is the GDP" / "how large is the GDP"); a manner and a measure; two measures, but
    never two of :data:`_APART` ("how many glasses of water" / "how much water", "how often" /
    "how much")."""
    x, y = sorted((x, y))
    if x == y or {x, y} <= _MEASURE:
        return {x, y} not in _APART
    for a, b in ((x, y), (y, x)):
        if a.startswith(_REFINED):
            return b in (_THING, "manner", a.removeprefix(_REFINED))
    if _THING in (x, y):
        return {x, y} - {_THING} <= _MEASURE | {"manner"}
    return "manner" in (x, y) and {x, y} - {"manner"} <= _MEASURE


__all__ = ["asks_differently", "question_kinds"]
