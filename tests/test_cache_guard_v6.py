"""Issue 12, v6: the guard's "what"/"which" question kinds, "how many" vs "how much", the
quantifier rule, case and order rules that spare spellings and politeness, compound words,
exact-case aliases, and greetings as filler for the pair verifier. Pure core, except the
verifier test, which needs the embedding model's token vectors."""

from __future__ import annotations

import pytest

from trioproxy.cache.aliases import parse, shipped
from trioproxy.cache.embedder import OnnxMiniLM
from trioproxy.cache.guard import near_miss
from trioproxy.cache.verifier import verify


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # a thing ("what" / "which") is not a reason, a place, a person or a time
        ("Which database engine is fastest?", "Why is this database engine fastest?", "question"),
        ("What does a segmentation fault mean?", "Where does a segmentation fault come from?",
         "question"),
        ("What is a credit union?", "Who runs a credit union?", "question"),
        ("What are the symptoms of the flu?", "What are the causes of the flu?", "question"),
        # a count is not an amount
        ("How much sugar is in a donut?", "How many spoonfuls of sugar are in a donut?",
         "question"),
        # ... but these ask the same
        ("What is the capital of Peru?", "Which city is the capital of Peru?", None),
        ("Why do dogs pant?", "What makes dogs pant?", None),
        ("What is the best month to visit Iceland?", "When is the best month to visit Iceland?",
         None),
        ("What is the best way to learn chess?", "How do I learn chess?", None),
        ("What is the population of Peru?", "How large is the population of Peru?", None),
        ("How often should I water a cactus?", "How many times should I water a cactus?", None),
        ("What's the command to list files?", "How do I list files?", None),
    ],
)  # fmt: skip
def test_guard_what_and_which_question_kinds(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("Stop one container in the cluster.", "Stop all containers in the cluster.",
         "quantifier"),
        ("Show me a few photos of owls.", "Show me many photos of owls.", "quantifier"),
        ("Do most birds migrate?", "Do all birds migrate?", "quantifier"),
        ("Does any planet have rings?", "Does every planet have rings?", "quantifier"),
        # one class in other words, or one added, is not a swap of classes
        ("Delete each file in the folder.", "Delete every file in the folder.", None),
        ("Is there any way to delete all files?", "How do I delete all files?", None),
        # "one" as a pronoun, "either ... or" as a coordination
        ("Which one is faster, tabs or spaces?", "Which is faster, tabs or spaces?", None),
        ("Should I pick either vim or emacs?", "Should I pick vim or emacs, all things equal?",
         None),
    ],
)  # fmt: skip
def test_guard_quantifiers(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


def test_guard_case_order_and_compounds_spare_paraphrases() -> None:
    # a name's spellings are not unit symbols; two-letter words still are (Ms/ms, Go/go)
    assert near_miss("How do I quit Vim?", "How do I quit vim?") is None
    assert near_miss("Open a pull request on Github", "Open a pull request on GitHub") is None
    assert near_miss("Is 5 MBps fast?", "Is 5 Mbps fast?") == "case"
    assert near_miss("Send it to Ms Smith", "Send it to ms Smith") == "case"
    # "please" and greetings go anywhere; "X and Y" is "Y and X"; other orders still count
    assert near_miss("Please sort this list.", "Sort this list please.") is None
    assert (
        near_miss(
            "What is the difference between TCP and UDP?",
            "What is the difference between UDP and TCP?",
        )
        is None
    )
    assert near_miss("Is a rectangle a square?", "Is a square a rectangle?") == "order"
    # a word written as two is the same word
    assert near_miss("Convert text to lowercase", "Convert text to lower case") is None
    assert near_miss("Is it open on weekdays?", "Is it open on weekends?") == "sibling"


def test_exact_case_alias_forms() -> None:
    table = parse("macOS | Mac | =mac\n")
    assert table.canonical("a mac and a Mac") == "a macOS and a macOS"
    assert table.canonical("my MAC address") == "my MAC address"
    assert shipped().canonical("a screenshot on a mac") == "a screenshot on a macOS"
    assert shipped().canonical("What is the MAC address?") == "What is the MAC address?"
    assert near_miss("Take a screenshot on a mac", "Take a screenshot on a Mac") is None
    for cached, new in (
        ("What is a good ROI?", "What is a good return on investment?"),
        ("What is today's date?", "What is the current date?"),
    ):
        assert near_miss(new, cached) is None


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("What is an API?", "Hi! What is an API?"),
        ("How do vaccines work?", "Hey, how do vaccines work? Thanks!"),
    ],
)
def test_greetings_and_thanks_are_filler_for_the_verifier(cached: str, new: str) -> None:
    model = OnnxMiniLM()
    a, b = model.embed_one(cached).tokens, model.embed_one(new).tokens
    assert a is not None and b is not None
    assert verify(b, a, model.vocabulary()) is None
