"""The simulator's model of the providers' prompt caches (pure; time is an input).

A prompt is reduced to a :class:`CachePrompt`: its total tokens (the same count the simulator
reports as input, :func:`~trioproxy.core.tokens.prompt_tokens`) and the prefixes a cache can
match, each with a key that hashes the model and everything up to that point (``cache_control``
markers themselves are not part of the key). Tool definitions count 0 tokens here, as in the
simulator's input count, but are part of every key.

* **Anthropic** (explicit markers): a block carrying ``cache_control`` ends a cacheable prefix
  (``ttl`` ``"1h"`` or the default 5 minutes) if it is at least :data:`ANTHROPIC_MIN_TOKENS`
  long. The longest marked prefix still cached is *read* (and its lifetime refreshed); the
  tokens from there to the last cacheable marker are *written*, each stretch between two markers
  with the TTL of the marker that ends it; the rest is uncached input.
* **OpenAI** (automatic): prompts of at least :data:`OPENAI_MIN_TOKENS` tokens are cached in
  :data:`OPENAI_STEP`-token increments; ``cached_tokens`` is the longest such prefix seen within
  :data:`OPENAI_TTL_S` (refreshed on use). ``prompt_cache_key`` is part of the key. Writes are
  free and not reported.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from trioproxy.core.tokens import MESSAGE_OVERHEAD, content_text, estimate_tokens

ANTHROPIC_MIN_TOKENS = 1024
OPENAI_MIN_TOKENS = 1024
OPENAI_STEP = 128
OPENAI_TTL_S = 300.0
TTL_S = {"5m": 300.0, "1h": 3600.0}
MAX_ENTRIES = 100_000
"""Oldest entries are dropped beyond this (a cache is never a memory leak)."""

_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True, slots=True)
class Prefix:
    tokens: int
    """Prompt tokens up to and including the marked block (or the step boundary)."""
    key: bytes
    ttl_s: float


@dataclass(frozen=True, slots=True)
class CachePrompt:
    total: int
    prefixes: tuple[Prefix, ...]
    """Cacheable prefixes, shortest first."""
    explicit: bool
    """Anthropic-style markers (reads and writes) rather than OpenAI's automatic caching."""


@dataclass(frozen=True, slots=True)
class CacheSplit:
    """How a prompt's tokens are billed; ``total - read - writes`` is uncached input."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0


NO_CACHE = CacheSplit()


def _strip_marker(block: Any) -> bytes:
    if isinstance(block, Mapping) and "cache_control" in block:
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return orjson.dumps(block, option=orjson.OPT_SORT_KEYS)


def _ttl(block: Any) -> float | None:
    marker = block.get("cache_control") if isinstance(block, Mapping) else None
    if not isinstance(marker, Mapping):
        return None
    return TTL_S["1h"] if marker.get("ttl") == "1h" else TTL_S["5m"]


def _blocks(content: Any) -> list[Any]:
    return content if isinstance(content, list) else [content]


def _block_tokens(block: Any) -> int:
    if isinstance(block, str):
        return estimate_tokens(block)
    text = block.get("text") if isinstance(block, Mapping) else None
    return estimate_tokens(text) if isinstance(text, str) else 0


def anthropic_prompt(body: Mapping[str, Any]) -> CachePrompt:
    """Markers on system and message content blocks of an Anthropic messages body."""
    h = hashlib.sha256(orjson.dumps(body.get("model")))
    for tool in body.get("tools") or ():
        h.update(b"\x02" + _strip_marker(tool))
    turns: list[tuple[str, list[Any]]] = []
    if system := body.get("system"):
        turns.append(("system", _blocks(system)))
    for m in body.get("messages") or ():
        turns.append((str(m.get("role")), _blocks(m.get("content"))))
    total = 0
    prefixes: list[Prefix] = []
    for role, blocks in turns:
        total += MESSAGE_OVERHEAD
        h.update(b"\x00" + role.encode())
        for block in blocks:
            total += _block_tokens(block)
            h.update(b"\x01" + _strip_marker(block))
            if (ttl := _ttl(block)) is not None and total >= ANTHROPIC_MIN_TOKENS:
                prefixes.append(Prefix(total, h.copy().digest(), ttl))
    return CachePrompt(total, tuple(prefixes), explicit=True)


def _openai_tokens(messages: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    for m in messages:
        role = str(m.get("role"))
        for _ in range(MESSAGE_OVERHEAD):
            yield "\x00" + role
        yield from _TOKEN.findall(content_text(m.get("content")))
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            yield from _TOKEN.findall(str(fn.get("name", "")))
            yield from _TOKEN.findall(str(fn.get("arguments", "")))


def openai_prompt(body: Mapping[str, Any], total: int) -> CachePrompt:
    """Step boundaries of a chat-completions prompt of ``total`` tokens (none if short)."""
    if total < OPENAI_MIN_TOKENS:
        return CachePrompt(total, (), explicit=False)
    head = [body.get("model"), body.get("prompt_cache_key"), body.get("tools")]
    h = hashlib.sha256(orjson.dumps(head, option=orjson.OPT_SORT_KEYS))
    prefixes: list[Prefix] = []
    for n, token in enumerate(_openai_tokens(body.get("messages") or ()), 1):
        h.update(token.encode() + b"\x00")
        if n >= OPENAI_MIN_TOKENS and n % OPENAI_STEP == 0:
            prefixes.append(Prefix(n, h.copy().digest(), OPENAI_TTL_S))
    return CachePrompt(total, tuple(prefixes), explicit=False)


class PromptCache:
    """What the simulated provider has cached: prefix key -> (expiry, ttl)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: dict[bytes, float] = {}
        self._max = max_entries

    def clear(self) -> None:
        self._entries.clear()

    def _alive(self, key: bytes, now: float) -> bool:
        expiry = self._entries.get(key)
        return expiry is not None and expiry > now

    def _put(self, key: bytes, expiry: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = expiry
        while len(self._entries) > self._max:
            del self._entries[next(iter(self._entries))]

    def use(self, prompt: CachePrompt, now: float) -> CacheSplit:
        """Bill ``prompt`` against the cache at ``now`` and update the cache."""
        hit = next((i for i in range(len(prompt.prefixes) - 1, -1, -1)
                    if self._alive(prompt.prefixes[i].key, now)), None)  # fmt: skip
        read = 0
        if hit is not None:
            p = prompt.prefixes[hit]
            read = p.tokens
            self._put(p.key, now + p.ttl_s)
        start = 0 if hit is None else hit + 1
        writes = {TTL_S["5m"]: 0, TTL_S["1h"]: 0}
        done = read
        for p in prompt.prefixes[start:]:
            if prompt.explicit:
                writes[p.ttl_s] += p.tokens - done
                done = p.tokens
            self._put(p.key, now + p.ttl_s)
        if not prompt.explicit:
            return CacheSplit(read=read)
        return CacheSplit(read, writes[TTL_S["5m"]], writes[TTL_S["1h"]])


__all__ = [
    "ANTHROPIC_MIN_TOKENS",
    "NO_CACHE",
    "OPENAI_MIN_TOKENS",
    "OPENAI_STEP",
    "CachePrompt",
    "CacheSplit",
    "Prefix",
    "PromptCache",
    "anthropic_prompt",
    "openai_prompt",
]
