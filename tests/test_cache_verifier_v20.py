"""Issue 12, after held-out v20 (every set up to v20 read): lead-ins and a thanks in advance
are filler, the alignment passes over "using", "/", a compound written joined or split, "one"
against an article and the words of a comparison; an all-lower-case prompt takes the other's
capitals; the asker done to on one side and doing on the other is a role swap; "set" /
"remove" are opposites; clipped words are aliases. Examples written here, not taken from the
sets; each rule has a trap it must keep refusing."""

from __future__ import annotations

import pytest

from trioproxy.cache.aliases import shipped
from trioproxy.cache.embedder import OnnxMiniLM
from trioproxy.cache.guard import near_miss, recased
from trioproxy.cache.preamble import without_filler
from trioproxy.cache.verifier import compounds, lead_in, verify
from trioproxy.cache.word_order import asker_flipped


@pytest.fixture(scope="module")
def minilm() -> OnnxMiniLM:
    return OnnxMiniLM()


def _verify(minilm: OnnxMiniLM, cached: str, new: str) -> tuple[int | None, int | None]:
    a, b = minilm.embed_one(cached), minilm.embed_one(new)
    assert a.tokens is not None and b.tokens is not None
    vocab = minilm.vocabulary()
    return verify(b.tokens, a.tokens, vocab), verify(a.tokens, b.tokens, vocab)


@pytest.mark.parametrize(
    ("typed", "plain"),
    [
        ("Thanks in advance - how do I prune a rose bush?", "how do I prune a rose bush?"),
        ("Thank you in advance: what is a monad?", "what is a monad?"),
        ("I can't remember, what is the capital of Peru?", "what is the capital of Peru?"),
        ("So I've been wondering for a while now, why do cats purr?", "why do cats purr?"),
        # context, not a lead-in: it stays
        ("I can't remember my PIN, how do I reset it?", "I can't remember my PIN, how do I reset it?"),
        ("Thanks for the tip about rose bushes", "Thanks for the tip about rose bushes"),
    ],
)  # fmt: skip
def test_lead_in_phrases_are_taken_off(typed: str, plain: str) -> None:
    assert without_filler(typed) == plain


def _texts(minilm: OnnxMiniLM, text: str, at: frozenset[int]) -> list[str]:
    vocab = minilm.vocabulary()
    ids = minilm.ids(text)[1:-1]
    return [vocab.text(ids[k]) for k in sorted(at)]


def test_a_lead_in_verb_is_filler_only_before_the_question(minilm: OnnxMiniLM) -> None:
    vocab = minilm.vocabulary()

    def lead(text: str) -> list[str]:
        return _texts(minilm, text, lead_in(minilm.ids(text)[1:-1], vocab))

    assert lead("Help me understand how a bloom filter works") == ["understand"]
    assert lead("I'd appreciate it if you could explain what a monad is") == ["appreciate"]
    assert lead("I want to learn how to knit a scarf") == ["learn"]
    assert lead("How do crows understand traffic lights?") == []  # content there
    assert lead("I understand monads") == []  # no question follows
    assert _verify(
        minilm, "What is a bloom filter?", "Help me understand what a bloom filter is."
    ) == (
        None,
        None,
    )
    assert _verify(
        minilm, "How do crows see traffic lights?", "How do crows understand traffic lights?"
    )[0]


def test_a_compound_written_joined_or_split_is_one_word(minilm: OnnxMiniLM) -> None:
    vocab = minilm.vocabulary()
    joined, split = "make a text file uppercase", "make a text file upper case"
    a, b = minilm.ids(joined)[1:-1], minilm.ids(split)[1:-1]
    assert _texts(minilm, joined, compounds(a, b, vocab)) == ["upper", "##case"] or _texts(
        minilm, joined, compounds(a, b, vocab)
    ) == ["upper", "case"]
    assert _texts(minilm, split, compounds(b, a, vocab)) == ["upper", "case"]
    # two words the other does not join are no compound
    assert compounds(minilm.ids("set the upper bound")[1:-1], a, vocab) == frozenset()


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("How many grams are in a cup of rice?", "How many grams are in one cup of rice?"),
        (
            "How do I resize an image with ImageMagick?",
            "How do I resize an image using ImageMagick?",
        ),
        ("how does try catch work in java", "how does try/catch work in java"),
        ("Cats or dogs for a small flat?", "cats vs dogs for a small flat"),
        ("Rust vs Go for a CLI tool", "Rust vs Go for a CLI tool: the differences"),
    ],
)
def test_the_alignment_passes_over_loose_words(minilm: OnnxMiniLM, cached: str, new: str) -> None:
    assert _verify(minilm, cached, new) == (None, None)


def test_loose_words_keep_their_traps(minilm: OnnxMiniLM) -> None:
    # "one" is an article only where the other has one: a count against "two" still differs
    assert _verify(
        minilm, "How many grams are in two cups of rice?", "How many grams are in one cup of rice?"
    )[0]
    # a comparison word needs a comparison on the other side
    assert _verify(minilm, "Rust for a CLI tool", "Rust vs Go for a CLI tool")[0]


def test_an_all_lower_case_prompt_takes_the_other_prompts_capitals() -> None:
    assert recased("how do I build a node app", "Build a Node app") == "how do I build a Node app"
    assert recased("Build a Node app", "how do I build a node app") == "Build a Node app"
    # a capital at a sentence start says nothing; a word capitalised two ways stays
    assert recased("what is go", "Go is what? Go or go") == "what is go"
    assert near_miss("how do I install node on debian", "How do I install Node on Debian?") is None
    assert near_miss("how do I write a loop in go", "How do I write a loop in Go?") is None
    # with capitals on both sides the case still counts
    assert near_miss("How many Mb in a GB?", "How many MB in a GB?") == "case"


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("what do I do when my neighbour owes me money", "what do I do when I owe my neighbour money",
         "swap"),
        ("my landlord emailed me about the rent", "I emailed my landlord about the rent", "swap"),
        ("open a folder someone shared with me on Dropbox", "how do I share a folder on Dropbox", "swap"),
        # the asker does it on both sides: a paraphrase
        ("how do I email my landlord about the rent", "I want to email my landlord about rent", None),
        ("set a PIN on my SIM card", "remove the PIN from my SIM card", "antonym"),
    ],
)  # fmt: skip
def test_the_asker_done_to_or_doing_and_set_remove(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule
    assert near_miss(cached, new) == rule


def test_asker_flipped_reads_the_verb() -> None:
    a = tuple("my boss emailed me".split())
    b = tuple("i emailed my boss".split())
    assert asker_flipped(a, b, frozenset())
    assert not asker_flipped(a, tuple("my boss emailed me again".split()), frozenset())


def test_clipped_words_are_aliases() -> None:
    table = shipped()
    assert table.canonical("what's the diff between a list and a tuple") == (
        "what's the difference between a list and a tuple"
    )
    assert table.canonical("cast a str to an int") == "cast a str to an integer"
    assert (
        near_miss(
            "list vs tuple: what's the diff?", "What is the difference between list and tuple?"
        )
        is None
    )
