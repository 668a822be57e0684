"""What the near-miss guard compares in a prompt (:class:`Features`): its words in order, the
numbers (digits and number words, normalised: "three" = "3"), negation cues, protected terms
(capitalised words and acronyms away from a sentence start, lexicon terms in any case: languages,
units, currencies, time words, formats; quoted strings, identifiers), words typed with capitals,
sentence starts, and letter-and-digit codes with every way of typing them. Extracted once per
text (cached) after the alias table's canonical names are put in; the rules that compare two
prompts' features are :mod:`trioproxy.cache.guard`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from trioproxy.cache.aliases import Aliases, shipped
from trioproxy.cache.preamble import without_filler

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+#_'.\-]*[A-Za-z0-9+#]|[A-Za-z]|\d+(?:[.,]\d+)*")
_QUOTED = re.compile(
    r"(?<!\w)[\"'`\u201c\u2018]([^\"'`\u201d\u2019\n]{1,80})[\"'`\u201d\u2019](?!\w)"
)
_CODE = re.compile(r"[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*")
"""Product and model codes: runs of letters and digits joined by - _ . ("a4", "6s", "gpt-4o")."""
_ALNUM = re.compile(r"[a-z0-9]+")
_IDENT = re.compile(r"\b[A-Za-z_]\w*(?:\.\w+)+\b|\b\w*_\w+\b|\b[a-z]+[A-Z]\w*\b|\b\w+\(\)")

_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {
    "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000",
    "million": "1000000", "billion": "1000000000", "half": "0.5", "dozen": "12",
    "single": "1", "twice": "2", "double": "2", "triple": "3",
    "first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th",
}  # fmt: skip
_MERIDIEM = frozenset({"am", "pm"})
"""Counted with the numbers only right after one ("7 am", "five pm"): "I am running" and "I'm
running" ask the same."""

_NEGATIONS = frozenset(
    "not no never without none nothing nobody neither nor cannot cant dont doesnt didnt "
    "isnt arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt mustnt "
    "except excluding lack lacks lacking lacked".split()
)

_KEYWORD_PAIRS = frozenset({("try", "except")})
"""A negation word right after this word is a language keyword, not a negation ("try/except")."""

_LEXICON = frozenset(
    # natural and programming languages, usually typed in lower case
    "english french spanish german italian portuguese dutch russian chinese mandarin "
    "cantonese japanese korean arabic hindi turkish polish swedish greek hebrew latin "
    "python javascript typescript java kotlin swift rust golang ruby php perl scala "
    "haskell c c++ c# sql bash powershell matlab lua dart elixir "
    # units and currencies
    "mm cm km meter meters metre metres kilometer kilometers kilometre kilometres "
    "mile miles inch inches foot feet yard yards mph kmh kph knot knots "
    "mg gram grams kg kilogram kilograms pound pounds lb lbs ounce ounces oz ton tons tonne "
    "ml liter liters litre litres gallon gallons pint pints quart quarts cup cups "
    "tablespoon tablespoons teaspoon teaspoons celsius fahrenheit kelvin "
    "second seconds minute minutes hour hours day days week weeks month months year years "
    "byte bytes kb mb gb tb kilobyte kilobytes megabyte megabytes gigabyte gigabytes "
    "terabyte terabytes bit bits usd eur gbp jpy cny inr chf cad aud dollar dollars "
    "euro euros yen yuan rupee rupees franc francs "
    # time words
    "yesterday today tomorrow tonight morning afternoon evening night weekend "
    "monday tuesday wednesday thursday friday saturday sunday january february march "
    "april june july august september october november december "
    "spring summer autumn winter "
    # formats and registers
    "json yaml xml csv html markdown toml sentence paragraph word words page pages".split()
)

_UNIT_LETTER = re.compile(r"\d ?([mMbBgG])(?![A-Za-z0-9])")
"""A one-letter unit right after a number, whose case is its meaning: "512M" (mega) / "512m"
(milli: Kubernetes CPU and memory), "8B" (bytes) / "8b" (bits), "5G" (the network) / "5g"
(grams). Letters whose case does not change the answer ("4K"/"4k", "1080P"/"1080p") are not
listed."""

_WEAK_NUMBERS = frozenset({"one", "single", "first", "second"})
"""Number words that paraphrases use as pronouns or ordinals ("one of the", "first do X")."""
_SENTENCE_END = ".?!:\n"


@dataclass(frozen=True, slots=True)
class Features:
    numbers: tuple[str, ...]
    negated: bool
    protected: frozenset[str]
    words: frozenset[str]
    seq: tuple[str, ...]
    low: str
    cased: frozenset[str]
    """Words with a capital letter, as typed ("MBps", "Mbps", "mW", "GB")."""
    inner_cased: frozenset[str]
    """Two-letter mixed-case words away from a sentence start ("Ms", "Go"; not "GPT", often
    typed in lower case, nor "Vim", a name typed either way)."""
    unit_letters: frozenset[str]
    """One-letter units typed right after a number, as typed ("M" of "512M", "m" of "512m")."""
    starts: frozenset[int]
    """Positions in ``seq`` of the words that open a sentence."""
    codes: frozenset[str]
    """Letter-and-digit codes, lower case, without separators ("a4", "6s", "gpt4o")."""
    joins: frozenset[str]
    """Every run of 1-3 consecutive lower-case letter/digit groups, concatenated: what a
    code of the other prompt may have been typed as ("gpt 4o", "gpt-4o" -> "gpt4o")."""


def _is_number(word: str) -> bool:
    return word[:1].isdigit() or word in _NUMBER_WORDS


def features(text: str, aliases: Aliases | None = None) -> Features:
    return _features_of(text, shipped() if aliases is None else aliases)


@lru_cache(maxsize=8192)
def _features_of(text: str, aliases: Aliases) -> Features:
    text = aliases.canonical(without_filler(text).replace("\u2019", "'").replace("\u2018", "'"))
    seq: list[str] = []
    numbers: list[str] = []
    protected: set[str] = set()
    cased: set[str] = set()
    inner: set[str] = set()
    starts: set[int] = set()
    for m in _WORD.finditer(text):
        raw = m.group()
        initial = _sentence_initial(text, m.start())
        if initial:
            starts.add(len(seq))
        if any(c.isupper() for c in raw):
            cased.add(raw)
            if len(raw) == 2 and not initial and not raw.isupper():
                inner.add(raw)
        w = raw.lower().removesuffix("'s").replace("'", "").rstrip(".")
        seq.append(w)
        for part in w.split("-"):
            if part[:1].isdigit():
                numbers.append(part.replace(",", ""))
            elif part in _NUMBER_WORDS and part not in _WEAK_NUMBERS:
                numbers.append(_NUMBER_WORDS[part])
            elif part in _MERIDIEM and len(seq) > 1 and _is_number(seq[-2]):
                numbers.append(part)
        if (
            raw[0].isupper()
            and (not initial or (len(raw) > 1 and raw.isupper()))
            and not raw.startswith("I'")
        ):
            protected.add(w)
        if w in _LEXICON:
            protected.add(w)
    protected.update(q.strip().lower() for q in _QUOTED.findall(text))
    for ident in _IDENT.findall(text):
        protected.add(ident.lower().rsplit(".", 1)[-1] if "(" not in ident else ident.lower())
    return Features(
        numbers=tuple(sorted(numbers)),
        negated=any(
            w in _NEGATIONS and (seq[i - 1] if i else "", w) not in _KEYWORD_PAIRS
            for i, w in enumerate(seq)
        ),
        protected=frozenset(protected),
        words=frozenset(seq),
        seq=tuple(seq),
        low=text.lower(),
        cased=frozenset(cased),
        inner_cased=frozenset(inner),
        unit_letters=frozenset(_UNIT_LETTER.findall(text)),
        starts=frozenset(starts),
        codes=frozenset(
            re.sub(r"[-_.]", "", c).lower()
            for c in _CODE.findall(text)
            if any(ch.isdigit() for ch in c) and any(ch.isalpha() for ch in c)
        ),
        joins=_joins(_ALNUM.findall(text.lower())),
    )


def _sentence_initial(text: str, start: int) -> bool:
    i = start - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i < 0 or text[i] in _SENTENCE_END


def _joins(groups: list[str]) -> frozenset[str]:
    return frozenset("".join(groups[i : i + k]) for i in range(len(groups)) for k in (1, 2, 3))


__all__ = ["Features", "features"]
