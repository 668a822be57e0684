"""Word relations from WordNet 3.0 for the pair verifier: are two words near in meaning?

The embedding model's contextual token vectors cannot tell "delete" from "remove" better than
"next" from "previous". WordNet can: :meth:`Thesaurus.related` is True when some of the two
words' most frequent senses (``thesaurus.txt``, written by ``loadtest/build_thesaurus.py``)
are the same synset ("make"/"create"), or one is a direct hypernym ("author"/"wrote" ->
"write", "remove"/"delete") or similar-to (adjectives) of the other, and the two are not
:meth:`~Thesaurus.opposed`: antonyms in any kept sense ("end"/"beginning") or sister terms in
their first senses ("mother"/"father", "hour"/"minute") name different things. A shared
lemma alone ("quit"/"exit" through "leave") is not enough: it also joins "mean"/"median" and
"small"/"short". Inflected forms are reduced first (WordNet's irregular forms and its
detachment rules: "wrote" -> "write", "deleted" -> "delete").

The data: Princeton WordNet 3.0 (licence notice at the head of ``thesaurus.txt``). Pure:
strings in, a verdict out; the file is read once, at first use.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

_DETACH = (
    ("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
    ("men", "man"), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""),
    ("ing", "e"), ("ing", ""), ("er", ""), ("est", ""), ("er", "e"), ("est", "e"), ("ly", ""),
)  # fmt: skip
"""WordNet's morphy detachment rules (nouns, verbs, adjectives) and "-ly" adverbs."""
MEMO = 65_536
"""Words whose synsets are remembered (a bound: prompts bring arbitrary words)."""


@dataclass(frozen=True, slots=True)
class Thesaurus:
    senses: dict[str, tuple[int, ...]]
    """word -> its most frequent senses' synset numbers, most frequent first."""
    lemmas: dict[int, frozenset[str]]
    links: dict[str, dict[int, frozenset[int]]]
    """kind ("H" hypernym, "L" similar-to, "A" antonym) -> synset -> synsets."""
    forms: dict[str, frozenset[str]]
    """irregular form -> its base words."""
    memo: dict[str, frozenset[int]] = field(default_factory=dict, compare=False, repr=False)
    """word -> :meth:`synsets`, up to ``MEMO`` words."""

    @classmethod
    def parse(cls, text: str) -> Thesaurus:
        senses: dict[str, tuple[int, ...]] = {}
        lemmas: dict[int, frozenset[str]] = {}
        links: dict[str, dict[int, frozenset[int]]] = {"H": {}, "L": {}, "A": {}}
        forms: dict[str, set[str]] = defaultdict(set)
        for line in text.splitlines():
            kind, _, rest = line.partition(" ")
            f = rest.split()
            if kind == "W":
                senses[f[0]] = tuple(int(x) for x in f[1:])
            elif kind == "S":
                lemmas[int(f[0])] = frozenset(f[1:])
            elif kind in links:
                links[kind][int(f[0])] = frozenset(int(x) for x in f[1:])
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
        found = self.memo.get(word)
        if found is None:
            found = frozenset(s for b in self.bases(word) for s in self.senses[b])
            if len(self.memo) < MEMO:
                self.memo[word] = found
        return found

    def _step(self, kind: str, sa: frozenset[int], sb: frozenset[int]) -> bool:
        table = self.links[kind]
        return any(table.get(s, frozenset()) & sb for s in sa) or any(
            table.get(s, frozenset()) & sa for s in sb
        )

    def antonyms(self, a: str, b: str) -> bool:
        """WordNet antonyms in any kept sense ("start"/"end", "inclusive"/"exclusive")."""
        return self._step("A", self.synsets(a), self.synsets(b))

    def opposed(self, a: str, b: str) -> bool:
        """Antonyms in any kept sense, or sister terms in their first senses (a shared
        hypernym: "mother"/"father", "hour"/"minute"): different things, whatever else
        links them."""
        if self.antonyms(a, b):
            return True
        hyper = self.links["H"]
        firsts_a = {self.senses[w][0] for w in self.bases(a)}
        firsts_b = {self.senses[w][0] for w in self.bases(b)}
        return any(
            x != y and hyper.get(x, frozenset()) & hyper.get(y, frozenset())
            for x in firsts_a
            for y in firsts_b
        )

    def related(self, a: str, b: str) -> bool:
        """``a`` and ``b`` (lower case) share a frequent sense, a hypernym or similar-to step
        or a lemma, and are not :meth:`opposed`."""
        sa, sb = self.synsets(a), self.synsets(b)
        if not sa or not sb or self.opposed(a, b):
            return False
        return bool(sa & sb) or self._step("H", sa, sb) or self._step("L", sa, sb)

    def inflections(self, word: str) -> frozenset[str]:
        """Forms of ``word`` that reduce to it: "-s", "-es", "-ed", "-ing" (with a doubled
        consonant or a dropped "e") and WordNet's irregular forms ("make" -> "made"); never a word
        WordNet lists as a word of its own ("see" -> not "seed")."""
        stems = [word, word[:-1]] if word.endswith("e") else [word, word + word[-1:]]
        out = {s + t for s in stems for t in ("s", "es", "ed", "d", "ing")}
        out |= {form for form, bases in self.forms.items() if word in bases}
        return frozenset(
            f
            for f in out
            if f != word
            and word in self.bases(f)
            and (f not in self.senses or word in self.forms.get(f, ()))
        )


@lru_cache(maxsize=1)
def wordnet() -> Thesaurus:
    """The shipped thesaurus (parsed once; ~0.5 s)."""
    text = resources.files("trioproxy.cache").joinpath("thesaurus.txt").read_text("utf-8")
    return Thesaurus.parse(text)


__all__ = ["Thesaurus", "wordnet"]
