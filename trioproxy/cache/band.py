"""Where a route's pair verifier applies, in the caller's terms: a target false-hit rate picks a
:class:`Band` of cosine similarity (a floor, a ceiling, the alignment's cosine, the
cross-encoder's cut, its reach below the floor) from :data:`BAND_PRESETS`, measured in
``loadtest/semantic_quality.py`` and ``loadtest/ce_eval.py``. The verifier itself (does the
cached prompt cover the new one?) is :mod:`~trioproxy.cache.verifier`, its decider
:mod:`~trioproxy.cache.cross_encoder`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_ALIGN = 0.85
"""Cosine of contextual token vectors above which a differing piece still counts as the
same content. Chosen on the tuning sets only (``loadtest/data/tuning_pairs.json``)."""


@dataclass(frozen=True, slots=True)
class Band:
    """Where the verifier applies: below ``floor`` a miss, at or above ``ceiling`` a hit
    without it (the guard still vetoes), in between a hit only when the pair aligns or the
    cross-encoder serves it."""

    floor: float
    ceiling: float
    align: float
    cut: float = math.inf
    """A pair the alignment does not serve is still served when the cross-encoder
    (:mod:`~trioproxy.cache.cross_encoder`) scores it at least this (a logit; inf: never)."""
    reach: float | None = None
    """Below ``floor`` and at or above this cosine, a pair the guard lets through is served
    only on the cross-encoder's word, at ``cut`` (None: nothing below the floor)."""
    term_cut: float = math.inf
    """At or above ``floor``, the guard's protected-term veto on a pair where a term is on one
    side only and no other rule fires (:func:`~trioproxy.cache.guard.term_only`) is
    overruled when the cross-encoder scores the pair at least this (and ``cut``; inf: never)."""

    @property
    def judges(self) -> bool:
        """The cross-encoder may serve a pair (a finite cut)."""
        return self.cut < math.inf

    @property
    def term_overrule(self) -> bool:
        """The guard's one-sided term veto may be overruled (a finite ``term_cut``)."""
        return self.judges and self.term_cut < math.inf

    @property
    def lowest(self) -> float:
        """The lowest cosine at which anything may be served."""
        return self.floor if self.reach is None or not self.judges else min(self.floor, self.reach)


TERM_CUT = 5.0
"""The cross-encoder's cut for overruling the guard's one-sided protected-term veto: stricter
than the main cut, as the pair model's was (0.85 against 0.70). At the main cut (1) the
overrule served "How do I reverse a string?" for "How do I reverse a string in Python?"
(score 4.65, an inserted constraint: ``tests/test_cache_judge_v8.py``). On v20-v24 every
pair the overrule served at cut 1 (14, all paraphrases) scored >= 5.14, so 5 serves the
same there (chosen after seeing those scores: the one setting of FROZEN v25 not independent
of v20-v24; with no overrule at all: 592 paraphrases instead of 606, near-misses unchanged)."""

BAND_PRESETS: dict[float, Band] = {
    0.005: Band(0.85, 1.0, 0.90, 4.0),
    0.01: Band(0.80, 1.0, DEFAULT_ALIGN, 1.0, 0.75, TERM_CUT),
    0.02: Band(0.80, 1.0, DEFAULT_ALIGN, 0.0, 0.75, TERM_CUT),
    0.05: Band(0.80, 1.0, 0.80, -2.0, 0.75, TERM_CUT),
}
"""A route's target false-hit rate -> its band. Floors, ceilings and the alignment's cosine
from the curve measured on the seen sets (``loadtest/semantic_quality.py --curve``). Near-misses
reach cosine 1.0 (Mbps/MBps), so no preset skips the verifier below exact text equality.

The cross-encoder's cuts (FROZEN v25) from its evaluation on v20-v24, five writer sets it was
not trained on (``loadtest/ce_eval.py``, the policy "guard + align + CE" at floor 0.80, reach
0.75; of 1,120 near-misses, 400 non-duplicates, 800 paraphrases): cut 4: 0 / 0 / 587
(73.4 %); cut 1: 1 / 1 / 606 (75.8 %); cut 0: 1 / 1 / 613; cut -1: 3 / 2 / 618; cut -2: 4 / 2 /
621 (the pair model before it, at the 0.01 preset: 8 / 1 / 555). The default target 0.01
takes cut 1; 0.02 cut 0 and 0.05 cut -2, each within its target there, so that no looser
target is stricter; all three overrule the one-sided term veto at :data:`TERM_CUT`. The
strictest preset keeps its higher floor and alignment cosine, no reach and no term overrule,
and takes cut 4 (none of those negatives served)."""


def band_for(target: float) -> Band:
    """The preset of the largest target at or below ``target`` (the strictest if none)."""
    fitting = [t for t in BAND_PRESETS if t <= target]
    return BAND_PRESETS[max(fitting) if fitting else min(BAND_PRESETS)]


__all__ = ["BAND_PRESETS", "DEFAULT_ALIGN", "TERM_CUT", "Band", "band_for"]
