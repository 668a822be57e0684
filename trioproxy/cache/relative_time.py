"""The guard's time rule (pure): a time word placed differently relative to now ("this
Friday" / "last Friday", "the current quarter" / "the previous quarter"), or a length of time
read the other way round ("commits from the past two weeks" / "older than two weeks").
:mod:`~trioproxy.cache.guard` calls :func:`relative_time` on the two prompts' features.
"""

from __future__ import annotations

from itertools import pairwise

from trioproxy.cache.prompt_features import Features

_DEICTIC = {
    "this": "this", "current": "this", "next": "next", "coming": "next", "upcoming": "next",
    "following": "next", "last": "last", "previous": "last", "past": "last", "prior": "last",
}  # fmt: skip
"""Words that place a time relative to now, by class ("this Friday" / "last Friday")."""
_ANCHORS = frozenset(
    "day week weekend month year quarter season semester decade century morning afternoon "
    "evening night monday tuesday wednesday thursday friday saturday sunday january february "
    "march april may june july august september october november december spring summer "
    "autumn fall winter".split()
)


def _times(seq: tuple[str, ...]) -> dict[str, str]:
    """Each time word of ``seq`` with the class of the word placing it right before it."""
    return {w: _DEICTIC[p] for p, w in pairwise(seq) if w in _ANCHORS and p in _DEICTIC}


_UNITS_OF_TIME = frozenset(
    "second seconds minute minutes hour hours day days week weeks month months year years".split()
)
_RECENT = frozenset({"within", "past", "last", "recent", "recently"})
_OLDER = frozenset({"ago", "older", "earlier"})


def _span(words: frozenset[str]) -> str | None:
    """Whether a prompt with a length of time asks for what is newer than it ("in the past two
    weeks", "within an hour") or older ("older than two weeks", "more than an hour ago")."""
    if not words & _UNITS_OF_TIME:
        return None
    if words & _OLDER:
        return "older"
    return "recent" if words & _RECENT else None


def relative_time(a: Features, b: Features) -> bool:
    """One time word placed differently relative to now on each side ("this Friday" / "last
    Friday", "next quarter" / "the previous quarter"; a time placed on one side only is not
    counted: "on Friday" / "this Friday"), or a length of time read the other way round ("in
    the past two weeks" / "older than two weeks")."""
    ta, tb = _times(a.seq), _times(b.seq)
    if any(tb.get(w, cls) != cls for w, cls in ta.items()):
        return True
    return {_span(a.words), _span(b.words)} == {"older", "recent"}


__all__ = ["relative_time"]
