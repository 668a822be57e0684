"""Word relations from WordNet 3.0 for the pair verifier: are two words near in meaning?

The embedding model's contextual token vectors cannot tell "delete" from "remove" better than
"next" from "previous". WordNet can: :func:`Thesaurus.related` is True when some of the two
words' most frequent senses (``thesaurus.txt``, written by ``loadtest/build_thesaurus.py``)
are the same synset ("make"/"create"), one is a direct hypernym or similar-to of the other
("author"/"writer" -> "write", "remove"/"delete"), or their synsets share a lemma
("quit"/"exit" through "leave"). Antonyms and sister terms ("end"/"start", "tagalog"/
"cebuano") are none of these. Inflected forms are reduced first (WordNet's irregular forms
and its detachment rules: "wrote" -> "write", "deleted" -> "delete").

The data: Princeton WordNet 3.0 (licence notice at the head of ``thesaurus.txt``). Pure:
strings in, a verdict out; the file is read once, at first use.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

_DETACH = (
    ("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
    ("men", "man"), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""),
    ("ing", "e"), ("ing", ""), ("er", ""), ("est", ""), ("er", "e"), ("est", "e"), ("ly", ""),
)  # fmt: skip
"""WordNet's morphy detachment rules (nouns, verbs, adjectives) and "-ly" adverbs."""


@dataclass(frozen=True, slots=True)
class Thesaurus:
    senses: dict[str, tuple[int, ...]]
    """word -> its most frequent senses' synset numbers."""
    lemmas: dict[int, frozenset[str]]
    links: dict[int, frozenset[int]]
    """synset -> its hypernyms and similar-to synsets."""
    forms: dict[str, frozenset[str]]
    """irregular form -> its base words."""

    @classmethod
    def parse(cls, text: str) -> Thesaurus:
        senses: dict[str, tuple[int, ...]] = {}
        lemmas: dict[int, frozenset[str]] = {}
        links: dict[int, frozenset[int]] = {}
        forms: dict[str, set[str]] = defaultdict(set)
        for line in text.splitlines():
            kind, _, rest = line.partition(" ")
            f = rest.split()
            if kind == "W":
                senses[f[0]] = tuple(int(x) for x in f[1:])
            elif kind == "S":
                lemmas[int(f[0])] = frozenset(f[1:])
            elif kind == "H":
                links[int(f[0])] = frozenset(int(x) for x in f[1:])
            elif kind == "X":
                forms[f[0]].add(f[1])
        return cls(senses, lemmas, links, {k: frozenset(v) for k, v in forms.items()})

    def bases(self, word: str) -> frozenset[str]:
        """The WordNet words ``word`` may be a form of (itself included when listed)."""
        out = {word} if word in self.senses else set()
        out |= {b for b in self.forms.get(word, ()) if b in self.senses}
        for tail, repl in _DETACH:
            if word.endswith(tail) and len(word) > len(tail) + 1:
                base = word[: -len(tail)] + repl
                if base in self.senses:
                    out.add(base)
        return frozenset(out)

    def synsets(self, word: str) -> frozenset[int]:
        return frozenset(s for b in self.bases(word) for s in self.senses[b])

    def related(self, a: str, b: str) -> bool:
        """``a`` and ``b`` (lower case) share a frequent sense, a hypernym step or a lemma."""
        sa, sb = self.synsets(a), self.synsets(b)
        if not sa or not sb:
            return False
        if sa & sb:
            return True
        if any(self.links.get(s, frozenset()) & sb for s in sa) or any(
            self.links.get(s, frozenset()) & sa for s in sb
        ):
            return True
        la = {w for s in sa for w in self.lemmas.get(s, ())}
        return any(w in la for s in sb for w in self.lemmas.get(s, ()))


@lru_cache(maxsize=1)
def wordnet() -> Thesaurus:
    """The shipped thesaurus (parsed once; ~0.5 s)."""
    text = resources.files("trioproxy.cache").joinpath("thesaurus.txt").read_text("utf-8")
    return Thesaurus.parse(text)


__all__ = ["Thesaurus", "wordnet"]
