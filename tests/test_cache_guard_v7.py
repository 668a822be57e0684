"""Issue 12, v7: the guard's rules that spare paraphrases (a choice named in another order,
an adverb moved) and catch near-misses (a role swap across a clause, show/hide), each with
pairs it must still refuse. Pure core, except the verifier test, which needs the embedding model's token vectors."""

from __future__ import annotations

import pytest

from trioproxy.cache.aliases import embedding_text
from trioproxy.cache.embedder import OnnxMiniLM
from trioproxy.cache.guard import near_miss
from trioproxy.cache.morph import Relation, relation, typo
from trioproxy.cache.preamble import without_filler
from trioproxy.cache.prompt_features import features
from trioproxy.cache.verifier import verify


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # the two sides of an "or" trade places: the same choice
        ("Is a tomato a fruit or a vegetable?", "Is a tomato a vegetable or a fruit?", None),
        ("Should I rent or buy a house?", "Should I buy or rent a house?", None),
        ("who won the 2018 world cup final, France or Croatia?",
         "who won the 2018 world cup final, Croatia or France?", None),
        # ... and of an "and", also with "what's" on one side only
        ("What's the difference between a Roth IRA and a traditional IRA?",
         "What is the difference between a traditional IRA and a Roth IRA?", None),
        # "exactly" goes anywhere
        ("What exactly is a black hole?", "What is a black hole, exactly?", None),
        # other orders still count: direction, roles, "is X a Y"
        ("Convert USD to EUR or GBP", "Convert EUR or GBP to USD", "direction"),
        ("Is a rectangle a square?", "Is a square a rectangle?", "order"),
        ("Does the dog chase the cat or the other way round? The dog chases the cat.",
         "Does the dog chase the cat or the other way round? The cat chases the dog.", "order"),
        ("Does a parent process wait for a child process or exit?",
         "Does a child process wait for its parent process or exit?", "swap"),
    ],
)  # fmt: skip
def test_guard_coordination_and_moved_adverbs(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # a distance is the same either way
        ("What is the distance from the Earth to the Moon?", "How far is the Moon from the Earth?",
         None),
        ("What is the distance from Earth to Mars?", "How far is Mars from Earth?", None),
        # ... a trip, a conversion or a transfer is not
        ("How long is the flight from London to Paris?",
         "How long is the flight from Paris to London?", "direction"),
        ("How far can I drive from Boston to Denver on one tank?",
         "How long does it take to drive from Denver to Boston?", "direction"),
        ("Convert 10 miles to km", "Convert 10 km to miles", "direction"),
        # "except" after "try" is Python's keyword, not a negation
        ("How do I handle exceptions in Python?", "Error handling in Python: how does try/except work?",
         None),
        ("List every country except France.", "List every country and France.", "negation"),
    ],
)  # fmt: skip
def test_guard_symmetric_distance_and_try_except(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # two roles traded across a clause ("when", "if", "because", "while")
        ("What does a lion do when hyenas steal its kill?",
         "What do hyenas do when a lion steals their kill?", "swap"),
        ("How should a tenant respond when a landlord raises the rent?",
         "How should a landlord respond when the tenant raises the rent?", "swap"),
        # ... a clause moved (it may open the prompt), or one role named alike, is not a trade
        ("What does a lion do when hyenas steal its kill?",
         "When hyenas steal its kill, what does a lion do?", None),
        ("Why does my laptop fan get loud when I open Chrome?",
         "Why is my laptop fan so loud when Chrome is open?", None),
        # showing is not hiding
        ("How do I show hidden files in Finder on a Mac?", "How do I hide files in Finder on a Mac?",
         "antonym"),
        ("How do I show the toolbar in Word?", "How do I hide the toolbar in Word?", "antonym"),
        ("Show me how to hide a file on Linux.", "How do I hide a file on Linux?", None),
    ],
)  # fmt: skip
def test_guard_clause_role_swap_and_show_hide(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("a", "b", "rel"),
    [
        ("stop", "stopping", Relation.LEMMA),
        ("stop", "stopped", Relation.LEMMA),
        ("forgot", "forgotten", Relation.LEMMA),
        ("plan", "planned", Relation.LEMMA),
        # a doubled letter before another ending, or no doubling, is not an inflection
        ("list", "listen", None),
        ("week", "weekend", Relation.SIBLING),
        ("java", "javascript", Relation.SIBLING),
    ],
)
def test_morph_doubled_consonant_is_an_inflection(a: str, b: str, rel: Relation | None) -> None:
    assert relation(a, b) is rel
    assert relation(b, a) is rel


@pytest.mark.parametrize(
    ("cached", "new", "aligned"),
    [
        # "the command to X", "tips for X" ask how to X
        ("How do I clear the npm cache?", "Command for clearing npm's cache", True),
        ("What does the git stash command do?", "What does git stash do?", True),
        ("How do I write a cover letter?", "any tips for writing a cover letter", True),
        # "the phrase X" is X; "you guys" is "you"
        ("What is the meaning of 'carpe diem'?", "What does the phrase carpe diem mean?", True),
        ("Do you ship to Canada?", "Do you guys ship to Canada?", True),
        # "short for" / "an abbreviation of" = "stand for"; "the acronym X" is X
        ("What does CPU stand for?", "What is CPU short for?", True),
        ("What does the acronym RAM stand for?", "What is RAM an abbreviation of?", True),
        # ... the content words still count
        ("How do I clear the npm cache?", "Command for clearing the yarn cache", False),
        ("Do you ship to Canada?", "Do you guys ship to Mexico?", False),
    ],
)
def test_framing_words_are_filler_for_the_verifier(cached: str, new: str, aligned: bool) -> None:
    model = OnnxMiniLM()
    a, b = model.embed_one(cached).tokens, model.embed_one(new).tokens
    assert a is not None and b is not None
    assert (verify(b, a, model.vocabulary()) is None) is aligned


@pytest.mark.parametrize(
    ("typed", "plain"),
    [
        ("Hey, quick question: how many ounces are in a cup?", "how many ounces are in a cup?"),
        ("Quick question - how do I boil an egg?", "how do I boil an egg?"),
        ("I'm new to this, how do I start a React project?", "how do I start a React project?"),
        ("I was told to ask here: what's the default port for Redis?",
         "what's the default port for Redis?"),
        ("How do I reverse a list in Python? Thanks in advance.",
         "How do I reverse a list in Python?"),
        # context is not filler, nor a phrase inside the question
        ("I'm on Windows, how do I open a terminal?", "I'm on Windows, how do I open a terminal?"),
        ("I'm new to Berlin, where should I eat?", "I'm new to Berlin, where should I eat?"),
        ("Is this a quick question: yes or no?", "Is this a quick question: yes or no?"),
        ("Thanks", "Thanks"),
    ],
)  # fmt: skip
def test_filler_preamble_and_sign_off(typed: str, plain: str) -> None:
    assert without_filler(typed) == plain


def test_filler_preamble_is_off_before_embedding_and_the_guard() -> None:
    assert embedding_text("Quick question: what is k8s?") == "what is Kubernetes?"
    assert features("I'm new to this, how do I read an old Excel file?").seq[:3] == (
        "how", "do", "i",
    )  # fmt: skip
    assert near_miss("Quick question: how do I read an old Excel file?",
                     "Quick question: how do I read a new Excel file?") == "antonym"  # fmt: skip


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("How do I change my Wi-Fi password?", "How can I change my wifi password?"),
        ("How do I sort a dictionary by value in Python?", "Python: sort a dict by value"),
        ("How do I add a foreign key in MySQL?", "How do I add a FK in MySQL?"),
        ("What is the Krebs cycle?", "What is the citric acid cycle?"),
        ("What is the population of New York City?", "What is the population of NYC?"),
        ("How many tablespoons are in a cup?", "How many tbsps are in a cup?"),
        (
            "How much water should an adult drink per day?",
            "How much water should an adult drink each day?",
        ),
        ("What is the capital of Canada?", "What's the capital city of Canada?"),
    ],
)
def test_v7_aliases(cached: str, new: str) -> None:
    assert near_miss(new, cached) is None
    assert near_miss(cached, new) is None


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("statement", "statment", True),
        ("kubernetes", "kubernets", True),
        ("python", "pyhton", True),
        ("sweden", "sweeden", True),
        # one letter for another, at an end, short words, digits: other names
        ("ireland", "iceland", False),
        ("colombia", "columbia", False),
        ("dominica", "dominican", False),
        ("iran", "iraq", False),
        ("python3", "python2", False),
        ("austria", "australia", False),
    ],
)
def test_morph_typo(a: str, b: str, same: bool) -> None:
    assert typo(a, b) is same
    assert typo(b, a) is same


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # a protected term or a word typed with one letter dropped, added or swapped
        ("How do I scale a deployment in Kubernetes?", "How do I scale a deployment in Kubernets?",
         None),
        ("How do I write a good thesis statement?", "How do I write a good thesis statment?", None),
        ("How do I install Python on Windows?", "How do I install Pyhton on Windows?", None),
        # ... another name, a unit's case, a code, a number still differ
        ("What is the capital of Ireland?", "What is the capital of Iceland?", "term"),
        ("What is the capital of Dominica?", "What is the capital of the Dominican Republic?",
         "term"),
        ("Is 5 MB/s fast?", "Is 5 Mb/s fast?", "case"),
        ("Is Python 3.11 faster than 3.10?", "Is Python 3.11 faster than 3.1?", "number"),
    ],
)  # fmt: skip
def test_guard_forgives_one_typo_in_long_words(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # "where can I find / see / check X" asks how to find it
        ("How do I find my IP address?", "Where can I see my IP address?", None),
        ("How do I check the weather forecast?", "Where can I find the weather forecast?", None),
        # ... a place to go or a reason is still another question
        ("How do I renew my US passport?", "Where can I renew my US passport?", "question"),
        ("Where do I find my AWS access key ID?", "Why is my AWS access key ID rejected?",
         "question"),
        ("Where can I find my order number?", "When can I find my order number?", "question"),
        # "what could be causing X" asks why
        ("Why is my laptop so slow?", "What could be causing my slow laptop?", None),
        ("Why is my laptop so slow?", "What could be slowing down my laptop?", "question"),
        # ELI5 = explain in simple terms
        ("Explain the theory of relativity in simple terms", "ELI5 the theory of relativity", None),
        ("Explain like I'm five: how do vaccines work?", "ELI5: how do vaccines work?", None),
    ],
)  # fmt: skip
def test_guard_where_to_find_causing_and_eli5(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # a quoted string of words is the same words, its punctuation aside
        ("How do I print hello world in Rust?", 'How do I print "Hello, world!" in Rust?', None),
        # ... other words, or code, still differ
        ("How do I print hello world in Rust?", 'How do I print "Hello, Rust!" in Rust?', "term"),
        ("What does 'ls -la' do?", "What does ls la do?", "term"),
        ("Split the string on 'a,b'", "Split the string on ab", "term"),
    ],
)  # fmt: skip
def test_guard_quoted_prose_without_punctuation(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("How do I pass arguments to a Python script?", "How do I pass args to a Python script?",
         None),
        ("Where is the nginx configuration file?", "Where is the nginx config file?", None),
        ("How do I list all repositories of a user?", "How do I list all repos of a user?", None),
        ("Can you fix this please?", "Can you fix this pls?", None),
        # "w/o" is a negation, "w/" is not
        ("How do I cook rice w/o a rice cooker?", "How do I cook rice without a rice cooker?",
         None),
        ("How do I cook rice with a rice cooker?", "How do I cook rice w/o a rice cooker?",
         "negation"),
        ("How do I cook rice w/ a rice cooker?", "How do I cook rice with a rice cooker?", None),
    ],
)  # fmt: skip
def test_v7_abbreviations(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        # "how to", "need to", "used to" open an infinitive, not a direction
        ("How do I convert a string to an integer in Java?",
         "Java: how to parse a String into an int?", None),
        ("The function to apply data augmentations to a dataset is `set_transform()`.",
         "The `set_transform()` is used to apply data augmentations to a dataset.", None),
        # ... the direction after it still counts
        ("How to convert USD to EUR?", "How to convert EUR to USD?", "direction"),
        ("I need to send money from Canada to Mexico", "I need to send money from Mexico to Canada",
         "direction"),
    ],
)  # fmt: skip
def test_guard_infinitive_to_is_not_a_direction(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


def test_v7_aliases_in_the_embedded_text() -> None:
    assert embedding_text("Drink water each day") == "Drink water per day"
    assert embedding_text("The capital city of Peru") == "The capital of Peru"
    assert embedding_text("What is CPU short for?") == "What is CPU stand for?"
    # the abbreviation *for* a word asks the other way: not in the group
    assert embedding_text("What is the abbreviation for kilogram?") == (
        "What is the abbreviation for kilogram?"
    )
    # a number of days is not a rate
    assert near_miss("How much water should I drink in three days?",
                     "How much water should I drink each day?") == "number"  # fmt: skip
