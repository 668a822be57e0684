"""What the simulator answers: a parsed request, a deterministic answer plan.

The answer text is a function of the last user message and the length only:
words from a fixed vocabulary picked by a PRNG seeded with a CRC of the text,
with commas and full stops. Every piece of ``Plan.pieces`` is exactly one
:func:`~trioproxy.core.tokens.estimate_tokens` token and the pieces are exactly
``split_tokens(text)``, so a client counting the streamed chunks gets the
simulator's own count.

A request gets a tool call instead of text when it declares tools, its last
message is a user message and that message contains the word "weather": the
first tool is called with ``{<first property>: <city>}``. A request that asks for JSON
gets JSON (:mod:`.structured`), whatever ``n_tokens`` says.

Prompt caching is modelled by :mod:`.prompt_cache` (``Plan.cache``). A reasoning
model (OpenAI wire, a name matching :data:`REASONING_MODEL`) also spends
:data:`REASONING_PER_TOKEN` hidden reasoning tokens per visible output token,
reported in ``completion_tokens_details.reasoning_tokens`` and billed as output.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from trioproxy.core.tokens import content_text, estimate_tokens, split_tokens
from trioproxy.simulator.prompt_cache import NO_CACHE, CachePrompt, CacheSplit
from trioproxy.simulator.structured import json_answer

SimFinish = Literal["stop", "length", "tool_calls"]

VOCABULARY = (
    "the", "gateway", "routes", "every", "request", "to", "a", "model", "and", "streams",
    "tokens", "back", "while", "budgets", "stay", "exact", "trio", "keeps", "tasks", "in",
    "nurseries", "so", "nothing", "leaks", "fallback", "chains", "try", "next", "provider",
    "when", "one", "fails", "cache", "answers", "repeat", "questions", "quickly", "ledger",
    "records", "usage", "for", "each", "team", "hedging", "races", "two", "attempts", "first",
    "byte", "wins", "simulator", "speaks", "wire", "formats", "over", "real", "sockets",
    "with", "faults", "latency", "is", "measured", "not", "guessed",
)  # fmt: skip
CITIES = ("Paris", "Lisbon", "Oslo", "Kyoto", "Lima", "Nairobi", "Austin", "Hanoi")
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)
REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")
REASONING_PER_TOKEN = 2


class BadRequest(ValueError):
    """The request body is invalid; the message goes into the provider's envelope."""


@dataclass(frozen=True, slots=True)
class Intent:
    """A validated chat request, reduced to what shapes the answer."""

    model: str
    input_tokens: int
    seed_text: str
    """The last user message's text."""
    max_tokens: int | None
    stream: bool
    include_usage: bool
    tool: tuple[str, str] | None
    """(tool name, argument key) when the answer is a tool call."""
    cache_prompt: CachePrompt | None = None
    """The prompt as the provider's prompt cache sees it."""
    reasoning: bool = False
    """A reasoning model: hidden reasoning tokens are billed as output."""
    choices: int = 1
    """OpenAI's ``n``: how many answers (non-stream; each the same text)."""
    encrypted_reasoning: bool = False
    """The Responses wire's ``include`` asks for ``reasoning.encrypted_content``."""
    json_schema: Mapping[str, Any] | None = None
    """The answer is JSON (:mod:`.structured`): following this schema, any object if empty."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The answer to send, fixed before the first byte."""

    id: str
    model: str
    created: int
    input_tokens: int
    pieces: tuple[str, ...]
    """Streamed one per content chunk: text tokens, or tool-call argument tokens."""
    finish: SimFinish
    include_usage: bool
    tool_name: str | None = None
    tool_id: str = ""
    """Hex; each wire adds its own prefix (``call_`` / ``toolu_``)."""
    """Hex; each wire adds its prefix (``call_`` / ``toolu_``)."""
    head_tokens: int = 0
    """Tokens delivered with the stream preamble (the tool name)."""
    cache: CacheSplit = NO_CACHE
    """How the prompt's tokens were billed by the prompt cache."""
    reasoning_tokens: int = 0
    """Hidden, billed as output, part of :attr:`billed_output`."""
    odd_usage: str | None = None
    """A JSON literal sent instead of every usage count (the ``usage`` fault)."""
    odd_late: bool = False
    """Only the stream's last usage is odd (the ``late_usage`` fault)."""
    choices: int = 1
    """Answers in a non-stream completion (OpenAI's ``n``), billed each."""
    no_usage: bool = False
    """Send no usage where the wire allows it (the ``no_usage`` fault)."""
    encrypted_reasoning: bool = False
    """A reasoning item carries its ``encrypted_content`` (Responses wire)."""
    stream_reasoning: bool = False
    """Stream the reasoning as ``reasoning_content`` deltas (OpenAI wire; a fault)."""

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def output_tokens(self) -> int:
        """Visible output tokens (what is delivered)."""
        return self.head_tokens + len(self.pieces)

    @property
    def billed_output(self) -> int:
        return self.output_tokens + self.reasoning_tokens

    @property
    def uncached_input(self) -> int:
        c = self.cache
        return self.input_tokens - c.read - c.write_5m - c.write_1h


class Wire(Protocol):
    """One provider's wire format, as the simulator writes it."""

    name: str
    path: str
    end_event: bytes
    """The stream's last event when it is only an end marker (``[DONE]``, ``message_stop``);
    empty when the final event carries the answer's end (the Responses wire's)."""

    def parse(self, body: Any) -> Intent:
        """Validate a decoded JSON body; raises :class:`BadRequest`."""
        ...

    def error_body(self, status: int, message: str) -> bytes: ...

    def completion(self, plan: Plan) -> bytes: ...

    def stream_head(self, plan: Plan) -> bytes: ...

    def stream_prelude(self, plan: Plan) -> list[bytes]:
        """Events written one per chunk, paced as content is, before it (Claude's thinking)."""
        ...

    def chunk_encoder(self, plan: Plan) -> Callable[[str], bytes]:
        """A fast encoder of one content piece into one SSE event."""
        ...

    def stream_tail(self, plan: Plan) -> bytes: ...


@functools.lru_cache(maxsize=4096)
def answer_pieces(seed_text: str, n_tokens: int) -> tuple[str, ...]:
    """``n_tokens`` deterministic estimator tokens, each with its leading space."""
    rng = random.Random(zlib.crc32(seed_text.encode("utf-8", "replace")))
    pieces: list[str] = []
    sentence = 0
    for i in range(n_tokens):
        last = i == n_tokens - 1
        if sentence >= 4 and (last or rng.random() < 0.15):
            pieces.append("." if last or rng.random() < 0.6 else ",")
            sentence = 0
            continue
        word = rng.choice(VOCABULARY)
        if sentence == 0 and (not pieces or pieces[-1] == "."):
            word = word.capitalize()
        pieces.append(word if i == 0 else " " + word)
        sentence += 1
    return tuple(pieces)


def thinking_pieces(plan: Plan) -> tuple[str, ...]:
    """A plan's thinking, one estimator token a piece (its reasoning tokens)."""
    return answer_pieces("thinking", plan.reasoning_tokens)


def tool_arguments(seed_text: str, key: str) -> str:
    city = CITIES[zlib.crc32(seed_text.encode("utf-8", "replace")) % len(CITIES)]
    return orjson.dumps({key: city}).decode()


def wants_tool(
    messages: Sequence[Mapping[str, Any]],
    tools: Any,
    name_and_key: Callable[[Any], tuple[str, str]],
) -> tuple[str, str] | None:
    if not isinstance(tools, list) or not tools or not messages:
        return None
    last = messages[-1]
    if last.get("role") != "user" or not _WEATHER.search(content_text(last.get("content"))):
        return None
    return name_and_key(tools[0])


def first_property(schema: Any) -> str:
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    if isinstance(props, Mapping) and props:
        return str(next(iter(props)))
    return "location"


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return content_text(m.get("content"))
    return ""


def checked_messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: must be a non-empty array")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages.{i}: must be an object with a role")
    return messages


def checked_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: field required")
    return model


def checked_max_tokens(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"{field}: must be an integer >= 1")
    return value


def make_plan(
    intent: Intent, n_tokens: int, id_prefix: str, created: int, cache: CacheSplit = NO_CACHE
) -> Plan:
    """The answer for ``intent``: ``n_tokens`` long, cut at ``max_tokens``.

    Tool calls are never cut; their output tokens are the tool name's plus the
    arguments' tokens.
    """
    rid = id_prefix + os.urandom(12).hex()
    if intent.tool is not None:
        name, key = intent.tool
        args = tool_arguments(intent.seed_text, key)
        plan = Plan(
            rid, intent.model, created, intent.input_tokens, tuple(split_tokens(args)),
            "tool_calls", intent.include_usage, name, rid[-24:],
            estimate_tokens(name), cache,
        )  # fmt: skip
    else:
        finish: SimFinish = "stop"
        pieces = (
            answer_pieces(intent.seed_text, n_tokens)
            if intent.json_schema is None
            else tuple(split_tokens(json_answer(intent.seed_text, intent.json_schema, VOCABULARY)))
        )
        if intent.max_tokens is not None and intent.max_tokens < n_tokens:
            pieces, finish = pieces[: intent.max_tokens], "length"
        plan = Plan(
            rid, intent.model, created, intent.input_tokens, pieces, finish,
            intent.include_usage, cache=cache,
        )  # fmt: skip
    if intent.reasoning:
        plan = dataclasses.replace(
            plan, reasoning_tokens=REASONING_PER_TOKEN * plan.output_tokens,
            encrypted_reasoning=intent.encrypted_reasoning,
        )  # fmt: skip
    if intent.choices != 1:
        plan = dataclasses.replace(plan, choices=intent.choices)
    return plan


def odd_counts(usage: dict[str, Any], odd: str | None) -> dict[str, Any]:
    """``usage`` with every count (an int, nested too) replaced by the JSON literal ``odd``
    (the ``usage`` fault; written as it is, so a count past 64 bits goes out whole)."""
    if odd is None:
        return usage
    fragment = orjson.Fragment(odd.encode())
    return {
        k: odd_counts(v, odd) if isinstance(v, dict)
        else fragment if isinstance(v, int) and not isinstance(v, bool) else v
        for k, v in usage.items()
    }  # fmt: skip


__all__ = [
    "REASONING_MODEL",
    "REASONING_PER_TOKEN",
    "BadRequest",
    "Intent",
    "Plan",
    "SimFinish",
    "Wire",
    "answer_pieces",
    "make_plan",
    "odd_counts",
    "thinking_pieces",
]
