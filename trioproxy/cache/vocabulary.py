"""A prompt as the pair verifier reads it: word pieces, their token vectors, and which are filler.

:class:`TokenView` holds a prompt's word-piece ids and unit token vectors (what the embedder
computes anyway, stored with a semantic record). :class:`Vocabulary` says, for one tokenizer,
which pieces are filler (``FILLER_WORDS`` and the inflected forms of ``REQUEST_VERBS``), which
the alignment passes over (``LOOSE_WORDS``), which words open a lead-in (``LEAD_IN_WORDS``) and
which end one (question words, request verbs), which pieces continue the word before them, and
which words WordNet and the alias table relate; :func:`build_vocabulary` makes one.
:func:`words` and :func:`sequence` group pieces into words. Pure, except that the default
thesaurus and alias table are the shipped files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from trioproxy.cache.aliases import Aliases, shipped
from trioproxy.cache.thesaurus import Thesaurus, wordnet

REQUEST_VERBS = (
    "tell give show explain describe make let help want need like know see look find list name "
    "check use define"
)
"""Verbs that frame a request ("show me", "what makes"); their inflected forms are filler too
("makes", "shown"). Not "write": "who wrote X" asks for an author."""

FILLER_WORDS = (
    "a an the is are was were be been being am do does did done doing can could should "
    "would will shall may might must have has had having of in on at by with about as "
    "and or but so if then i me my mine you your yours we us our it its they them their "
    "he she his her this that these those there here what which who whom whose how why "
    "to for "
    "where when whats hows s ll d ve re m t please kindly just really actually also "
    "hi hey hello thanks thank thx cheers "
    "write wondering " + REQUEST_VERBS + " "
    "way ways method methods approach possible properly correctly exactly simply "
    "command commands tips phrase acronym guys "
    "anyone someone something thing things some any get got go going "
    "? . , ! : ; ' \" ( ) [ ] - ..."
)
"""Words whose change does not change the answer; never include time, quantity or
negation words ("next", "all", "not"). "to" and "for" are here because they are mostly
infinitive and purpose markers; a swap around them is the guard's direction rule."""

LOOSE_WORDS = "using /"
"""Words the alignment passes over like filler: "using" is "with" ("uninstall a package using apt"), and
"/" joins what a space also joins ("async/await" / "async await")."""

LEAD_IN_WORDS = "understand appreciate wonder curious remember recall learn teach"
"""Verbs that frame a question without adding to it ("Help me understand what a mutex is",
"I'd appreciate it if you could explain ...", "I want to learn how to ..."), with their
inflected forms: filler only in a lead-in (:func:`lead_in`), content anywhere else ("how do
dogs understand speech")."""

_QUESTION_WORDS = frozenset(
    "what which who whom whose how why where when whats hows whether if".split()
)
"""Where a lead-in ends: the question it opens."""


@dataclass(frozen=True, slots=True)
class TokenView:
    """A prompt as the embedder saw it: word-piece ids and their unit token vectors."""

    ids: np.ndarray
    """int32 [n], without [CLS]/[SEP]."""
    vecs: np.ndarray
    """float16 or float32 [n, dim], each row of unit length."""

    def to_bytes(self) -> bytes:
        n, dim = self.vecs.shape
        head = np.array([n, dim], dtype=np.int32).tobytes()
        return head + self.ids.astype(np.int32).tobytes() + self.vecs.astype(np.float16).tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> TokenView:
        """Raises ValueError on a malformed buffer."""
        if len(raw) < 8:
            raise ValueError("token view too short")
        n, dim = (int(x) for x in np.frombuffer(raw[:8], dtype=np.int32))
        need = 8 + 4 * n + 2 * n * dim
        if n < 0 or dim <= 0 or len(raw) != need:
            raise ValueError("token view size mismatch")
        ids = np.frombuffer(raw[8 : 8 + 4 * n], dtype=np.int32)
        vecs = np.frombuffer(raw[8 + 4 * n :], dtype=np.float16).reshape(n, dim)
        return cls(ids, vecs)


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Which word-piece ids are filler, which must match exactly (numbers, fragments), and
    which continue the word before them."""

    filler: frozenset[int]
    text: Callable[[int], str]
    continues: Callable[[int], bool] = lambda token: False
    """True for a continuation piece (``##ize``): it joins the previous piece's word."""
    related: Callable[[str, str], bool] = lambda a, b: False
    """True when two different lower-case words are near in meaning (WordNet)."""
    opposed: Callable[[str, str], bool] = lambda a, b: False
    """True when two lower-case words name different things (WordNet antonyms or sisters)."""
    aliases: Callable[[frozenset[str], frozenset[str]], frozenset[str]] = lambda mine, theirs: (
        frozenset()
    )
    """The words of the first set that name, by an alias, what the second set names by
    another form ("js" / "javascript"; :meth:`~trioproxy.cache.aliases.Aliases.covered`)."""
    loose: frozenset[int] = frozenset()
    """Ids of ``LOOSE_WORDS``."""
    lead: frozenset[str] = frozenset()
    """``LEAD_IN_WORDS`` and their inflected forms (:func:`lead_in`)."""
    asks: frozenset[str] = _QUESTION_WORDS
    """Words a lead-in ends before: question words, request verbs and their forms."""

    def exact(self, token: int) -> bool:
        text = self.text(token)
        return len(text) <= 2 or any(c.isdigit() for c in text)


def build_vocabulary(
    tokenize: Callable[[str], list[int]],
    piece: Callable[[int], str],
    thesaurus: Thesaurus | None = None,
    aliases: Aliases | None = None,
) -> Vocabulary:
    """``tokenize``: text -> word-piece ids; ``piece``: id -> its text (``##`` dropped ok);
    ``thesaurus``: word relations (default: the shipped WordNet extract); ``aliases``: the
    alias table (default: the shipped ``aliases.txt``). Filler are the
    ``FILLER_WORDS`` and the inflected forms of ``REQUEST_VERBS`` ("makes", "shown"); the
    ``LEAD_IN_WORDS`` are filler in a lead-in only. A piece continues a word when its text
    alone tokenizes to another id."""
    th = wordnet() if thesaurus is None else thesaurus
    requests = [f for w in REQUEST_VERBS.split() for f in (w, *th.inflections(w))]
    names = FILLER_WORDS.split() + requests
    filler = frozenset(i for w in names if len(ids := tokenize(w)) == 1 for i in ids)
    lead = frozenset(f for w in LEAD_IN_WORDS.split() for f in (w, *th.inflections(w)))
    loose = frozenset(i for w in LOOSE_WORDS.split() if len(ids := tokenize(w)) == 1 for i in ids)

    @lru_cache(maxsize=8192)
    def continues(token: int) -> bool:
        return tokenize(piece(token)) != [token]

    return Vocabulary(
        filler,
        lru_cache(maxsize=65536)(piece),
        continues,
        lru_cache(maxsize=65536)(th.related),
        lru_cache(maxsize=65536)(th.opposed),
        lru_cache(maxsize=4096)((shipped() if aliases is None else aliases).covered),
        loose,
        lead,
        _QUESTION_WORDS | frozenset(requests),
    )


def words(ids: list[int], vocab: Vocabulary) -> list[str]:
    """The word each piece belongs to (its pieces' texts joined), one entry per piece."""
    return list(_words(tuple(ids), vocab))


@lru_cache(maxsize=256)
def _words(ids: tuple[int, ...], vocab: Vocabulary) -> tuple[str, ...]:
    """:func:`words`, remembered for the last prompts (a band hit asks it a dozen times)."""
    out = [""] * len(ids)
    heads = [k for k, t in enumerate(ids) if k == 0 or not vocab.continues(t)]
    for i, head in enumerate(heads):
        end = heads[i + 1] if i + 1 < len(heads) else len(ids)
        word = "".join(vocab.text(t) for t in ids[head:end])
        for k in range(head, end):
            out[k] = word
    return tuple(out)


def sequence(ids: list[int], vocab: Vocabulary) -> list[str]:
    """The prompt's words in order (one entry per word, not per piece)."""
    mine = words(ids, vocab)
    return [mine[k] for k, t in enumerate(ids) if k == 0 or not vocab.continues(t)]


__all__ = [
    "FILLER_WORDS",
    "LEAD_IN_WORDS",
    "LOOSE_WORDS",
    "REQUEST_VERBS",
    "TokenView",
    "Vocabulary",
    "build_vocabulary",
    "sequence",
    "words",
]
