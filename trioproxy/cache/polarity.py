"""The near-miss guard's "polarity" rule: one prompt stops, prevents or silences the very
action the other asks for ("make chrome save my passwords" / "make chrome stop saving my
passwords", "log all SQL queries" / "silence SQL query logging", "get moss to grow" / "keep
moss from growing"). Pure: word sequences in, a verdict out (:mod:`.guard` asks it)."""

from __future__ import annotations

from trioproxy.cache.prompt_features import Features
from trioproxy.cache.word_order import COORDINATORS

_STOP_VERBS = frozenset(
    "stop stops stopped stopping silence silences silenced silencing suppress suppresses "
    "suppressed suppressing mute mutes muted muting disable disables disabled disabling "
    "prevent prevents prevented preventing avoid avoids avoided avoiding quit quits quitting "
    "cease ceases ceased ceasing block blocks blocked blocking cancel cancels cancelled "
    "canceled cancelling rid".split()
)
"""Verbs that stop, prevent or silence the action after them ("stop saving", "prevent a
service from starting", "silence SQL query logging"; "rid" of "get rid of")."""
_GERUND_REACH = 5
"""Words after a stop-verb searched for the gerund it stops ("stop Spotify from recommending")."""
_KEEP_FROM_REACH = 4
"""Words between "keep" and "from" in "keep X from Y-ing", a stop-verb too."""
_VERB_ENDINGS = ("", "s", "es", "ed", "d")
"""A verb's forms besides its gerund, from its stem ("save" -> "saves", "saved")."""
_NOT_GERUNDS = frozenset(
    "evening morning string thing nothing something anything everything during ceiling "
    "spring king ring bring sing wing sibling".split()
)
"""Words ending in "-ing" that are no verb's gerund after a stop-verb."""
_NOT_STOPPED = _STOP_VERBS | _NOT_GERUNDS
"""An "-ing" word after a stop-verb that is not the action it stops."""


def _stops(seq: tuple[str, ...]) -> bool:
    """``seq`` has a stop-verb, or "keep X from"."""
    return any(
        w in _STOP_VERBS or (w == "keep" and "from" in seq[i + 1 : i + 1 + _KEEP_FROM_REACH])
        for i, w in enumerate(seq)
    )


def _stopped_verbs(seq: tuple[str, ...]) -> set[str]:
    """The stems whose gerund a stop-verb of ``seq`` stops, with the gerund's other spellings
    ("stop saving" -> "sav", "save"; "silence SQL query logging" -> "logg", "log"; "keep moss
    from growing" -> "grow"); not a stop-verb coordinated with its opposite ("enable or
    disable caching")."""
    out: set[str] = set()
    for i, w in enumerate(seq):
        if w == "keep" and "from" in seq[i + 1 : i + 1 + _KEEP_FROM_REACH]:
            after = seq.index("from", i + 1) + 1
        elif w in _STOP_VERBS and not (i and seq[i - 1] in COORDINATORS):
            after = i + 1
        else:
            continue
        for x in seq[after : after + _GERUND_REACH]:
            if x.endswith("ing") and len(x) >= 5 and x not in _NOT_STOPPED:
                out |= {b for b in (x[:-3], x[:-3] + "e", x[:-4]) if len(b) >= 3}
                break
    return out


def polarity(a: Features, b: Features) -> bool:
    """``a`` stops the action that ``b``, with no stop-verb nor negation, asks for: ``b`` has
    the stopped verb in a form other than the gerund itself ("save", "saves", "saved"; the
    same gerund on both sides names a thing as often: "stop snoring" / "snoring remedies")."""
    if a.negated or b.negated or not _stops(a.seq) or _stops(b.seq):
        return False
    forms = {v + t for v in _stopped_verbs(a.seq) for t in _VERB_ENDINGS}
    return bool(forms & b.words)


__all__ = ["polarity"]
