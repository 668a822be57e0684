from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from trioproxy.cache.entry import CacheEntry, storable
from trioproxy.cache.keys import (
    embedding_key,
    exact_key,
    exact_namespace,
    holds_one_answer,
    is_shareable,
    semantic_namespace,
    semantic_text,
    tenant_scope,
)
from trioproxy.config import parse_settings
from trioproxy.config.model import CacheConfig
from trioproxy.core.types import ChatRequest, Completion, ToolCall, Usage
from trioproxy.pipeline.caching import stored_ttls
from trioproxy.pipeline.routing import chain_key


def req(messages: list[dict[str, Any]] | None = None, **params: Any) -> ChatRequest:
    chat = {"model": "chat", "messages": messages or [{"role": "user", "content": "hi"}], **params}
    return ChatRequest(
        dialect="openai", body=chat, chat=chat, model="chat", stream=False,
        include_usage=False, max_tokens=params.get("max_tokens"),
    )  # fmt: skip


TEAM = CacheConfig()
GLOBAL = CacheConfig(scope="global")


def test_exact_key_ignores_key_order_and_non_answer_fields() -> None:
    a = req(temperature=0, max_tokens=10, stream=True, user="u1")
    b = ChatRequest(
        dialect="anthropic", body={}, chat={"max_tokens": 10, "temperature": 0, "model": "x",
        "messages": [{"content": "hi", "role": "user"}]}, model="x", stream=False,
        include_usage=True, max_tokens=10,
    )  # fmt: skip
    assert exact_key(a, "team:a", "chat") == exact_key(b, "team:a", "chat")


def test_exact_key_reads_a_number_as_its_value() -> None:
    """JSON has one number 0: a client that sends ``"temperature": 0`` (JavaScript) and one
    that sends ``0.0`` (Python) asked the same, and never shared an entry (a newcomer saw
    miss, then exact, on the same prompt at 0 and 0.0)."""
    same = [(req(temperature=0), req(temperature=0.0)), (req(top_p=1), req(top_p=1.0)),
            (req(max_tokens=100, seed=7), req(max_tokens=100.0, seed=7.0))]  # fmt: skip
    for a, b in same:
        assert exact_key(a, "team:a", "chat") == exact_key(b, "team:a", "chat")
    assert exact_key(req(temperature=0.5), "team:a", "chat") != exact_key(
        req(temperature=0), "team:a", "chat"
    )
    huge = req(temperature=1e300)  # not an integer orjson can write: left a float
    assert exact_key(huge, "team:a", "chat") != exact_key(req(temperature=1), "team:a", "chat")


def test_exact_key_changes_with_each_answer_field() -> None:
    base = exact_key(req(), "team:a", "chat")
    variants = [
        req(temperature=0.5), req(top_p=0.9), req(max_tokens=5), req(seed=1), req(stop=["x"]),
        req(n=2), req(tools=[{"type": "function"}]), req(response_format={"type": "json_object"}),
        req([{"role": "user", "content": "hi!"}]),
    ]  # fmt: skip
    keys = {exact_key(v, "team:a", "chat") for v in variants}
    assert base not in keys and len(keys) == len(variants)
    assert exact_key(req(), "team:a", "other-route") != base


def test_exact_key_is_scoped_by_tenant_unless_global() -> None:
    a, b = tenant_scope("a", TEAM), tenant_scope("b", TEAM)
    assert exact_key(req(), a, "chat") != exact_key(req(), b, "chat")
    assert tenant_scope("a", GLOBAL) == tenant_scope("b", GLOBAL) == "global"
    assert exact_key(req(), a, "chat").startswith(exact_namespace(a, "chat") + ":")


def test_semantic_namespace_pins_system_prompt_history_and_buckets() -> None:
    user = {"role": "user", "content": "summarize this document"}
    base = semantic_namespace(req([user], temperature=0), "team:a", "chat")
    assert semantic_namespace(req([user], temperature=0), "team:b", "chat") != base
    sys2 = req([{"role": "system", "content": "be brief"}, user], temperature=0)
    assert semantic_namespace(sys2, "team:a", "chat") != base
    assert semantic_namespace(req([user], temperature=0.5), "team:a", "chat") != base
    # same bucket: 0.2 and 0.3 share one, 0 is its own
    assert semantic_namespace(req([user], temperature=0.2), "team:a", "chat") == semantic_namespace(
        req([user], temperature=0.3), "team:a", "chat"
    )
    assert semantic_namespace(req([user], temperature=0, max_tokens=4000), "team:a", "chat") != base
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}, user]
    assert semantic_namespace(req(history, temperature=0), "team:a", "chat") != base
    # another embedding model's vectors live apart (a model change starts empty, not skewed)
    model_a = semantic_namespace(req([user], temperature=0), "team:a", "chat", "minilm:a")
    assert model_a != semantic_namespace(req([user], temperature=0), "team:a", "chat", "minilm:b")
    assert model_a != base
    assert semantic_text(req(history)) == "summarize this document"


def test_is_shareable() -> None:
    user = [{"role": "user", "content": "q"}]
    assert is_shareable(req(user, temperature=0), TEAM)
    assert not is_shareable(req(user), TEAM)  # no temperature = provider default 1.0
    assert not is_shareable(req(user, temperature=0.9), TEAM)
    assert not is_shareable(req(user, temperature=0, n=2), TEAM)
    tool_turn = [*user, {"role": "assistant", "content": None}, {"role": "tool", "content": "42"},
                 {"role": "user", "content": "and?"}]  # fmt: skip
    assert not is_shareable(req(tool_turn, temperature=0), TEAM)
    assert is_shareable(req(tool_turn, temperature=0), CacheConfig(allow_tools=True))
    assert not is_shareable(req([{"role": "assistant", "content": "x"}], temperature=0), TEAM)


def test_entry_round_trip_and_storable() -> None:
    c = Completion(
        id="r1", model="gpt-x", text="héllo", finish_reason="tool_calls", usage=Usage(3, 4),
        tool_calls=(ToolCall("c1", "f", '{"a":1}'),),
    )  # fmt: skip
    e = CacheEntry.from_completion(c, cost_micros=250_000, now=10.0)
    back = CacheEntry.from_bytes(e.to_bytes())
    assert back == e
    assert back.completion("r2").tool_calls == c.tool_calls
    buckets = Usage(3, 4, cache_read_tokens=9, cache_write_5m_tokens=2, cache_write_1h_tokens=1,
                    reasoning_tokens=3)  # fmt: skip
    e2 = CacheEntry.from_completion(dataclasses.replace(c, usage=buckets), cost_micros=7, now=1.0)
    assert CacheEntry.from_bytes(e2.to_bytes()) == e2
    # an entry stored by the float-USD version still reads (its cost as µUSD)
    v1 = orjson.dumps([1, "hi", "stop", [3, 4, False], "gpt-x", 0.000125, 5.0, []])
    old = CacheEntry.from_bytes(v1)
    assert old.cost_micros == 125 and old.usage == Usage(3, 4)
    assert storable(c)
    assert not storable(Completion("r", "m", "x", "length", Usage(1, 1)))
    assert not storable(Completion("r", "m", "x", "stop", Usage(1, 1, estimated=True)))


def test_exact_key_with_an_owner_is_that_keys_alone() -> None:
    r = req()
    shared = exact_key(r, "team:a", "chat")
    mine, theirs = exact_key(r, "team:a", "chat", "k1"), exact_key(r, "team:a", "chat", "k2")
    assert len({shared, mine, theirs}) == 3
    assert mine.split(":")[0] == shared.split(":")[0]  # same namespace: flushes still reach it


def native(dialect: Any, body: dict[str, Any], chat: dict[str, Any]) -> ChatRequest:
    return ChatRequest(
        dialect=dialect, body=body, chat=chat, model="chat", stream=False,
        include_usage=False, max_tokens=chat.get("max_tokens"),
    )  # fmt: skip


def test_a_field_the_key_does_not_model_still_tells_answers_apart() -> None:
    """A field the gateway passes on but the key's list does not name (OpenAI's
    ``verbosity``, ``modalities``, ``prediction``, ...; Anthropic's ``thinking`` and
    ``top_k``; the Responses API's ``text.verbosity``) changes the answer: two requests that
    differ in one are not repeats of each other (they shared one entry: a cached answer
    without thinking blocks was served to a caller who asked for thinking). Fields that
    only shape delivery or accounting still do not split the key."""
    base = exact_key(req(), "team:a", "chat")
    variants = [
        req(verbosity="high"), req(modalities=["text", "audio"]),
        req(prediction={"type": "content", "content": "x"}), req(web_search_options={}),
        req(some_future_knob=1),
    ]  # fmt: skip
    keys = {exact_key(v, "team:a", "chat") for v in variants}
    assert base not in keys and len(keys) == len(variants)
    same = [
        req(stream=True, stream_options={"include_usage": True}), req(user="u"),
        req(metadata={"a": "b"}), req(store=False), req(service_tier="flex"),
        req(prompt_cache_key="k"), req(safety_identifier="s"),
    ]  # fmt: skip
    assert {exact_key(v, "team:a", "chat") for v in same} == {base}
    assert {semantic_namespace(v, "team:a", "chat") for v in same} == {
        semantic_namespace(req(), "team:a", "chat")
    }
    assert semantic_namespace(req(verbosity="high"), "team:a", "chat") != semantic_namespace(
        req(), "team:a", "chat"
    )

    chat = {"model": "chat", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    plain = {"model": "chat", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    anthropic = [
        native("anthropic", {**plain, "thinking": {"type": "enabled", "budget_tokens": 5}}, chat),
        native("anthropic", {**plain, "top_k": 1}, chat),
    ]
    shared = exact_key(native("openai", chat, chat), "team:a", "chat")
    # a plain Anthropic request still shares the OpenAI caller's entry
    quiet = native("anthropic", {**plain, "stream": True, "metadata": {"user_id": "u"}}, chat)
    assert exact_key(quiet, "team:a", "chat") == shared
    keys = {exact_key(v, "team:a", "chat") for v in anthropic}
    assert shared not in keys and len(keys) == len(anthropic)

    rchat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    rbody = {"model": "chat", "input": "hi", "instructions": None}
    plain_r = exact_key(native("responses", rbody, rchat), "team:a", "chat")
    assert plain_r == exact_key(native("openai", rchat, rchat), "team:a", "chat")
    verbose = native("responses", {**rbody, "text": {"verbosity": "high"}}, rchat)
    assert exact_key(verbose, "team:a", "chat") != plain_r


def test_what_an_entry_cannot_answer_is_kept_out_of_the_cache() -> None:
    """A review's cases: another image behind the same question got the first image's answer
    (semantic compares the text alone); n=2 got one choice and logprobs null from a hit;
    parallel_tool_calls and logprobs did not part semantic namespaces; an embeddings server's
    own fields (input_type) did not key."""
    image = [{"role": "user", "content": [
        {"type": "text", "text": "What animal is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]  # fmt: skip
    assert not is_shareable(req(image, temperature=0), TEAM)
    text_parts = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
    assert is_shareable(req(text_parts, temperature=0), TEAM)
    assert holds_one_answer(req(temperature=0))
    for odd in ({"n": 2}, {"logprobs": True}, {"top_logprobs": 0}):
        assert not holds_one_answer(req(temperature=0, **odd)), odd
    base = semantic_namespace(req(temperature=0), "team:t", "chat")
    for extra in ({"parallel_tool_calls": False}, {"logprobs": True}, {"top_logprobs": 3}):
        assert semantic_namespace(req(temperature=0, **extra), "team:t", "chat") != base, extra
    query = {"model": "e", "input": "x", "input_type": "query"}
    assert embedding_key(query, "team:t", "embed") != embedding_key(
        {**query, "input_type": "passage"}, "team:t", "embed")  # fmt: skip
    assert embedding_key(query, "team:t", "embed") == embedding_key(
        {**query, "model": "other", "user": "u"}, "team:t", "embed")  # fmt: skip


def test_an_image_in_a_tool_result_keys_the_answer() -> None:
    """The chat form keeps a tool result's text: two requests that differed only in the
    image a tool returned shared an exact entry (the provider saw the image)."""
    from trioproxy.dialects import DIALECTS

    def anthropic(data: str) -> ChatRequest:
        image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": data}}  # fmt: skip
        body = {"model": "chat", "max_tokens": 50, "messages": [
            {"role": "user", "content": "what is in the picture?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "snap",
                                               "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": [{"type": "text", "text": "a photo"},
                                                      image]}]},
        ]}  # fmt: skip
        return DIALECTS["anthropic"].parse_request(orjson.dumps(body))

    def responses(data: str) -> ChatRequest:
        body = {"model": "chat", "input": [
            {"role": "user", "content": "what is in the picture?"},
            {"type": "function_call", "call_id": "c1", "name": "snap", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": [
                {"type": "input_text", "text": "a photo"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{data}"}]},
        ]}  # fmt: skip
        return DIALECTS["responses"].parse_request(orjson.dumps(body))

    for make in (anthropic, responses):
        a, b = make("AAAA"), make("BBBB")
        assert exact_key(a, "team:t", "chat") != exact_key(b, "team:t", "chat"), make
        assert semantic_namespace(a, "team:t", "chat") != semantic_namespace(b, "team:t", "chat")


def test_anthropic_beta_features_key_the_answer() -> None:
    """``anthropic-beta`` values change what the model answers (interleaved thinking, a
    longer output): requests that differ only in them are not repeats, in the exact key and
    the semantic namespace; the same values in another order are."""
    plain = req()
    thinking = dataclasses.replace(plain, anthropic_beta=("interleaved-thinking-2025-05-14",))
    both = dataclasses.replace(
        plain, anthropic_beta=("output-128k-2025-02-19", "interleaved-thinking-2025-05-14")
    )
    swapped = dataclasses.replace(both, anthropic_beta=tuple(reversed(both.anthropic_beta)))
    exact = [exact_key(r, "team:a", "chat") for r in (plain, thinking, both)]
    assert len(set(exact)) == 3
    assert exact_key(swapped, "team:a", "chat") == exact[2]
    spaces = [semantic_namespace(r, "team:a", "chat") for r in (plain, thinking, both)]
    assert len(set(spaces)) == 3
    assert semantic_namespace(swapped, "team:a", "chat") == spaces[2]


def test_a_callers_cache_ttl_shortens_the_routes_never_lengthens_it() -> None:
    """An answer is served to the rest of the team (or everyone, on a global route) as long
    as it is stored: the route's TTLs are a ceiling a caller may lower, not raise."""
    cfg = CacheConfig(exact_ttl_s=3600, semantic_ttl_s=600)
    assert stored_ttls(cfg, None) == (3600, 600)
    assert stored_ttls(cfg, 60) == (60, 60)
    assert stored_ttls(cfg, 1800) == (1800, 600)
    assert stored_ttls(cfg, 1_000_000_000) == (3600, 600)


def test_the_chain_a_route_chose_keys_the_answer() -> None:
    """A route's chains answer with other models (a premium chain for high priority): the
    chain chosen keys exact entries, semantic namespaces and embeddings answers, and a route
    of one chain keys nothing more (its keys stay as they were)."""
    plain = req()
    premium = dataclasses.replace(plain, chain="premium")
    assert exact_key(premium, "team:a", "chat") != exact_key(plain, "team:a", "chat")
    assert semantic_namespace(premium, "team:a", "chat") != semantic_namespace(
        plain, "team:a", "chat"
    )
    body = {"model": "embed", "input": ["x"]}
    assert embedding_key(body, "team:a", "embed", "large") != embedding_key(body, "team:a", "embed")
    settings = parse_settings(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9", "api_key_env": "K"}},
            "models": {m: {"provider": "p", "input_per_mtok": 1, "output_per_mtok": 1} for m in "ab"},
            "routes": {
                "one": {"chains": {"default": [{"model": "a"}]}},
                "two": {"chains": {"default": [{"model": "a"}], "premium": [{"model": "b"}]},
                        "rules": [{"chain": "premium", "priority": ["high"]}]},
            },
            "api_keys": [{"name": "k", "key_sha256": "0" * 64, "team": "t"}],
        },
        env={"K": "x"},
    )  # fmt: skip
    assert chain_key(settings.routes["one"], "default") == ""
    assert chain_key(settings.routes["two"], "default") == "default"
    assert chain_key(settings.routes["two"], "premium") == "premium"


def test_thinking_and_reasoning_answers_are_kept_out_of_the_cache() -> None:
    """An entry keeps text and tool calls: an Anthropic caller's thinking blocks (with the
    signatures it must pass back with a tool-use turn) or a Responses caller's reasoning
    items would be lost from a hit, and filling the entry decoded the stream, which dropped
    them from the live answer too (a review: [thinking, text, tool_use] became [text,
    tool_use] on a route with a cache)."""
    anthropic = dataclasses.replace(req(temperature=0), dialect="anthropic")
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    assert not holds_one_answer(dataclasses.replace(anthropic, body={**anthropic.body, **thinking}))
    off = {"thinking": {"type": "disabled"}}
    assert holds_one_answer(dataclasses.replace(anthropic, body={**anthropic.body, **off}))
    responses = dataclasses.replace(req(temperature=0), dialect="responses")
    for extra in ({"reasoning": {"effort": "low", "summary": "auto"}},
                  {"include": ["reasoning.encrypted_content"]}):  # fmt: skip
        assert not holds_one_answer(
            dataclasses.replace(responses, body={**responses.body, **extra})
        )
    assert holds_one_answer(responses)
