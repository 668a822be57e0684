"""Issue 12, v5: the shipped alias table (guard and verifier), the guard's question-kind,
role-swap and moved-phrase rules, and plural protected terms. Pure core, except the
verifier test, which needs the embedding model's token vectors."""

from __future__ import annotations

import pytest

from trioproxy.cache.aliases import embedding_text, parse, shipped
from trioproxy.cache.embedder import OnnxMiniLM, blingfire_pieces
from trioproxy.cache.guard import near_miss
from trioproxy.cache.verifier import verify
from trioproxy.cache.vocabulary import build_vocabulary


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        (
            "What is the difference between JS and TS?",
            "What is the difference between JavaScript and TypeScript?",
        ),
        ("How do I split a string in Go?", "How do I split a string in Golang?"),
        ("Can you explain what k8s is?", "Can you explain what Kubernetes is?"),
        ("When did WWII end?", "When did World War Two end?"),
        ("How do I back up a Postgres database?", "How do I back up a PostgreSQL database?"),
    ],
)
def test_guard_accepts_alias_paraphrases(cached: str, new: str) -> None:
    assert near_miss(new, cached) is None
    assert near_miss(cached, new) is None


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("How do I sort an array in Java?", "How do I sort an array in JavaScript?", "term"),
        ("What does 300 mm mean on this map?", "What does 300 Mm mean on this map?", "case"),
        # "Go" is the language only as typed: the verb "go" is no alias of "Golang".
        (
            "How do I go back to the previous commit?",
            "How do I return to the previous commit in Go?",
            "case",
        ),
    ],
)
def test_aliases_do_not_join_different_things(cached: str, new: str, rule: str) -> None:
    assert near_miss(new, cached) == rule


def test_alias_table_matching() -> None:
    table = parse("# comment\nGolang | golang | Go\nKubernetes | kubernetes | k8s\nnope\n")
    assert table.groups == (("Golang", "golang", "Go"), ("Kubernetes", "kubernetes", "k8s"))
    assert (
        table.canonical("go GOLANG in Go, K8S and k8s")
        == "go Golang in Golang, Kubernetes and Kubernetes"
    )
    assert table.canonical("Go-kart and k8s_ctl") == "Go-kart and k8s_ctl"  # whole words only
    assert table.covered(frozenset({"k8s", "pods"}), frozenset({"kubernetes", "pods"})) == {"k8s"}
    assert table.covered(frozenset({"k8s"}), frozenset({"k8s"})) == frozenset()
    assert table.covered(frozenset({"java"}), frozenset({"golang"})) == frozenset()


def test_an_alias_only_in_its_context() -> None:
    """A word that is an alias in some places only: "brew" is Homebrew before its commands
    and after "with", not in "cold brew coffee" (it was rewritten there too)."""
    table = parse("Homebrew | homebrew | [with via] brew | brew [install upgrade]\n")
    assert (
        table.canonical("brew install wget; BREW Upgrade")
        == "Homebrew install wget; Homebrew Upgrade"
    )
    assert (
        table.canonical("installed with brew, or Via brew")
        == "installed with Homebrew, or Via Homebrew"
    )
    for text in ("cold brew coffee", "brew green tea", "forwith brew", "brew installer", "brew"):
        assert table.canonical(text) == text
    assert table.covered(frozenset({"brew"}), frozenset({"homebrew"})) == {"brew"}
    with pytest.raises(ValueError):
        parse("Homebrew | [with] brew [install]\n")
    shipped_table = shipped()
    assert embedding_text("How do I make cold brew coffee?") == "How do I make cold brew coffee?"
    assert shipped_table.canonical("brew install node") == "Homebrew install node"
    assert shipped_table.canonical("a package installed with brew") == (
        "a package installed with Homebrew"
    )


def test_the_shipped_table_loads_and_the_cache_embeds_canonical_text() -> None:
    assert len(shipped().groups) >= 20
    assert embedding_text("Deploy to k8s with JS") == "Deploy to Kubernetes with JavaScript"


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        ("Why did the Titanic sink?", "When did the Titanic sink?", "question"),
        ("Where does Redis keep its data?", "How does Redis keep its data?", "question"),
        ("Who designed the Eiffel Tower?", "Why was the Eiffel Tower designed?", "question"),
        # documented equivalences: "how do I"/"how can I", "when"/"in what year", a measure
        ("How do I reset my router?", "How can I reset my router?", None),
        ("When did the Berlin Wall fall?", "In what year did the Berlin Wall fall?", None),
        (
            "How long does it take to boil an egg?",
            "How much time does it take to boil an egg?",
            None,
        ),
        (
            "How do I check disk usage on Linux?",
            "How can I see how much disk space is used on Linux?",
            None,
        ),
        # "when" as a conjunction asks nothing
        (
            "The app crashes when I open it. How do I fix it?",
            "How do I fix an app that crashes every time I open it?",
            None,
        ),
    ],
)
def test_guard_question_kinds(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule


@pytest.mark.parametrize(
    ("cached", "new", "rule"),
    [
        (
            "Can the parent process kill a child process in Linux?",
            "Can a child process kill the parent process on Linux?",
            "swap",
        ),
        (
            "Should the landlord refund the tenant for the repairs?",
            "Should a tenant refund the landlord for repairs?",
            "swap",
        ),
        # the passive voice and a rewrite that only reorders a few words are not swaps
        (
            "Does the compiler optimize the loop body in release builds?",
            "Is the loop body optimized by the compiler in release builds?",
            None,
        ),
        (
            "How do I check which version of Node is installed?",
            "What's the command to see my installed Node.js version?",
            None,
        ),
    ],
)
def test_guard_role_swap(cached: str, new: str, rule: str | None) -> None:
    assert near_miss(new, cached) == rule


def test_guard_moved_phrase_and_plural_terms() -> None:
    sea = (
        "What is the boiling point of water at sea level?",
        "At sea level, what is the boiling point of water?",
    )
    assert near_miss(*sea) is None
    assert near_miss("Is a rectangle a square?", "Is a square a rectangle?") == "order"
    assert near_miss("Is your shop open on Sunday?", "Is your shop open on Sundays?") is None


def test_verifier_counts_an_alias_as_a_counterpart() -> None:
    model = OnnxMiniLM()
    a = model.embed_one("Can you explain what k8s is?").tokens
    b = model.embed_one("Can you explain what Kubernetes is?").tokens
    assert a is not None and b is not None
    assert verify(a, b, model.vocabulary()) is None
    bare = build_vocabulary(model.tokenize, blingfire_pieces(), aliases=parse(""))
    assert verify(a, b, bare) is not None
