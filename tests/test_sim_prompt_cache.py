"""The simulator's prompt-cache model on explicit times (pure)."""

from __future__ import annotations

from typing import Any

from trioproxy.core.tokens import prompt_tokens
from trioproxy.simulator.prompt_cache import (
    CacheSplit,
    PromptCache,
    anthropic_prompt,
    openai_prompt,
)


def words(n: int, seed: str = "w") -> str:
    """Exactly ``n`` estimator tokens."""
    return " ".join(f"{seed}{i}" for i in range(n))


def marked(text: str, ttl: str | None = None) -> dict[str, Any]:
    marker: dict[str, Any] = {"type": "ephemeral"}
    if ttl:
        marker["ttl"] = ttl
    return {"type": "text", "text": text, "cache_control": marker}


def anthropic_body(system: list[dict[str, Any]], question: str = "q") -> dict[str, Any]:
    return {"model": "claude", "max_tokens": 9, "system": system,
            "messages": [{"role": "user", "content": question}]}  # fmt: skip


def test_anthropic_first_writes_then_reads_then_expires() -> None:
    cache = PromptCache()
    body = anthropic_body([marked(words(2000))])
    prompt = anthropic_prompt(body)
    counted = [{"role": "system", "content": body["system"]}, *body["messages"]]
    assert prompt.total == prompt_tokens(counted) == 4 + 2000 + 4 + 1
    assert cache.use(prompt, now=0.0) == CacheSplit(write_5m=2004)
    assert cache.use(prompt, now=299.0) == CacheSplit(read=2004)  # and refreshed
    assert cache.use(prompt, now=598.0) == CacheSplit(read=2004)
    assert cache.use(prompt, now=898.1) == CacheSplit(write_5m=2004)  # expired: written again
    # another question after the same marked prefix still reads it
    other = anthropic_prompt(anthropic_body([marked(words(2000))], "another question"))
    assert cache.use(other, now=900.0) == CacheSplit(read=2004)


def test_anthropic_ttl_and_two_markers_split_the_writes() -> None:
    cache = PromptCache()
    one = marked(words(1500, "a"), "1h")
    body = anthropic_body([one, marked(words(700, "b"))])
    assert cache.use(anthropic_prompt(body), now=0.0) == CacheSplit(write_5m=700, write_1h=1504)
    # after 10 minutes the 5-minute part is gone, the 1-hour part is read and the rest rewritten
    assert cache.use(anthropic_prompt(body), now=600.0) == CacheSplit(read=1504, write_5m=700)


def test_anthropic_short_or_unmarked_prefixes_are_not_cached() -> None:
    cache = PromptCache()
    short = anthropic_prompt(anthropic_body([marked(words(500))]))
    plain = anthropic_prompt(anthropic_body([{"type": "text", "text": words(3000)}]))
    for now in (0.0, 1.0):
        assert cache.use(short, now) == CacheSplit()
        assert cache.use(plain, now) == CacheSplit()


def test_anthropic_key_ignores_markers_but_not_content_or_model() -> None:
    a = anthropic_prompt(anthropic_body([marked(words(2000))]))
    b = anthropic_prompt({**anthropic_body([marked(words(2000))]), "model": "other"})
    c = anthropic_prompt(anthropic_body([marked(words(2000, "x"))]))
    assert a.prefixes[0].key not in {b.prefixes[0].key, c.prefixes[0].key}
    ttl_changed = anthropic_prompt(anthropic_body([marked(words(2000), "1h")]))
    assert ttl_changed.prefixes[0].key == a.prefixes[0].key


def openai_body(n: int, question: str = "q", key: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [
        {"role": "system", "content": words(n)}, {"role": "user", "content": question}]}  # fmt: skip
    if key is not None:
        body["prompt_cache_key"] = key
    return body


def test_openai_caches_long_prefixes_in_128_token_steps() -> None:
    cache = PromptCache()
    body = openai_body(1500)
    total = prompt_tokens(body["messages"])  # 4 + 1500 + 4 + 1 = 1509
    assert cache.use(openai_prompt(body, total), now=0.0) == CacheSplit()
    assert cache.use(openai_prompt(body, total), now=10.0) == CacheSplit(read=1408)  # 11 x 128
    other = openai_body(1500, "a different question that is longer")
    assert cache.use(openai_prompt(other, prompt_tokens(other["messages"])), 20.0) == CacheSplit(
        read=1408
    )
    keyed = openai_body(1500, key="tenant-7")  # another cache key: another cache
    assert cache.use(openai_prompt(keyed, total), now=30.0) == CacheSplit()
    assert cache.use(openai_prompt(body, total), now=400.0) == CacheSplit()  # expired
    short = openai_body(900)
    n = prompt_tokens(short["messages"])
    assert cache.use(openai_prompt(short, n), 0.0) == cache.use(openai_prompt(short, n), 1.0)
    assert cache.use(openai_prompt(short, n), 2.0) == CacheSplit()


def test_cache_is_bounded() -> None:
    cache = PromptCache(max_entries=3)
    prompts = [anthropic_prompt(anthropic_body([marked(words(1100, f"s{i}"))])) for i in range(5)]
    for p in prompts:
        cache.use(p, 0.0)
    assert cache.use(prompts[0], 1.0) == CacheSplit(write_5m=1104)  # evicted
    assert cache.use(prompts[4], 1.0) == CacheSplit(read=1104)
