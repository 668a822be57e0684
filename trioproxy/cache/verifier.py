"""The pair verifier: does the cached prompt cover every content token of the new one?

A semantic hit in the band between a route's floor and ceiling of cosine similarity is
served only when the two prompts *align*: every content word piece of each prompt has a
counterpart in the other, judged on the embedding model's own contextual token vectors
(the ``last_hidden_state`` rows that the embedder computes anyway and mean-pools). A
counterpart is the same word piece; a piece of a word that is an inflected or derived form
of a word of the other prompt ("summarize"/"summary", :mod:`~trioproxy.cache.morph`); for a
word piece that is neither a number nor a short fragment, another piece whose token vector
has cosine >= ``align`` with it; or, for a word of three letters or more (or a two-word
collocation it is part of: "find out"), a word or collocation of the other prompt that
WordNet relates to it (a shared frequent sense or one hypernym / similar-to step, never
antonyms or sister terms: "delete"/"erase", "author"/"wrote", "find out"/"discover";
:mod:`~trioproxy.cache.thesaurus`) where the piece's token vector has cosine >=
``WORDNET_ALIGN`` with some piece of the other prompt (WordNet does not know which sense is
meant).

Near-misses change one slot ("this Friday" / "next Friday", "gpt-4o" / "gpt-4o-mini",
"6" / "6s", "... in place"): the changed piece has no close counterpart and the pair is
refused, whatever the sentence cosine. A paraphrase that only changes function words
("how do I" / "what is the way to") keeps every content piece. Rewrites with synonyms pass
as far as their token vectors agree or WordNet knows the synonym; a content word that only
one prompt has ("How many continents *exist*?") still refuses: that is the price of the goal
(false hits under 1 %), measured in ``loadtest/semantic_quality.py``.

Function words are not content (``FILLER_WORDS``, :mod:`~trioproxy.cache.vocabulary`): a small fixed list of articles,
pronouns, auxiliaries, greetings and thanks, and request verbs (``REQUEST_VERBS``, with their inflected forms:
"what makes", "shown"), and nouns that frame a request ("the way to", "the command for",
"tips for", "the phrase X", "the acronym X", "you guys"), i.e. words whose change does not change an answer. Words that do
(prepositions of direction and time, "this/next/last", quantifiers, negations) are
deliberately absent.

The alignment (:func:`loosely_unmatched`; where it refuses, the pair cross-encoder of
:mod:`~trioproxy.cache.cross_encoder` decides) also passes over: "using" and "/" (``LOOSE_WORDS``: "with", and what
a space also joins); a lead-in verb that only filler precedes and a question word or request
verb follows ("Help me *understand* what a mutex is", ``LEAD_IN_WORDS``); a word the other
prompt writes as two adjacent words, or two adjacent words it writes as one ("lowercase" /
"lower case"); "one" where the other prompt has "a" or "an"; a word of a comparison
("vs", "difference", ``COMPARING``) where the other prompt also compares or says "or"; and a
quantifier where the other prompt has another of its group ("each" / "every", "some" / "a
few": ``QUANTIFIER_GROUPS``); and a qualifier that the rest of the prompt already implies
(:func:`~trioproxy.cache.implied_qualifiers.implied`): "new" after a verb that brings something into being ("add a *new* column",
"generate a *new* key": ``CREATING``), "common", "typical" or "usual" after only filler
and before a plural ("what are *common* symptoms of X": a list of X's symptoms gives the
common ones; not "the common cold", "greatest common divisor", "common law"), "number"
between "count" and "of" ("count the *number* of rows": a count is a number), "file"
right after a file name with an extension ("requirements.txt *file*"), and "world" or
"earth" closing "in the world" / "on earth" in a "how many ... there" question (the count
of what exists is the world's: "How many oceans are there *in the world*?"; not "Is there
life on Earth?", not "the tallest building in the world"). A qualifier
that the other prompt replaces ("rare symptoms", "an old column") still refuses: the other
prompt's word has no counterpart. Pure: arrays in, a reason out.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from trioproxy.cache.band import DEFAULT_ALIGN
from trioproxy.cache.implied_qualifiers import implied
from trioproxy.cache.morph import MIN_STEM, Relation, relation
from trioproxy.cache.vocabulary import TokenView, Vocabulary, sequence, words

_ONE = "one"
_ONES = frozenset({_ONE, "1"})
_ARTICLES = frozenset({"a", "an"})
"""A singular "one" asks what an article asks ("How many teaspoons are in one tablespoon?" /
"... in a tablespoon?"): it counts as present where the other prompt has "a" or "an" (the
guard's quantifier and number rules judge "one" against "all", "two", ...); so does a digit
"1" right before a word of letters ("walk 1 mile" / "walk a mile"; not "step 1")."""


def _one_before_word(seq: list[str], k: int) -> bool:
    """The piece at ``k`` is "one", or a "1" that a word of letters follows."""
    if seq[k] == _ONE:
        return True
    if seq[k] != "1":
        return False
    nxt = next((w for w in seq[k + 1 :] if w != "1"), "")
    return nxt.isalpha()


COMPARING = frozenset(
    "vs versus difference differences diff differ differs compare comparison".split()
)
"""Words that set two things side by side: "X vs Y", "the difference between X and Y", "how
does X differ from Y" and "X or Y, which ...?" ask one question; one of them counts as
present where the other prompt has another or "or"."""
_CHOICE = frozenset({"or"})

QUANTIFIER_GROUPS = (frozenset({"each", "every", "all"}), frozenset({"some", "few", "several"}))
"""Quantifiers that ask about the same share of a thing ("each day" / "every day", "some
exercises" / "a few exercises"): one counts as present where the other prompt has another of
its group ("some" is filler already). Not "whole" / "entire" (one thing complete, not each of
many: the guard puts them with "all"), not "one", not "many"."""

WORDNET_ALIGN = 0.65
"""A WordNet counterpart counts only where the token vectors do not disagree: cosine >= this.
WordNet is blind to the sense in use ("heap"/"stack" are one synset, "memory"/"storage"
too; in "allocate memory on the heap" they are at 0.33-0.53); true synonyms in context sit
higher ("author"/"wrote" 0.79, "remove"/"delete" 0.80). Chosen on the tuning sets and the
v2 pairs (seen) and on hand-written risky pairs (``tests/test_cache_thesaurus.py``)."""


def _lemma_in(word: str, others: set[str]) -> bool:
    """``word`` is an inflected or derived form of one of ``others`` ("summary"/"summarize")."""
    return len(word) >= MIN_STEM and any(
        len(o) >= MIN_STEM and relation(word, o) is Relation.LEMMA for o in others
    )


def _related_in(word: str, others: set[str], vocab: Vocabulary) -> bool:
    """``word`` and a word of ``others`` are near in meaning (words of letters, >= 3 of them,
    or two such joined by "_"; never numbers, codes or two-letter words)."""
    if not _lettered(word):
        return False
    return any(o != word and _lettered(o) and vocab.related(word, o) for o in others)


def _lettered(term: str) -> bool:
    return len(term) >= 3 and all(len(w) >= 2 and w.isalpha() for w in term.split("_"))


def _plural(ids: list[int], k: int, vocab: Vocabulary) -> bool:
    """A trailing "s" piece after a word piece with no digit: a plural, not a model name."""
    return (
        0 < k and vocab.text(ids[k]) == "s" and not any(c.isdigit() for c in vocab.text(ids[k - 1]))
    )


def lexically_unmatched(
    new: TokenView, cached: TokenView, vocab: Vocabulary
) -> tuple[list[int], list[str], set[str]]:
    """Positions of the content pieces of ``new`` that ``cached`` has neither as the same
    piece nor as an inflected form of the same word (before token vectors and WordNet are
    asked; a word the other prompt names by an alias counts as present), with ``new``'s
    word at each position and ``cached``'s words ``new`` lacks."""
    present = set(cached.ids.tolist())
    ids = new.ids.tolist()
    todo = [
        k
        for k, t in enumerate(ids)
        if t not in present and t not in vocab.filler and not _plural(ids, k, vocab)
    ]
    if not todo:
        return [], [], set()
    mine = words(ids, vocab)
    all_theirs = frozenset(words(cached.ids.tolist(), vocab))
    theirs = set(all_theirs) - set(mine)
    aliased = vocab.aliases(frozenset(mine), all_theirs)
    todo = [k for k in todo if mine[k] not in aliased and not _lemma_in(mine[k], theirs)]
    return todo, mine, theirs


def loosely_unmatched(
    new: TokenView, cached: TokenView, vocab: Vocabulary
) -> tuple[list[int], list[str], set[str]]:
    """:func:`lexically_unmatched` without what the alignment also passes over: ``LOOSE_WORDS``, lead-in words (:func:`lead_in`), compounds the
    other prompt joins or splits (:func:`compounds`), implied qualifiers (:func:`~trioproxy.cache.implied_qualifiers.implied`), "one" where the other prompt has an
    article, words of a comparison (``COMPARING``, and the "from" of "differ from") where
    the other prompt also compares (with one of them or "or"), and a quantifier where the
    other prompt has one of its group (``QUANTIFIER_GROUPS``: "each" / "every")."""
    todo, mine, theirs = lexically_unmatched(new, cached, vocab)
    ids = new.ids.tolist()
    todo = [k for k in todo if ids[k] not in vocab.loose]
    if todo and vocab.lead:
        framing = lead_in(ids, vocab)
        todo = [k for k in todo if k not in framing]
    if todo:
        joined = compounds(ids, cached.ids.tolist(), vocab)
        todo = [k for k in todo if k not in joined]
    if todo:
        qualifiers = implied(ids, vocab)
        todo = [k for k in todo if k not in qualifiers]
    if todo and any(mine[k] in _GROUPED for k in todo):
        other = frozenset(words(cached.ids.tolist(), vocab))
        todo = [k for k in todo if not _same_share(mine[k], other)]
    if todo and any(mine[k] in _ONES or mine[k] in COMPARING for k in todo):
        other = frozenset(words(cached.ids.tolist(), vocab))
        if not _ARTICLES.isdisjoint(other):
            seq = words(ids, vocab)
            todo = [k for k in todo if not _one_before_word(seq, k)]
        if not (COMPARING | _CHOICE).isdisjoint(other):
            after = _differ_from(ids, vocab)
            todo = [k for k in todo if mine[k] not in COMPARING and k not in after]
    return todo, mine, theirs


_DIFFER = frozenset({"differ", "differs"})
_GROUPED = frozenset().union(*QUANTIFIER_GROUPS)


def _same_share(word: str, other: frozenset[str]) -> bool:
    """``word`` is a quantifier of a group of ``QUANTIFIER_GROUPS`` that ``other`` also uses."""
    return any(word in g and not g.isdisjoint(other) for g in QUANTIFIER_GROUPS)


def _differ_from(ids: list[int], vocab: Vocabulary) -> frozenset[int]:
    """Positions of a "from" right after "differ(s)": part of the comparison ("how does X
    differ from Y")."""
    mine = words(ids, vocab)
    return frozenset(k for k in range(1, len(ids)) if mine[k] == "from" and mine[k - 1] in _DIFFER)


def lead_in(ids: list[int], vocab: Vocabulary) -> frozenset[int]:
    """Positions of the pieces of lead-in words: a word of ``LEAD_IN_WORDS`` that only filler
    words precede and that, after only filler words, a question word or a request verb
    follows ("Help me *understand* what a mutex is", "I'd *appreciate* it if you could
    explain ...")."""
    mine = words(ids, vocab)
    heads = [k for k, t in enumerate(ids) if k == 0 or not vocab.continues(t)]
    ends = [*heads[1:], len(ids)]
    filler = [e - h == 1 and ids[h] in vocab.filler for h, e in zip(heads, ends, strict=True)]
    out: set[int] = set()
    for i, head in enumerate(heads):
        if filler[i]:
            continue
        if mine[head] not in vocab.lead:
            break  # a content word: the lead-in, if any, is over
        for j in range(i + 1, len(heads)):
            if mine[heads[j]] in vocab.asks:
                out.update(range(head, ends[i]))
                break
            if not filler[j]:
                break
    return frozenset(out)


def compounds(ids: list[int], other: list[int], vocab: Vocabulary) -> frozenset[int]:
    """Positions of the pieces of words that the other prompt writes joined or split: a word
    that is two adjacent words of the other joined ("lowercase" / "lower case"), or two
    adjacent words that the other writes as one (each part of letters, two at least)."""
    seq, theirs = sequence(ids, vocab), sequence(other, vocab)
    joins = {a + b for a, b in pairwise(theirs) if _part(a) and _part(b)}
    found = {w for w in seq if w in joins}
    one = set(theirs)
    for a, b in pairwise(seq):
        if _part(a) and _part(b) and a + b in one:
            found |= {a, b}
    if not found:
        return frozenset()
    mine = words(ids, vocab)
    return frozenset(k for k in range(len(ids)) if mine[k] in found)


def _part(word: str) -> bool:
    return len(word) >= 2 and word.isalpha()


def unmatched(new: TokenView, cached: TokenView, vocab: Vocabulary, align: float) -> int | None:
    """The first content piece of ``new`` without a counterpart in ``cached``, or None."""
    todo, mine, theirs = loosely_unmatched(new, cached, vocab)
    if not todo:
        return None
    ids = new.ids.tolist()
    if len(cached.ids) == 0:
        return int(new.ids[todo[0]])
    sims = new.vecs[todo].astype(np.float32) @ cached.vecs.astype(np.float32).T
    best = sims.max(axis=1)
    other_terms: set[str] | None = None
    seq: list[str] = []
    for row, k in enumerate(todo):
        token = int(new.ids[k])
        if vocab.exact(token) or best[row] < align:
            if other_terms is None:
                other_terms = theirs | _pairs(sequence(cached.ids.tolist(), vocab))
                seq = sequence(ids, vocab)
            if best[row] < WORDNET_ALIGN or not any(
                _related_in(w, other_terms, vocab) for w in _terms_at(seq, mine[k])
            ):
                return token
    return None


def _pairs(seq: list[str]) -> set[str]:
    """Adjacent word pairs as WordNet writes collocations ("turn_off")."""
    return {f"{a}_{b}" for a, b in pairwise(seq)}


def _terms_at(seq: list[str], word: str) -> list[str]:
    """``word`` and the collocations it starts or ends in ``seq`` ("turn" -> "turn_off")."""
    out = [word]
    for i, w in enumerate(seq):
        if w == word:
            if i > 0:
                out.append(f"{seq[i - 1]}_{w}")
            if i + 1 < len(seq):
                out.append(f"{w}_{seq[i + 1]}")
    return out


def verify(
    new: TokenView, cached: TokenView, vocab: Vocabulary, align: float = DEFAULT_ALIGN
) -> int | None:
    """The word-piece id that breaks the alignment (either direction), or None: same answer."""
    token = unmatched(new, cached, vocab, align)
    if token is None:
        token = unmatched(cached, new, vocab, align)
    return token


__all__ = [
    "COMPARING",
    "DEFAULT_ALIGN",
    "WORDNET_ALIGN",
    "compounds",
    "lead_in",
    "lexically_unmatched",
    "loosely_unmatched",
    "unmatched",
    "verify",
]
