"""Well-known alias equivalences ("JS" = "JavaScript", "k8s" = "Kubernetes"), from a shipped
table (``aliases.txt``: data, not code).

The guard rewrites every form in both prompts to its group's canonical form before its rules
look at them (:meth:`Aliases.canonical`), so "What is the difference between JS and TS?" and
"How does JavaScript differ from TypeScript?" do not differ in a protected term, nor "WWII"
and "World War Two" in a number. The pair verifier counts a word of one prompt as matched
when the other prompt names the same group by another form (:meth:`Aliases.covered`, on
lower-case words as the embedding model sees them), and the semantic cache embeds the
canonical text (:func:`embedding_text`), so an alias does not push a pair below the floor.
Besides names, the table holds phrases of one meaning: a frequency adverb of a unit of time
is its rate ("daily" = "every day" = "each day" = "per day", written "per day" so that the
unit stays a word the guard compares: "monthly" / "weekly" differ as "per month" / "per
week" do; "all day", a length of time, and "every other day" are not in it), and a
phrasal verb of a setting is its one-word form ("turn on" = "enable", "turn off" =
"disable", so that the guard's opposites judge them).

A form written in lower case in the table matches in any case; a form with a capital letter,
or behind "=", matches only as written ("US" is not "us", "Node" not a tree's "node", "=mac"
not "MAC"). Forms match as whole words. A word that is an alias only in some places names
them in square brackets: the words that must come just before it (``[with via] brew``) or just
after it (``brew [install upgrade]``), each form one context: "brew install wget" and "installed
with brew" are Homebrew, "cold brew coffee" and "brew green tea" are not. Only the bare form
is rewritten; the context words stay. Pure: strings in, strings out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from trioproxy.cache.preamble import without_filler

_WORDS = re.compile(r"[a-z0-9]+")
EXACT = "="
"""A form written behind this matches only as written, even in lower case ("=mac": "mac" and
not "MAC", a network address)."""
_EDGE_L = r"(?<![A-Za-z0-9_\-])"
_EDGE_R = r"(?![A-Za-z0-9_+#\-])"
_CONTEXT = re.compile(r"^(?:\[([^\]]*)\]\s*)?([^\[\]]+?)(?:\s*\[([^\]]*)\])?$")


def _split(form: str) -> tuple[str, str, str]:
    """A table form -> (its pattern before the bare form, the bare form, its pattern after):
    ``[with via] brew`` -> a lookbehind for "with " or "via ", "brew", ""."""
    m = _CONTEXT.match(form)
    if m is None:
        raise ValueError(f"alias form {form!r}: at most one [words] before and one after")
    before, bare, after = (m.group(1) or "").split(), m.group(2), (m.group(3) or "").split()
    if before and after:
        raise ValueError(f"alias form {form!r}: a context before or after, not both")
    left = (
        "(?:" + "|".join(rf"(?<=(?<![A-Za-z0-9_\-])(?i:{re.escape(w)}) )" for w in before) + ")"
        if before
        else ""
    )
    right = "(?=" + r"\s+(?i:(?:" + "|".join(map(re.escape, after)) + r"))\b)" if after else ""
    return left, bare, right


@dataclass(frozen=True, slots=True, eq=False)
class Aliases:
    """Hashed by identity (the guard memoises features per table)."""

    groups: tuple[tuple[str, ...], ...]
    """Each group's forms, the canonical one first."""
    _pattern: re.Pattern[str] | None = field(init=False, default=None)
    _canon: dict[str, str] = field(init=False, default_factory=dict)
    _forms: dict[str, tuple[int, ...]] = field(init=False, default_factory=dict)
    """Lower-case word -> the groups with a form that contains it (for :meth:`covered`)."""
    _group_forms: tuple[tuple[frozenset[str], ...], ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        canon: dict[str, str] = {}
        alts: list[tuple[int, str]] = []
        for group in self.groups:
            for written in group:
                left, form, right = _split(written)
                loose = form == form.lower() and not form.startswith(EXACT)
                form = form.removeprefix(EXACT)
                canon.setdefault(form.lower() if loose else form, group[0])
                bare = f"(?i:{re.escape(form)})" if loose else re.escape(form)
                alts.append((len(form), left + bare + right))
        alts.sort(key=lambda a: a[0], reverse=True)
        pattern = (
            re.compile(_EDGE_L + "(?:" + "|".join(a for _, a in alts) + ")" + _EDGE_R)
            if alts
            else None
        )
        group_forms = tuple(
            tuple(
                frozenset(ws)
                for form in group
                if (ws := _WORDS.findall(_split(form)[1].removeprefix(EXACT).lower()))
                and any(len(w) >= 2 for w in ws)
            )
            for group in self.groups
        )
        forms: dict[str, list[int]] = {}
        for g, fs in enumerate(group_forms):
            for f in fs:
                for w in f:
                    if g not in forms.setdefault(w, []):
                        forms[w].append(g)
        object.__setattr__(self, "_pattern", pattern)
        object.__setattr__(self, "_canon", canon)
        object.__setattr__(self, "_group_forms", group_forms)
        object.__setattr__(self, "_forms", {w: tuple(gs) for w, gs in forms.items()})

    def canonical(self, text: str) -> str:
        """``text`` with every form replaced by its group's canonical form."""
        if self._pattern is None:
            return text
        return self._pattern.sub(self._replace, text)

    def _replace(self, m: re.Match[str]) -> str:
        form = m.group()
        return self._canon.get(form) or self._canon.get(form.lower(), form)

    def covered(self, mine: frozenset[str], theirs: frozenset[str]) -> frozenset[str]:
        """The words of ``mine`` (lower case) in a form of a group of which ``theirs`` holds
        another form ("js" when the other prompt says "javascript")."""
        out: set[str] = set()
        for g in {g for w in mine for g in self._forms.get(w, ())}:
            forms = self._group_forms[g]
            have = [f for f in forms if f <= mine]
            other = [f for f in forms if f <= theirs]
            if have and other and any(a != b for a in have for b in other):
                for f in have:
                    out |= f
        return frozenset(out)


def parse(text: str) -> Aliases:
    """The table: one group per line, forms separated by "|", "#" starts a comment line."""
    groups = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        forms = tuple(f.strip() for f in line.split("|") if f.strip())
        if len(forms) >= 2:
            groups.append(forms)
    return Aliases(tuple(groups))


@lru_cache(maxsize=1)
def shipped() -> Aliases:
    """The table shipped with the package (``aliases.txt``)."""
    return parse(resources.files("trioproxy.cache").joinpath("aliases.txt").read_text("utf-8"))


def embedding_text(text: str) -> str:
    """What the semantic cache embeds for ``text``: its aliases in canonical form, so that
    "What is k8s?" and "What is Kubernetes?" embed alike (cosine 0.57 as typed), without a
    filler preamble or sign-off (:mod:`~trioproxy.cache.preamble`)."""
    return shipped().canonical(without_filler(text))


__all__ = ["EXACT", "Aliases", "embedding_text", "parse", "shipped"]
