"""Issue 12, after held-out v15: a stop-verb aimed at the very action the other prompt asks
for ("polarity"), and a number's one-letter unit typed in the other case. Examples written
here, not taken from the sets; the kept paraphrases are the rules' known traps. Pure core."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import near_miss


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # a stop-verb's gerund whose verb the other side asks for
        ("How do I make Firefox remember my logins?", "How do I make Firefox stop remembering my logins?",
         "polarity"),
        ("postgres: log every slow query", "postgres: silence slow query logging", "polarity"),
        ("How do I get my cat to use the scratching post?",
         "How do I prevent my cat from using the scratching post?", "polarity"),
        ("Why should I learn Haskell?", "Why should I avoid learning Haskell?", "polarity"),
        # a gerund WordNet lists as a noun of its own is not the verb asked for
        ("What are good remedies for snoring?", "How do I stop snoring?", None),
        # both sides stop something: the rule says nothing; a negation is the negation rule's
        ("How do I get rid of a cough?", "What's a good way to stop coughing?", None),
        ("How do I stop my puppy biting?", "puppy bites, how to teach it not to", "negation"),
        # "enable or disable" names both polarities
        ("Enable or disable caching in Django", "How do I turn caching on in Django?", None),
        # "-ing" words that are not a stop-verb's gerund: "evening", "morning"
        ("What should I drink in the evening?", "What should I avoid in the evening?", None),
        # a number's one-letter unit, case for case
        ("Set a pod CPU limit of 250M", "Set a pod CPU limit of 250m", "case"),
        ("Is 100B parameters a lot?", "Is 100b parameters a lot?", "case"),
        ("Best 4K monitor under $300", "best 4k monitor under $300", None),
        ("Set a pod CPU limit of 250m", "set a pod cpu limit of 250m", None),
    ],
)  # fmt: skip
def test_guard_v16(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule
