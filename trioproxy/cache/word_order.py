"""The guard's word-order rules (pure): a phrase moved by a paraphrase, two content words
exchanged (a role swap), two participants exchanged around the same pivot ("a bride give her
bridesmaids" / "bridesmaids give the bride": :func:`pivot_swapped`), and the asker done to on
one side and doing on the other. :mod:`trioproxy.cache.guard` calls them on the word sequences
it extracts; the kinds of question asked are :mod:`~trioproxy.cache.question_kinds`'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_MOVABLE = frozenset(
    "in at on after before for from with within during under over inside outside using "
    "when whenever while if because as".split()
)
"""Prepositions and conjunctions that open a phrase or clause a paraphrase may move ("In
Python, how do I ...", "When hyenas steal its kill, what does a lion do?"; "as" opens the
role the asker speaks in: "As a student, can I ..." / "Can I ... as a student?"). Only a
whole block moves; two participants traded around "as" ("use X as Y" / "use Y as X") move
two blocks and stay an order change."""
_SWAP_MIN = 4
"""Shared content words the swap rule needs (three are too few to tell a role swap from a
rewrite: "version of Node installed" / "installed Node version")."""


def _content(seq: tuple[str, ...], stop: frozenset[str]) -> list[str]:
    return [w for w in seq if w in _CLAUSE or (w not in stop and w not in _FILLER and len(w) > 1)]


_FILLER = frozenset("its their his her his our an to from as so if not".split())
_CLAUSE = frozenset("when whenever while if because".split())
"""Words that open a clause: content for the swap rule, so that two roles traded across
them count ("what does a lion do when hyenas steal its kill" / "what do hyenas do when a
lion steals their kill")."""


def moved_block(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """``b`` is ``a`` with one block of words moved, the block opening with a preposition
    of :data:`_MOVABLE` and at least two words long ("In Fahrenheit, what is ..." /
    "What is ... in Fahrenheit"); or with one manner adverb moved ("delete my account
    permanently" / "permanently delete my account": a word in "-ly" other than the focus
    adverbs of :data:`_FOCUS`, which change what they bear on when they move: "only the admin
    can delete posts" / "the admin can only delete posts"); or with "to not" for "not to"
    ("rude to not tip" / "rude not to tip")."""
    n = len(a)
    if n != len(b) or n > 40:
        return False
    if _adverb_moved(a, b) or _to_not(a) == b or _to_not(b) == a:
        return True
    for i in range(n):
        for j in range(i + 2, n + 1):
            block, rest = a[i:j], a[:i] + a[j:]
            if block[0] not in _MOVABLE:
                continue
            for k in range(len(rest) + 1):
                if k != i and rest[:k] + block + rest[k:] == b:
                    return True
    return False


_FOCUS = frozenset(
    "only nearly merely hardly barely mostly mainly largely partly solely purely fully "
    "exclusively especially particularly simply really actually early likely".split()
)
"""Adverbs in "-ly" whose place says what they bear on ("only", "nearly all" / "all nearly"),
or that are no manner adverbs ("early", "likely"): never moved freely."""


def _adverb_moved(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """``b`` is ``a`` with one manner adverb ("-ly", not :data:`_FOCUS`) put elsewhere."""
    for i, w in enumerate(a):
        if len(w) > 4 and w.endswith("ly") and w not in _FOCUS:
            rest = a[:i] + a[i + 1 :]
            if any(k != i and (*rest[:k], w, *rest[k:]) == b for k in range(len(rest) + 1)):
                return True
    return False


def _to_not(a: tuple[str, ...]) -> tuple[str, ...]:
    """``a`` with each "to not" written "not to"."""
    out = list(a)
    for i in range(len(out) - 1):
        if out[i] == "to" and out[i + 1] == "not":
            out[i], out[i + 1] = "not", "to"
    return tuple(out)


def swapped(a: tuple[str, ...], b: tuple[str, ...], stop: frozenset[str]) -> bool:
    """The content words the two prompts share, in each prompt's order, differ by one
    exchange of two words with at least one word between them ("parent process waits child
    process" / "child process waits parent process"); four shared words at least; and on
    each side a function word stands between the two (:func:`_related_by_words`: "rules for
    a penalty kick in soccer" / "soccer penalty kick rules" is no swap)."""
    pair = _exchanged(a, b, stop)
    return pair is not None and all(_related_by_words(s, *pair, stop) for s in (a, b))


def _exchanged(
    a: tuple[str, ...], b: tuple[str, ...], stop: frozenset[str]
) -> tuple[str, str] | None:
    """The two shared content words exchanged as :func:`swapped` says, function words aside."""
    ca, cb = _content(a, stop), _content(b, stop)
    sa, sb = set(ca), set(cb)
    ra, rb = [w for w in ca if w in sb], [w for w in cb if w in sa]
    if len(ra) != len(rb) or len(ra) < _SWAP_MIN or ra == rb:
        return None
    diffs = [i for i, (x, y) in enumerate(zip(ra, rb, strict=True)) if x != y]
    if len(diffs) != 2:
        return None
    i, j = diffs
    if not (j - i >= 2 and ra[i] == rb[j] and ra[j] == rb[i]):
        return None
    return ra[i], ra[j]


_NOT_ROLE = frozenset("how what whats why when where which who to".split())
"""Function words that say nothing of who does what to whom ("dockerfile env var how to set")."""


def _related_by_words(seq: tuple[str, ...], x: str, y: str, stop: frozenset[str]) -> bool:
    """Between ``x`` and ``y`` (their first places in ``seq``) stands a function word of
    ``stop`` or :data:`_FILLER` other than a question word or "to" (:data:`_NOT_ROLE`): a
    preposition, an article, an auxiliary, a pronoun, that gives the two their roles. A stack
    of content words alone ("soccer penalty kick rules", "free credit score check") is a
    terse query whose order says nothing of roles."""
    if x not in seq or y not in seq:
        return True
    lo, hi = sorted((seq.index(x), seq.index(y)))
    return any((w in stop or w in _FILLER) and w not in _NOT_ROLE for w in seq[lo + 1 : hi])


_DETERMINERS = frozenset("a an the my your his her their its our one".split())
"""Words dropped before :func:`pivot_swapped` looks for its participants ("a bride give her
bridesmaids" / "bridesmaids give the bride")."""
_NOT_PIVOT = frozenset("and or vs versus v nor plus with between like same similar equal".split())
"""Words around which two participants may trade places and ask the same: coordination,
comparison and symmetric relations ("X and Y", "X vs Y", "mix X with Y", "is X like Y")."""
_PARTICIPANT = 3
"""The longest participant (content words in a row: "adult child") and the longest pivot."""


def pivot_swapped(a: tuple[str, ...], b: tuple[str, ...], stop: frozenset[str]) -> bool:
    """Two participants exchange their roles around the same pivot: ``a`` reads "X P Y" where
    ``b`` reads "Y P X" ("a parent claim[s] their adult child" / "an adult child claim[s] their
    parent", "a bride give[s] her bridesmaids" / "bridesmaids give the bride", "a Service
    find[s] its Pods" / "a Pod find[s] a Service"), and the two prompts' content words align
    one to one (the same words, as many times each, a final "s" aside). X and Y are one to
    three content words each, sharing none; the pivot P is one to three words in a row, the
    same on both sides, of which none is a coordinator, a comparison or a symmetric relation
    ("and", "or", "vs", "with", "like", "same": :data:`_NOT_PIVOT`), so "X and Y" / "Y and X"
    and "mix X with Y" / "mix Y with X" still ask the same. Determiners and possessive
    pronouns are left out first (:data:`_DETERMINERS`). Unlike :func:`swapped`, three shared
    content words are enough: the pivot is a whole word-for-word run that stays between them,
    which a rewrite does not keep ("version of Node installed" / "installed Node version")."""
    na, nb = _pivot_words(a), _pivot_words(b)
    ca = sorted(w for w in na if w not in stop and w not in _FILLER and len(w) > 1)
    cb = sorted(w for w in nb if w not in stop and w not in _FILLER and len(w) > 1)
    if ca != cb or na == nb:
        return False
    content = frozenset(ca)
    for i in range(len(na)):
        for lx in range(1, _PARTICIPANT + 1):
            x = na[i : i + lx]
            if len(x) < lx or not all(w in content for w in x):
                break
            for lp in range(1, _PARTICIPANT + 1):
                p = na[i + lx : i + lx + lp]
                if len(p) < lp or any(w in _NOT_PIVOT for w in p):
                    break
                for ly in range(1, _PARTICIPANT + 1):
                    y = na[i + lx + lp : i + lx + lp + ly]
                    if len(y) < ly or not all(w in content for w in y):
                        break
                    if set(x) & set(y) or set(p) & (set(x) | set(y)):
                        continue
                    if _contains(nb, y + p + x):
                        return True
    return False


def _pivot_words(seq: tuple[str, ...]) -> tuple[str, ...]:
    """``seq`` without determiners, a final "s" dropped as :func:`roles_swapped` does."""
    return _persons(tuple(w for w in seq if w not in _DETERMINERS))


def _contains(seq: tuple[str, ...], part: tuple[str, ...]) -> bool:
    k = len(part)
    return any(seq[j : j + k] == part for j in range(len(seq) - k + 1))


_PERSON = {"i": "@i", "me": "@i", "we": "@we", "us": "@we", "he": "@he", "him": "@he",
           "they": "@they", "them": "@they"}  # fmt: skip
"""Personal pronouns by person, the subject and the object form as one ("her" is left out: it
is also a possessive)."""


def roles_swapped(a: tuple[str, ...], b: tuple[str, ...], stop: frozenset[str]) -> bool:
    """A party changes role: one person's pronoun takes another form on each side (subject on
    one, object on the other: "can my landlord sue me" / "can I sue my landlord") and, with
    the forms taken as one word and a verb's final "s" dropped ("owes" / "owe"), the shared
    content words differ by one exchange (:func:`swapped`). A pronoun that keeps its form,
    or moves without another word trading places with it ("help me write" / "I need help
    writing"), does not count."""
    fa, fb = _forms(a), _forms(b)
    if not any(p in fb and forms != fb[p] for p, forms in fa.items()):
        return False
    return _exchanged(_persons(a), _persons(b), stop) is not None


def _forms(seq: tuple[str, ...]) -> dict[str, set[str]]:
    """The forms each person's pronoun takes in ``seq`` ("@i": {"i", "me"})."""
    out: dict[str, set[str]] = {}
    for w in seq:
        if w in _PERSON:
            out.setdefault(_PERSON[w], set()).add(w)
    return out


def _persons(seq: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        _PERSON.get(w) or (w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
        for w in seq
    )


_OBJECT_PREPS = frozenset("with to for".split())
"""Between a verb and its object "me" ("someone shared it *with* me")."""
_ENDINGS = ("ing", "ed", "es", "s", "d")


def _bases(verb: str) -> set[str]:
    """``verb`` and what it is without a regular ending ("asks" -> "ask", "shared" -> "share")."""
    return {verb} | {
        verb[: -len(e)] for e in _ENDINGS if verb.endswith(e) and len(verb) > len(e) + 2
    }


def _objects(seq: tuple[str, ...], stop: frozenset[str]) -> set[str]:
    """Content verbs the asker is the object of: "V me", "V with/to/for me" ("my employee asks
    me", "a calendar someone shared with me")."""
    out: set[str] = set()
    for i, w in enumerate(seq):
        if w != "me" or i == 0:
            continue
        k = i - 2 if seq[i - 1] in _OBJECT_PREPS and i >= 2 else i - 1
        verb = seq[k]
        if verb not in stop and verb not in _FILLER and len(verb) > 2 and verb.isalpha():
            out |= _bases(verb)
    return out


def _subjects(seq: tuple[str, ...]) -> set[str]:
    """Verbs the asker does: the word right after "I" ("I ask my boss", "do I share")."""
    return {b for i, w in enumerate(seq[:-1]) if w == "i" for b in _bases(seq[i + 1])}


def asker_flipped(a: tuple[str, ...], b: tuple[str, ...], stop: frozenset[str]) -> bool:
    """The asker is done to on one side and does the same act on the other: ``a`` has the
    asker as the object of a verb ("my employee asks me for a raise", "my friend lent me $500")
    that ``b`` has the asker do ("I ask my boss for a raise", "I lent my friend $500"), and
    neither side also has it the other way."""
    done_to = _objects(a, stop) - _objects(b, stop)
    return bool(done_to & (_subjects(b) - _subjects(a)))


def voice_flipped(a: tuple[str, ...], b: tuple[str, ...], stop: frozenset[str]) -> bool:
    """One side says in the passive what the other says in the active with the two parties in
    the same places ("users who follow user 42" / "users followed by user 42"): the relation
    is turned round. A passive paraphrase swaps the parties ("the cat chased the dog" / "the
    dog was chased by the cat"), and a party on one side of the verb only is not counted
    ("files the script modified" / "files modified by the script"): the content words
    nearest to the verb on each side are the same on both."""
    if ("by" in a) == ("by" in b):
        return False
    passive, active = (a, b) if "by" in a else (b, a)
    at = passive.index("by")
    verb = passive[at - 1] if at else ""
    if len(verb) < 5 or not verb.endswith(("ed", "en")):
        return False
    base = verb[:-2]
    forms = [i for i, w in enumerate(active) if w not in passive and w.startswith(base[:-1])
             and len(w) <= len(base) + 3]  # fmt: skip
    if len(forms) != 1:
        return False
    v = forms[0]
    left = _nearest(reversed(passive[: at - 1]), stop)
    right = _nearest(passive[at + 1 :], stop)
    return (
        left is not None
        and right is not None
        and left == _nearest(reversed(active[:v]), stop)
        and right == _nearest(active[v + 1 :], stop)
    )


COORDINATORS = frozenset({"and", "or"})
"""Their two sides may trade places: "X and Y" asks what "Y and X" asks, and a choice "X or Y"
what "Y or X" asks ("is a tomato a fruit or a vegetable")."""
_BEFORE_BEING = frozenset("for of about after before on at from without when".split())
"""Words before a passive gerund that make it the asker's own situation ("tips for being
interviewed", "fear of being fired"), not a clause of a longer sentence ("its parameters being
passed in")."""


def gerund_voice(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """One side does the act, the other has it done to them: a passive gerund ("being
    interviewed", "being promoted") where the other side has the active gerund of the same
    verb and no passive one ("tips for interviewing a candidate" / "tips for being interviewed
    as a candidate"); not when ``a`` names the agent with "by" ("being ignored by friends" /
    "friends keep ignoring me")."""
    if "being" in b or "by" in a:  # an agent named: the parties stay (voice_flipped's case)
        return False
    for i, w in enumerate(a[:-1]):
        part = a[i + 1]
        if w != "being" or not i or a[i - 1] not in _BEFORE_BEING:
            continue
        if len(part) < 5 or not part.endswith(("ed", "en")):
            continue
        stems = {part[:-2], part[:-1], part[:-3]}  # "interviewed", "hired", "stopped"
        stems |= {s + "e" for s in stems}  # "interviewing", "hiring", "stopping"
        if any(g[:-3] in stems or g[:-4] in stems for g in b if g.endswith("ing")):
            return True
    return False


def _nearest(words: Iterable[str], stop: frozenset[str]) -> str | None:
    """The first content word of ``words``."""
    return next((w for w in words if w not in stop and w not in _FILLER), None)


_POSSESSIVE = re.compile(r"\b(?=(my|your|our|his|their|[a-z]+'s) ([a-z]+))")
"""A possessive and the word after it, matches overlapping ("my neighbour's kid": neighbour
owned by "my", kid by "neighbour's")."""
_NOT_POSSESSOR = frozenset(
    "it's what's that's let's there's here's who's he's she's where's how's".split()
)


def _possessed(low: str) -> dict[str, str]:
    """Each noun typed right after a possessive, with its possessor ("my dog" -> dog: my,
    "my neighbour's kid" -> kid: neighbour's); a noun owned by two is left out."""
    out: dict[str, str] = {}
    seen: set[str] = set()
    for owner, noun in _POSSESSIVE.findall(low):
        if owner in _NOT_POSSESSOR:
            continue
        if noun in seen and out.get(noun) != owner:
            out.pop(noun, None)
            continue
        seen.add(noun)
        out[noun] = owner
    return out


def possessors_swapped(a: str, b: str) -> bool:
    """The owners of two things trade places ("my dog bit my neighbour's kid" / "my
    neighbour's dog bit my kid"). ``a`` and ``b`` are the prompts in lower case. One owner
    moving to another thing is not counted: paraphrases do it ("your Hugging Face account" /
    "your account on the Hugging Face Hub")."""
    pa, pb = _possessed(a), _possessed(b)
    shared = [n for n in pa if n in pb]
    for i, x in enumerate(shared):
        for y in shared[i + 1 :]:
            if pa[x] != pa[y] and pa[x] == pb[y] and pa[y] == pb[x]:
                return True
    return False


__all__ = [
    "COORDINATORS", "asker_flipped", "gerund_voice", "moved_block", "pivot_swapped",
    "possessors_swapped", "roles_swapped", "swapped", "voice_flipped",
]  # fmt: skip
