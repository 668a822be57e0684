"""The near-miss guard's "polarity" rule: one prompt stops, prevents or silences the very
action the other asks for ("make chrome save my passwords" / "make chrome stop saving my
passwords", "log all SQL queries" / "silence SQL query logging", "get moss to grow" / "keep
moss from growing"); and its "in place" antonym rule: the two prompts are the same words but
for one or two put in place of others, and one of them in place of its antonym ("include the
element at the end index" / "... at the start index"), whether or not the antonym is also
used elsewhere on either side ("slice(start, end)": :func:`opposite_in_place`). Pure: word
sequences in, a verdict out (:mod:`.guard` asks them)."""

from __future__ import annotations

from difflib import SequenceMatcher

from trioproxy.cache.prompt_features import Features
from trioproxy.cache.thesaurus import wordnet
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


_IN_PLACE_EDITS = 2
"""Edits (runs of words replaced, added or dropped) two prompts may differ by for
:func:`opposite_in_place`: past that, words at the same place are not one put for the other."""


def opposite_in_place(
    a: tuple[str, ...], b: tuple[str, ...], listed: frozenset[tuple[str, str]]
) -> bool:
    """``b`` is ``a`` with at most :data:`_IN_PLACE_EDITS` edits, one of which puts a word in
    place of its antonym, word for word ("the end index" / "the start index", "an inclusive
    range" / "an exclusive range", "lighten a stain that came out too dark" / "darken a stain
    that came out too light"): WordNet antonyms in any kept sense, or a pair of ``listed`` (the
    guard's own antonym pairs, either way round). Unlike the guard's antonym rule, the words
    may also stand elsewhere on either side ("slice(start, end)"): an antonym put at the very
    place of a word asks the opposite. Two words that only trade places ("good or bad" / "bad
    or good", "the pros and cons" / "the cons and pros") are an order, which the guard's order
    and swap rules judge. Words of two letters at least, letters only."""
    if a == b or abs(len(a) - len(b)) > _IN_PLACE_EDITS:
        return False
    k = 0  # the words both share at the start and at the end are no edit
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    e = 0
    while e < min(len(a), len(b)) - k and a[-1 - e] == b[-1 - e]:
        e += 1
    a, b = a[k : len(a) - e], b[k : len(b) - e]
    if len(a) == len(b):
        put = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        if len(put) <= _IN_PLACE_EDITS:
            return any(_antonyms(x, y, listed) and (y, x) not in put for x, y in put)
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    ops = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    if len(ops) > _IN_PLACE_EDITS:
        return False
    put = [
        (x, y)
        for tag, i1, i2, j1, j2 in ops
        if tag == "replace" and i2 - i1 == j2 - j1
        for x, y in zip(a[i1:i2], b[j1:j2], strict=True)
    ]
    return any(_antonyms(x, y, listed) and (y, x) not in put for x, y in put)


def _antonyms(x: str, y: str, listed: frozenset[tuple[str, str]]) -> bool:
    """``x`` and ``y`` (words of letters, two at least) are a pair of ``listed``, either way
    round, or WordNet antonyms."""
    if len(x) < 2 or len(y) < 2 or not (x.isalpha() and y.isalpha()):
        return False
    return (x, y) in listed or (y, x) in listed or wordnet().antonyms(x, y)


__all__ = ["opposite_in_place", "polarity"]
