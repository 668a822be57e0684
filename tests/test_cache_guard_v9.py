"""Issue 12, after held-out v8: the guard's "am" as a verb, not a time of day, and a party's
role swapped through a pronoun's form. Examples written here, not taken from the sets.
Pure core: the guard alone."""

from __future__ import annotations

import pytest

from trioproxy.cache.guard import near_miss
from trioproxy.cache.word_order import roles_swapped


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # "am" is a time of day only after a number
        ("How do I tell which shell I'm using?", "How do I tell which shell I am using?", None),
        ("Am I allowed to carry a power bank on a plane?",
         "Can I carry a power bank on a plane?", None),
        ("Is the pharmacy open at 8 am?", "Is the pharmacy open at 8 pm?", "number"),
        ("Wake me at seven am", "Wake me at seven pm", "number"),
        ("Is 5pm too late?", "Is 5 pm too late?", None),
    ],
)  # fmt: skip
def test_am_is_a_time_only_after_a_number(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # one party turns from object to subject while the other trades places with it
        ("Can my boss fire me for posting about work online?",
         "Can I fire my boss for posting about work online?", "swap"),
        ("Should my sister pay me back for the concert tickets?",
         "Should I pay my sister back for the concert tickets?", "swap"),
        ("Why do my neighbours keep blaming us for the noise at night?",
         "Why do we keep blaming our neighbours for the noise at night?", "swap"),
        # the same question: a pronoun that only changes form, or the passive voice
        ("Can you help me write a cover letter for a nursing job?",
         "I need help writing a cover letter for a nursing job", None),
        ("Can my landlord evict me in the middle of winter?",
         "Can I be evicted by my landlord in the middle of winter?", None),
        ("Show me how to reverse a linked list in C", "How do I reverse a linked list in C?", None),
    ],
)  # fmt: skip
def test_a_party_swapped_through_a_pronoun(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule


def test_roles_swapped_needs_a_pronoun_in_another_form() -> None:
    a = "can my boss fire me for posting online".split()
    b = "can i fire my boss for posting online".split()
    stop = frozenset("can my for i me".split())
    assert roles_swapped(tuple(a), tuple(b), stop)
    # the same words with the pronoun in one form on both sides: not this rule's case
    assert not roles_swapped(
        tuple(a), tuple("can me fire my boss for posting online".split()), stop
    )


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # one time word placed differently relative to now
        ("Which restaurants are open this Sunday?", "Which restaurants were open last Sunday?",
         "time"),
        ("Forecast our churn for next quarter", "Forecast our churn for the previous quarter",
         "time"),
        ("Plan a menu for the coming weekend", "Plan a menu for the past weekend", "time"),
        # placed on one side only, or the same way on both: not this rule
        ("Which restaurants are open on Sunday?", "Which restaurants are open this Sunday?", None),
        ("What is on TV this evening?", "What's on TV this evening?", None),
    ],
)  # fmt: skip
def test_relative_time(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("What should a host do when a guest breaks something?",
         "What should a guest do when a host breaks something?"),
        ("Can a tenant withhold rent for repairs?", "Can a landlord withhold rent for repairs?"),
        ("What does a lender check before approving a loan?",
         "What does a borrower check before approving a loan?"),
    ],
)  # fmt: skip
def test_the_parties_of_a_deal_are_antonyms(cached: str, new: str) -> None:
    assert near_miss(new, cached) is not None


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # the owners of two things trade places
        ("My cat scratched my roommate's sofa. Who pays?",
         "My roommate's cat scratched my sofa, so who should pay for it?", "swap"),
        ("Our team broke their build: how do we apologise?",
         "Their team broke our build. What should we say to apologise?", "swap"),
        # one owner on another word is a paraphrase's freedom, not a swap
        ("How do I delete your Hugging Face account?",
         "How do I delete the account on your Hugging Face profile?", None),
    ],
)  # fmt: skip
def test_owners_trade_places(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("Thanks! Now, how do I descale a kettle?", "how do I descale a kettle?"),
        ("OK. Next question: what is a mutex?", "what is a mutex?"),
        ("Great, also: which port does SSH use?", "which port does SSH use?"),
        # no punctuation after it, or inside the question: it stays
        ("Is it OK to refreeze thawed bread?", "Is it OK to refreeze thawed bread?"),
        ("Now what?", "Now what?"),
    ],
)  # fmt: skip
def test_a_conversation_opener_is_filler(text: str, plain: str) -> None:
    from trioproxy.cache.preamble import without_filler

    assert without_filler(text) == plain
