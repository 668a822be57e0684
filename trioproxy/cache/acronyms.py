"""Acronyms and the words they stand for, found in the prompts themselves: "BMI" where the
other prompt says "body mass index" names the same thing, without a list of acronyms. The
guard (:mod:`~trioproxy.cache.guard`) spares a protected term spelled out this way. Pure.
"""

from __future__ import annotations

from trioproxy.cache.prompt_features import Features

_ACRONYM_GLUE = frozenset({"of", "and", "for", "the"})


def spelled_out(term: str, seq: tuple[str, ...]) -> frozenset[str]:
    """The words of ``seq`` that spell ``term`` out as an acronym (empty if none):
    consecutive words whose first letters are its letters, "of" / "and" / "for" / "the"
    between them skipped or counted ("gdpr" / "General Data Protection Regulation", "bmi" /
    "body mass index", "cli" / "command line interface"); acronyms of three to six letters
    (two-letter ones are units and symbols: "ml", "mb")."""
    if not term.isalpha() or not 3 <= len(term) <= 6:
        return frozenset()
    for start, word in enumerate(seq):
        if word[:1] != term[0]:
            continue
        for skip_glue in (True, False):
            run: list[str] = []
            for w in seq[start:]:
                if skip_glue and w in _ACRONYM_GLUE:
                    continue
                run.append(w)
                if len(run) == len(term):
                    break
            if "".join(w[:1] for w in run) == term:
                return frozenset(run)
    return frozenset()


def expanded_words(own: Features, other: Features) -> frozenset[str]:
    """The words of ``own`` that spell out an acronym ``other`` names."""
    out: frozenset[str] = frozenset()
    for term in other.protected - own.words:
        out |= spelled_out(term, own.seq)
    return out


__all__ = ["expanded_words", "spelled_out"]
