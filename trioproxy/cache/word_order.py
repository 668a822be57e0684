"""The guard's word-order and question-kind rules (pure): which kind of answer a prompt's
question words ask for, a phrase moved by a paraphrase, and two content words exchanged (a
role swap). :mod:`trioproxy.cache.guard` calls them on the word sequences it extracts.
"""

from __future__ import annotations

_ASKS = {
    "why": "reason", "when": "time", "where": "place", "who": "person", "whom": "person",
    "whose": "person", "how": "manner",
}  # fmt: skip
"""Question words and the kind of answer they ask for: "why did Rome fall" and "when did Rome
fall" share every content word and want different answers."""
_HOW = {
    "many": "measure", "much": "measure", "long": "measure", "often": "measure",
    "far": "measure", "old": "measure", "big": "measure", "large": "measure",
    "come": "reason",
}  # fmt: skip
"""After "how": a measure ("how long" and "how much time" ask the same), or "how come" (why)."""
_WHAT = {
    "year": "time", "time": "time", "date": "time", "day": "time", "century": "time",
    "decade": "time", "month": "time", "place": "place", "country": "place", "city": "place",
    "person": "person",
}  # fmt: skip
"""After "what" / "which" (which otherwise ask for anything): a word that fixes the kind."""
_MOVABLE = frozenset(
    "in at on after before for from with within during under over inside outside using".split()
)
"""Prepositions that open a phrase a paraphrase may move ("In Python, how do I ...")."""
_SWAP_MIN = 4
"""Shared content words the swap rule needs (three are too few to tell a role swap from a
rewrite: "version of Node installed" / "installed Node version")."""
_MEASURE = frozenset({"measure"})
"""Kinds a "how do I ..." (manner) question may be answered with ("how do I check disk usage"
/ "how can I see how much storage is used")."""
_AUX = frozenset(
    "do does did is are was were can could should would will shall has have had may might "
    "must to".split()
)
"""A question word counts when it opens the prompt or a sentence, or an auxiliary follows it
("when did ..."), not as a conjunction ("it crashes when I open it")."""


def question_kinds(seq: tuple[str, ...], starts: frozenset[int]) -> frozenset[str]:
    """The kinds of answer the prompt's question words ask for (empty: none, or only
    "what"/"which"); a plain "how" counts only without another kind ("how do I find out
    why ..." asks why)."""
    kinds: set[str] = set()
    for i, w in enumerate(seq):
        nxt = seq[i + 1] if i + 1 < len(seq) else ""
        if w == "how" and nxt in _HOW:
            kinds.add(_HOW[nxt])
        elif w in _ASKS and (i == 0 or i in starts or nxt in _AUX):
            kinds.add(_ASKS[w])
        elif w in ("what", "which") and nxt in _WHAT:
            kinds.add(_WHAT[nxt])
    if len(kinds) > 1:
        kinds.discard("manner")
    return frozenset(kinds)


def asks_differently(a: frozenset[str], b: frozenset[str]) -> bool:
    """Both prompts ask a question of a known kind, and not the same: a plain "how" (manner)
    is compatible only with a measure ("how much", "how long", ...)."""
    if not a or not b or a == b:
        return False
    manner = frozenset({"manner"})
    return not ((a == manner or b == manner) and (a | b) - manner <= _MEASURE)


def _content(seq: tuple[str, ...], stop: frozenset[str]) -> list[str]:
    return [w for w in seq if w not in stop and w not in _FILLER and len(w) > 1]


_FILLER = frozenset("its their his her his our an to from as so if not".split())


def moved_block(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """``b`` is ``a`` with one block of words moved, the block opening with a preposition
    of :data:`_MOVABLE` and at least two words long ("In Fahrenheit, what is ..." /
    "What is ... in Fahrenheit")."""
    n = len(a)
    if n != len(b) or n > 40:
        return False
    for i in range(n):
        for j in range(i + 2, n + 1):
            block, rest = a[i:j], a[:i] + a[j:]
            if block[0] not in _MOVABLE:
                continue
            for k in range(len(rest) + 1):
                if k != i and rest[:k] + block + rest[k:] == b:
                    return True
    return False


def swapped(a: tuple[str, ...], b: tuple[str, ...], stop: frozenset[str]) -> bool:
    """The content words the two prompts share, in each prompt's order, differ by one
    exchange of two words with at least one word between them ("parent process waits child
    process" / "child process waits parent process"); four shared words at least."""
    ca, cb = _content(a, stop), _content(b, stop)
    sa, sb = set(ca), set(cb)
    ra, rb = [w for w in ca if w in sb], [w for w in cb if w in sa]
    if len(ra) != len(rb) or len(ra) < _SWAP_MIN or ra == rb:
        return False
    diffs = [i for i, (x, y) in enumerate(zip(ra, rb, strict=True)) if x != y]
    if len(diffs) != 2:
        return False
    i, j = diffs
    return j - i >= 2 and ra[i] == rb[j] and ra[j] == rb[i]


__all__ = ["asks_differently", "moved_block", "question_kinds", "swapped"]
