"""Issue 12, after held-out v16: the polarity rule reads "keep X from Y-ing" and verbs WordNet
does not list ("autosave"), "allow" / "block" are antonyms, and a passive gerund ("being
interviewed") against the active one is a swap of roles. Examples written here, not taken from
the sets; the kept paraphrases are the rules' known traps. Pure core."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import near_miss


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("how do I get ivy to climb my fence", "how do I keep ivy from climbing my fence", "polarity"),
        ("turn on autosync in outlook", "how do I stop outlook from autosyncing", "polarity"),
        # the same gerund on both sides names the thing as often as the act
        ("remedies for snoring", "how do I stop snoring", None),
        ("allow camera access for a site in firefox", "block camera access for a site in firefox",
         "antonym"),
        ("tips for mentoring a junior developer", "tips for being mentored as a junior developer",
         "swap"),
        # the agent named with "by": the parties stay where they were
        ("how to cope with being ignored by coworkers", "my coworkers keep ignoring me, how to cope",
         None),
        # a passive gerund inside a longer clause is no role of the asker's
        ("The method takes the file and its options, which are passed as arguments.",
         "The method takes the file, with its options being passed as arguments.", None),
    ],
)  # fmt: skip
def test_guard_v17(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule
