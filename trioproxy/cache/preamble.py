"""Words around a question that do not change its answer: a preamble ("Hey, quick question:",
"I'm new to this,", "I was told to ask here:", "I've been wondering for a while now,", "I can't
remember,", a conversation's "Thanks! Now," or "Thanks in advance -") and a sign-off ("Thanks
in advance.", "I'm curious.", or, after the end of the question, an aside that asks for
nothing more: "... ? Any ideas?", "... ? I've always wondered."), taken
off before a prompt is embedded (:func:`~trioproxy.cache.aliases.embedding_text`) and before
the guard reads it (:mod:`~trioproxy.cache.prompt_features`), so that "Hey, quick question:
how many ounces are in a cup?" is the prompt "how many ounces are in a cup?".

Only fixed phrases that say nothing about the question are here; a preamble that gives
context ("I'm on Windows, how do I ...", "My laptop is slow, ...") stays. Pure: a string in,
a string out.
"""

from __future__ import annotations

import re

_GREETING = r"(?:(?:hey|hi|hello)(?: there)?[,!.]*\s*)?"
_PREAMBLE = re.compile(
    r"^\s*"
    + _GREETING
    + r"(?:quick question|random question|(?:a )?(?:dumb|silly|stupid|basic|noob) question"
    r"|sorry if this is (?:a )?(?:dumb|silly|stupid|basic) question"
    r"|(?:i'm|i am|im) new to (?:this|all this|programming|coding)"
    r"|(?:so,? )?(?:i was|i've been|i have been|i've just been) (?:just )?wondering"
    r"(?: for (?:a while|ages|a bit)(?: now)?)?"
    r"|just wondering|i was told to ask here"
    r"|i (?:can't|cannot|can not|don't|do not) (?:remember|recall))"
    r"\s*[:,;.!?\-\u2013\u2014]+\s*",
    re.IGNORECASE,
)
_OPENER = re.compile(
    r"^\s*"
    r"(?:(?:thanks|thank you|thx)(?: so much| a lot)?(?: in advance)?\s*[,!.:;\-\u2013\u2014]+\s*"
    r"|(?:ok|okay|great|cool|perfect|awesome|got it)[,!.]+\s*)?"
    r"(?:(?:now|next|also|so|one more (?:thing|question)|another question|next question"
    r"|follow[- ]up(?: question)?)\s*[:,;.!?\-\u2013\u2014]+\s*)?",
    re.IGNORECASE,
)
"""A turn of a conversation opening with thanks (also given in advance: "Thanks in advance -
what is ...") or a word that moves on ("Thanks! Now, how do I ...", "OK. Next question: ...",
"Great, also: ..."); each part needs its punctuation, so "Is it OK to ..." and "Now what?"
stay."""
_SIGN_OFF = re.compile(
    r"[\s,.!-]*(?:(?:thanks|thank you|thx)(?: so much| a lot)?(?: in advance)?"
    r"|(?:i'm|i am|im|just) curious|any help (?:is )?appreciated"
    r"|(?:i'm|i am|im) (?:new|a beginner|new to this|a newbie))[\s.!]*$",
    re.IGNORECASE,
)

_ASIDE = re.compile(
    r"(?<=[?.!,])\s*(?:any (?:ideas|tips|advice|suggestions|thoughts)"
    r"|(?:i've|i have|ive) always wondered|(?:i'm |i am |im )?just wondering)[\s.!?]*$",
    re.IGNORECASE,
)
"""An aside after the question's end ("Why do cats purr? I've always wondered.", "How do I
fix it? Any ideas?"): it asks for nothing the question does not; not in the question
("any ideas for a gift" stays)."""


def without_filler(text: str) -> str:
    """``text`` without a filler preamble at its start and a thanks at its end (unchanged
    when nothing would be left)."""
    plain = text.replace("\u2019", "'")
    rest = _SIGN_OFF.sub("", _PREAMBLE.sub("", _OPENER.sub("", plain, count=1), count=1))
    rest = _ASIDE.sub("", rest)
    return text if rest == plain else rest.strip() or text


__all__ = ["without_filler"]
