"""The near-miss guard: a cheap lexical check on (new prompt, cached prompt) before a hit.

Embeddings put "convert USD to EUR" and "convert EUR to USD" at cosine 0.99, so a threshold
alone serves wrong answers. :func:`near_miss` compares the two prompts' *answer-critical
tokens* and names the first difference, or returns None when the hit may be served:

* numbers (digits and number words, normalised: "three" = "3"), and am/pm; a "1" right
  before a word the other prompt counts with "a", "an" or "one" is that count ("walk 1 mile"
  / "walk a mile": :func:`_one_for_article`)
* letter-and-digit codes ("a4"/"s4", "6"/"6s", "gpt-4o"/"gpt-4o-mini"), however spaced
* case: units and symbols (Mbps/MBps) and short mixed-case words (Ms/ms), and a number's
  one-letter unit typed in the other case ("512M" / "512m" in Kubernetes: mega / milli)
* negation cues (not, n't, never, no, without, ...), compared as a count's parity-free set
* protected terms: capitalised words and acronyms (entities, languages, products),
  quoted strings, `code`, identifiers (snake_case, camelCase, dotted, calls ``f()``):
  :func:`~trioproxy.cache.terms.missing`
* lexicon terms matched in any case: languages, units, currencies, time words, formats
* siblings: words sharing a stem with another, non-inflectional ending
  ("weekdays"/"weekends", :mod:`~trioproxy.cache.morph`), unless one word is the other cut
  short ("temp"/"temperature", "cert"/"certificate": :func:`~trioproxy.cache.morph.clipped`):
  the longer adds neither a word of its own ("java"/"java-script", "date"/"date-time" stay
  siblings) nor an ending that derives another word ("guitar"/"guitarist", "harm"/"harmful");
  nor a compound of the two words the other side joins by "and" ("datetime" / "date and
  time": :func:`~trioproxy.cache.terms.siblings`)
* antonym pairs: one side uses a word whose antonym the other side uses instead ("show
  hidden files" / "hide files"); or, with at most two edits between the prompts, one word is
  put at the very place of its antonym (a pair of the list or WordNet antonyms), whether or
  not either word also stands elsewhere ("slice(start, end) ... the end index" / "... the
  start index": :func:`~trioproxy.cache.polarity.opposite_in_place`)
* polarity: one side stops, prevents or silences the very action the other asks for ("make
  chrome save my passwords" / "make chrome stop saving my passwords", "log all SQL queries" /
  "silence SQL query logging", "get moss to grow" / "keep moss from growing"): a stop-verb's
  gerund whose verb the other side uses in another form, while the other side has no
  stop-verb and no negation of its own
* quantifier: one side uses a quantifier of another class in place of the other's ("one pod"
  / "all pods", "a few examples" / "many examples"; "each" = "every" = "all"); or counts one
  of a thing ("a", "one", "single") that the other counts as many or all ("all", "every",
  "each", "multiple", "many", "several"; not "some", "any"), the head of the noun phrase
  compared ("delete a row" / "delete multiple rows", "remove a stopped container" / "remove
  all stopped containers": :func:`~trioproxy.cache.quantifiers.one_against_many`)
* question: the kinds of question asked differ ("why" a reason, "when" / "what year" a time,
  "where" a place, "who" a person, "how many" a count, "how much" an amount, "how often" a
  frequency (which a count may also be), "how long", "how far", "how old" a measure, other
  "how" a manner; "how come" and "what
  causes" = "why"; other "what" / "which" a thing, which a manner or measure may also be, never
  a reason, time, place or person: :mod:`~trioproxy.cache.question_kinds`)
* time: one time word placed differently relative to now ("this Friday" / "last Friday",
  "next quarter" / "the previous quarter"), or a length of time read the other way round
  ("commits from the past two weeks" / "older than two weeks")
* direction: the order of shared key terms (two per side, so "numpy array" counts) around
  "to/into/for/than/from...to" is swapped, unless both prompts ask for a distance ("to" after
  "how", "need", "used" ... opens an infinitive, not a direction)
* order: the same words in another order (greetings, "please" and "exactly" aside), unless one
  block of words that opens with a preposition ("in Python", "at sea level", "after placing an
  order") or with "as" ("as a student") only moved, or one manner adverb ("permanently delete" / "delete ... permanently";
  not "only", "nearly" and the other focus adverbs), or "to not" is "not to", or the two sides of an "and" or an "or" traded places ("affect and
  effect", "a fruit or a vegetable"), or both prompts compare two things ("X vs Y", "the
  difference between X and Y": a comparison reads the same either way)
* swap: two shared content words trade places around a third that stays between them ("a
  parent process waits for a child process" / "a child process waits for its parent
  process"; a function word between the two on both sides, since a terse query's stack of
  words gives no roles: "rules for a penalty kick in soccer" / "soccer penalty kick rules"),
  or across a word that opens a clause ("a lion ... when hyenas steal" / "hyenas
  ... when a lion steals"), without "by" on one side only (the passive voice), unless the two sides of an
  "and" or an "or" traded places; or one side has done to it what the other does ("tips for
  interviewing a candidate" / "tips for being interviewed as a candidate"); or the asker is
  the object of a verb on one side and its subject on the other ("my employee asks me for a
  raise" / "I ask my boss for a raise", "a calendar someone shared with me" / "how do I share
  my calendar"); or, the content words aligning one to one, two participants of one to three
  words trade places around the same run of words ("a bride give her bridesmaids" /
  "bridesmaids give the bride", "a parent claim their adult child" / "an adult child claim
  their parent"), the run no coordinator, comparison or symmetric relation ("mix X with Y":
  :func:`~trioproxy.cache.word_order.pivot_swapped`)

Before any rule, a prompt typed all in lower case (the pronoun "I" aside) takes the other
prompt's mid-sentence capitals on the words they share ("what version of node" / "which version
of Node", "parse json in go" / "... in Go": :func:`recased`), since it says nothing by its case;
then both prompts are rewritten to the canonical names of the shipped alias table
(:mod:`~trioproxy.cache.aliases`: "JS" = "JavaScript", "k8s" = "Kubernetes", "WWII" =
"World War Two"); a protected term counts as present in its other forms
(:mod:`~trioproxy.cache.terms`).

A capitalised word counts as different only when the other prompt lacks it in any case, so
sentence-initial capitals do not trip it, and a word typed with one letter left out, added or
swapped with its neighbour ("Kubernets", "statment": :func:`~trioproxy.cache.morph.typo`) is
the word itself, for protected terms and siblings. Each rule was kept only if it paid on the measured
curve (``loadtest/semantic_quality.py``).
"""

from __future__ import annotations

import re

from trioproxy.cache.polarity import opposite_in_place, polarity
from trioproxy.cache.prompt_features import Features, features
from trioproxy.cache.quantifiers import one_against_many, quantities
from trioproxy.cache.question_kinds import asks_differently, question_kinds
from trioproxy.cache.relative_time import relative_time
from trioproxy.cache.terms import missing, siblings
from trioproxy.cache.word_order import (
    COORDINATORS,
    asker_flipped,
    gerund_voice,
    moved_block,
    pivot_swapped,
    possessors_swapped,
    roles_swapped,
    swapped,
    voice_flipped,
)

_NEG_PREFIXES = ("un", "non", "non-", "in", "im", "ir", "il", "dis", "de")
"""A word and the same word behind one of these ("safe"/"unsafe", "refundable"/
"non-refundable", "approved"/"disapproved") say opposite things."""
_SUPERLATIVE = {"better": "best", "worse": "worst", "more": "most", "less": "least"}


_ANTONYMS: tuple[tuple[str, str], ...] = tuple(
    tuple(p.split("/"))  # type: ignore[misc]
    for p in (
        "increase/decrease raise/lower rise/fall increase/reduce more/less more/fewer "
        "most/least max/min maximum/minimum largest/smallest biggest/smallest "
        "bigger/smaller larger/smaller highest/lowest higher/lower high/low "
        "longest/shortest longer/shorter long/short best/worst better/worse good/bad "
        "advantages/disadvantages advantage/disadvantage pros/cons benefits/drawbacks "
        "ascending/descending asc/desc encrypt/decrypt encryption/decryption "
        "encode/decode compress/decompress serialize/deserialize zip/unzip "
        "buy/sell buying/selling import/export upload/download push/pull "
        "enable/disable enabled/disabled add/remove add/delete insert/delete "
        "include/exclude allow/deny allow/block accept/reject start/stop open/close "
        "before/after above/below over/under inside/outside first/last "
        "oldest/newest older/newer old/new earliest/latest hottest/coldest hot/cold "
        "warm/cool fastest/slowest faster/slower fast/slow cheapest/priciest cheap/expensive "
        "win/lose winning/losing gain/lose profit/loss positive/negative true/false "
        "optimistic/pessimistic happy/sad easy/hard easiest/hardest simple/complex "
        "north/south east/west left/right up/down input/output private/public "
        "synchronous/asynchronous sync/async lowercase/uppercase odd/even "
        "strong/weak strongest/weakest heavy/light heaviest/lightest safe/dangerous "
        "show/hide shown/hidden visible/hidden legal/illegal healthy/unhealthy for/against with/without manager/employee "
        "teacher/student parent/child buyer/seller client/server male/female men/women "
        "kids/adults children/adults beginners/experts all/some all/none always/never "
        "only/also more/only upper/lower host/guest hosts/guests landlord/tenant lender/borrower "
        "employer/employee sender/recipient sender/receiver creditor/debtor winner/loser "
        "set/remove set/unset set/delete"
    ).split()
)
_ANTONYM_SET = frozenset(_ANTONYMS)

_DIRECTION = frozenset({"to", "into", "for", "than", "from"})
_VERSUS = frozenset({"vs", "versus", "v"})
"""Words of a comparison, which reads the same either way ("Kubernetes vs Docker Swarm" /
"Docker Swarm vs Kubernetes"); "than" stays a direction ("is X faster than Y")."""
_SYMMETRIC = frozenset({"distance", "far"})
"""A prompt with one of these on each side asks for a distance, the same either way ("the
distance from Earth to Mars" / "how far is Mars from Earth")."""
_BEFORE_INFINITIVE = frozenset("how way ways want need needs used able trying order".split())
"""Words after which "to" opens an infinitive ("how to parse a String"), not a direction."""
_TERM_KEYS = 2
"""Shared key words taken on each side of a direction word: a two-word term ("numpy array")."""
_COMPARATIVE = re.compile(r"[a-z]{2,}(?:er|ier)|more|less")
_STOP = frozenset(
    "a an the this that these those it its is are was were be of in on at for with by "
    "and or what whats how why who when where which i me my you your we our do does did can "
    "could should would will shall please give tell show write make explain list".split()
)
_UNIT_LEN = 4
"""The longest word whose inner capitals are meaning (units: "MBps", "kWh", "mW")."""
_MOVABLE_WORDS = frozenset(
    "please kindly thanks thank hi hey hello exactly actually really basically".split()
)
"""Words a paraphrase puts anywhere ("Please convert ..." / "Convert ... please", "What
exactly is X?" / "What is X, exactly?")."""
_PASSIVE = "by"
RULES: tuple[str, ...] = (
    "number", "code", "case", "negation", "prefix", "term", "sibling", "degree", "antonym",
    "polarity", "quantifier", "time", "direction", "order", "question", "swap",
)  # fmt: skip


def _direction_pairs(seq: tuple[str, ...], keys: frozenset[str]) -> set[tuple[str, str]]:
    """(key before, key after) for each direction word and the nearest keys of its clause on
    each side (up to the neighbouring direction words), so that two-word terms count
    ("a pandas DataFrame to a numpy array"); comparatives are skipped before "than"."""
    found: set[tuple[str, str]] = set()
    marks = [
        i
        for i, w in enumerate(seq)
        if w in _DIRECTION and not (w == "to" and i and seq[i - 1] in _BEFORE_INFINITIVE)
    ]
    for j, i in enumerate(marks):
        lo = marks[j - 1] + 1 if j else 0
        hi = marks[j + 1] if j + 1 < len(marks) else len(seq)
        left = [
            x
            for x in seq[lo:i]
            if x in keys and not (seq[i] == "than" and _COMPARATIVE.fullmatch(x))
        ][-_TERM_KEYS:]
        right = [x for x in seq[i + 1 : hi] if x in keys][:_TERM_KEYS]
        found.update((x, y) for x in left for y in right if x != y)
    return found


def _case_conflict(n: Features, c: Features) -> bool:
    """A word of up to ``_UNIT_LEN`` characters capitalised differently on each side, with a
    capital past its first letter on one of them: units and symbols (Mbps/MBps, mW/MW, Gb/GB),
    not "Python"/"python" nor a longer name's spellings ("GitHub"/"Github"); or a
    short mixed-case word mid-sentence on one side only (Ms/ms, Go/go, Mb/mb)."""
    low_c = {w.lower(): w for w in c.cased}
    for w in n.cased:
        other = low_c.get(w.lower())
        if (
            other is not None
            and other != w
            and len(w) <= _UNIT_LEN
            and any(ch.isupper() for ch in w[1:] + other[1:])
        ):
            return True
    if any(u.swapcase() in c.unit_letters and u not in c.unit_letters for u in n.unit_letters):
        return True
    return _short_case(n, c) or _short_case(c, n)


def _short_case(a: Features, b: Features) -> bool:
    """``a`` capitalises a short word mid-sentence that ``b`` only has in another case."""
    return any(w.lower() in b.words and w not in b.cased for w in a.inner_cased)


def _code_missing(a: Features, b: Features) -> bool:
    """A letter-and-digit code of ``a`` that ``b`` does not type, even spaced or hyphenated."""
    return any(code not in b.codes and code not in b.joins for code in a.codes)


_ARTICLES = frozenset({"a", "an", "one"})


def _one_for_article(n: Features, c: Features) -> bool:
    """The numbers differ by one "1" only, which stands right before a word that the other
        prompt has right after "a", "an" or "one" ("walk 1 mile" / "walk a mile"): a count of
        one, as "one" is (a weak number word). Not "step 1" / "the step", "type 1 diabetes" / "a
    type of diabetes", "O(1) memory" / "a memory"."""
    for a, b in ((n, c), (c, n)):
        extra = list(a.numbers)
        for x in b.numbers:
            if x in extra:
                extra.remove(x)
            else:
                break
        else:
            if extra == ["1"] and len(a.numbers) == len(b.numbers) + 1:
                after = {a.seq[i + 1] for i, w in enumerate(a.seq[:-1]) if w == "1"}
                counted = {b.seq[i + 1] for i, w in enumerate(b.seq[:-1]) if w in _ARTICLES}
                if after & counted:
                    return True
    return False


def _prefixed(a: frozenset[str], b: frozenset[str]) -> bool:
    """``b`` holds a negating-prefix form of a word of ``a`` that ``a`` itself lacks."""
    return any(p + w in b and p + w not in a for w in a if len(w) > 2 for p in _NEG_PREFIXES)


def _degree(a: frozenset[str], b: frozenset[str]) -> bool:
    """A comparative on one side, the superlative of the same stem on the other."""
    for w in a:
        sup = _SUPERLATIVE.get(w) or (w[:-2] + "est" if w.endswith("er") and len(w) > 4 else None)
        if sup and sup in b and sup not in a and w not in b:
            return True
    return False


def _unpolite(seq: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(w for w in seq if w not in _MOVABLE_WORDS)


def _core(seq: tuple[str, ...]) -> tuple[str, ...]:
    """``seq`` without its function words but with its coordinators."""
    return tuple(w for w in seq if w in COORDINATORS or w not in _STOP)


_CHOICE = frozenset("which better best worse choose pick prefer".split())
"""With "or", words of a choice between the two sides ("is Python or JavaScript better")."""


def _compares(words: frozenset[str]) -> bool:
    """The prompt compares two things, in whichever order it names them: "X vs Y", "the
    difference between X and Y", "compare X and Y", "X or Y: which is better", "how does X
    differ from Y"."""
    return bool(
        words & _VERSUS
        or ("between" in words and words & {"difference", "differences", "diff"})
        or ("from" in words and words & {"differ", "differs"})
        or words & {"compare", "comparison", "comparing"}
        or ("or" in words and words & _CHOICE)
    )


def _coordinated(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """``b`` is ``a`` with the two sides of one "and" / "or" exchanged, each of one to three
    words ("between affect and effect" / "between effect and affect", "a fruit or a
    vegetable" / "a vegetable or a fruit")."""
    for i, w in enumerate(a):
        if w not in COORDINATORS:
            continue
        for lx in (1, 2, 3):
            for ly in (1, 2, 3):
                if lx <= i and i + ly < len(a):
                    x, y = a[i - lx : i], a[i + 1 : i + 1 + ly]
                    if a[: i - lx] + y + (w,) + x + a[i + 1 + ly :] == b:
                        return True
    return False


_CASED_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_SENTENCE_END = re.compile(r"(?:^|[.!?:;\"'`(\[\-\u2013\u2014])\s*$")


def recased(text: str, other: str) -> str:
    """``text`` typed all in lower case (the pronoun "I" aside), with the words it shares with ``other`` capitalised as
    ``other`` capitalises them mid-sentence ("what version of node" / "which version of Node",
    "parse json in go" / "parse JSON in Go"): a prompt without a capital says nothing by its
    case. A word ``other`` types in two ways, or capitalises only at a sentence start, stays."""
    if not _lower_typed(text) or _lower_typed(other):
        return text
    forms: dict[str, set[str]] = {}
    for m in _CASED_WORD.finditer(other):
        w = m.group()
        initial = _SENTENCE_END.search(other, 0, m.start()) is not None
        forms.setdefault(w.lower(), set()).add(w.lower() if initial else w)
    cased = {low: f for low, fs in forms.items() if len(fs) == 1 and (f := next(iter(fs))) != low}
    if not cased:
        return text
    return _CASED_WORD.sub(lambda m: cased.get(m.group(), m.group()), text)


def _lower_typed(text: str) -> bool:
    """No capital letter but the pronoun "I" ("how do I parse json in go")."""
    return not any(c.isupper() for c in _PRONOUN_I.sub("", text))


_PRONOUN_I = re.compile(r"\bI\b")


def near_miss(new: str, cached: str, rules: tuple[str, ...] = RULES) -> str | None:
    """Why ``cached``'s answer may be wrong for ``new`` (the rule that fired), or None."""
    new, cached = recased(new, cached), recased(cached, new)
    n, c = features(new), features(cached)
    if "number" in rules and n.numbers != c.numbers and not _one_for_article(n, c):
        return "number"
    if "code" in rules and (_code_missing(n, c) or _code_missing(c, n)):
        return "code"
    if "case" in rules and _case_conflict(n, c):
        return "case"
    if "negation" in rules and n.negated != c.negated:
        return "negation"
    if "prefix" in rules and (_prefixed(n.words, c.words) or _prefixed(c.words, n.words)):
        return "prefix"
    if "term" in rules and (missing(n, c, _STOP) or missing(c, n, _STOP)):
        return "term"
    if "sibling" in rules and siblings(n, c, _STOP):
        return "sibling"
    if "degree" in rules and (_degree(n.words, c.words) or _degree(c.words, n.words)):
        return "degree"
    if "antonym" in rules:
        for x, y in _ANTONYMS:
            if (x in n.words and y in c.words and y not in n.words and x not in c.words) or (
                y in n.words and x in c.words and x not in n.words and y not in c.words
            ):
                return "antonym"
    if "polarity" in rules and (polarity(n, c) or polarity(c, n)):
        return "polarity"
    if "quantifier" in rules:
        qn, qc = quantities(n.seq, _STOP), quantities(c.seq, _STOP)
        if qn - qc and qc - qn:  # one class put in another's place, not one added
            return "quantifier"
        if one_against_many(n.seq, c.seq, _STOP) or one_against_many(c.seq, n.seq, _STOP):
            return "quantifier"
    if "time" in rules and relative_time(n, c):
        return "time"
    if "direction" in rules and not (n.words & _SYMMETRIC and c.words & _SYMMETRIC):
        keys = (n.words & c.words) - (
            _STOP - (n.protected & c.protected)
        )  # a protected "List" is a key
        pn, pc = _direction_pairs(n.seq, keys), _direction_pairs(c.seq, keys)
        if any((y, x) in pc and (x, y) not in pc for x, y in pn):
            return "direction"
    sn, sc = _unpolite(n.seq), _unpolite(c.seq)
    coordinated = _coordinated(_core(sn), _core(sc)) or (_compares(n.words) and _compares(c.words))
    if "order" in rules:
        if sn != sc and sorted(sn) == sorted(sc) and not moved_block(sn, sc) and not coordinated:
            return "order"
    if "question" in rules:
        if asks_differently(question_kinds(n.seq, n.starts), question_kinds(c.seq, c.starts)):
            return "question"
    if (
        "swap" in rules
        and not coordinated
        and (_PASSIVE in n.words) == (_PASSIVE in c.words)
        and (
            swapped(n.seq, c.seq, _STOP)
            or roles_swapped(n.seq, c.seq, _STOP)
            or pivot_swapped(n.seq, c.seq, _STOP)
        )
    ):
        return "swap"
    if "swap" in rules and (possessors_swapped(n.low, c.low) or voice_flipped(n.seq, c.seq, _STOP)):
        return "swap"
    if "swap" in rules and (gerund_voice(n.seq, c.seq) or gerund_voice(c.seq, n.seq)):
        return "swap"
    if "swap" in rules and (
        asker_flipped(n.seq, c.seq, _STOP) or asker_flipped(c.seq, n.seq, _STOP)
    ):
        return "swap"
    if "antonym" in rules and opposite_in_place(n.seq, c.seq, _ANTONYM_SET):
        return "antonym"  # last: a pair the rules above name keeps their reason
    return None


_NOT_TERM = tuple(r for r in RULES if r != "term")


def term_only(new: str, cached: str) -> bool:
    """The "term" rule is the only one that fires, and on one side only: one prompt names a
    protected term the other lacks while the other names none the first lacks ("How many
    continents are there?" / "... on Earth?", "check memory usage on a Linux server" / "linux
    box: how much RAM is used"). A swap of terms ("Docker on Ubuntu" / "on Fedora") is not
    one. Only such a veto may be overruled, by the pair cross-encoder
    (:func:`~trioproxy.cache.cross_encoder.serves` with ``term_veto``)."""
    new, cached = recased(new, cached), recased(cached, new)
    n, c = features(new), features(cached)
    if (missing(n, c, _STOP) is None) == (missing(c, n, _STOP) is None):
        return False
    return near_miss(new, cached, _NOT_TERM) is None


__all__ = ["RULES", "near_miss", "recased", "term_only"]
