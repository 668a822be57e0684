"""Hypothesis strategies for hostile request bodies, shared by the fuzz suites.

Three families: *structured* bodies (a rich valid body of each dialect, with
random subtrees or leaves swapped for arbitrary JSON, fields dropped, and
nesting deepened), *byte mutations* of valid bodies, and *raw bytes*.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

MODELS = ("chat", "extract", "gpt-4o-mini", "claude-haiku", "embed")
"""Routes and bare models of the demo config: both provider wires are exercised."""

PNG = "data:image/png;base64,iVBORw0KGgo="

OPENAI_TEMPLATE: dict[str, Any] = {
    "model": "chat",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Really brief."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
            ],
            "name": "ann",
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "user", "content": "thanks"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "look it up",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "stop": ["\n\n", "END"],
    "max_tokens": 20,
    "temperature": 0.5,
    "top_p": 0.9,
    "n": 1,
    "seed": 7,
    "user": "end-1",
    "stream": False,  # (stream_options only with a stream: a 400 otherwise, as OpenAI's)
    "response_format": {"type": "text"},
    "cache_ttl": 60,
}

ANTHROPIC_TEMPLATE: dict[str, Any] = {
    "model": "chat",
    "max_tokens": 20,
    "system": [{"type": "text", "text": "Be brief."}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "tu_1", "name": "lookup", "input": {"q": "x"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "tu_1",
                    "content": [{"type": "text", "text": "42"}],
                    "is_error": False,
                },
                {"type": "text", "text": "thanks"},
            ],
        },
    ],
    "tools": [
        {
            "name": "lookup",
            "description": "look it up",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ],
    "tool_choice": {"type": "auto"},
    "stop_sequences": ["END"],
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 5,
    "metadata": {"user_id": "end-1"},
    "stream": False,
}

RESPONSES_TEMPLATE: dict[str, Any] = {
    "model": "chat",
    "instructions": "Be brief.",
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "What is this?"}]},
        {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": '{"q": "x"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
        {"role": "user", "content": "thanks"},
    ],
    "tools": [{"type": "function", "name": "lookup", "description": "look it up",
               "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}],
    "tool_choice": "auto",
    "max_output_tokens": 20,
    "temperature": 0.5,
    "top_p": 0.9,
    "store": False,
    "metadata": {"k": "v"},
    "text": {"format": {"type": "text"}},
    "stream": False,
}  # fmt: skip

EMBEDDINGS_TEMPLATE: dict[str, Any] = {
    "model": "embed",
    "input": ["What is this?", "thanks"],
    "dimensions": 16,
    "encoding_format": "float",
    "user": "end-1",
}

COUNT_TOKENS_TEMPLATE: dict[str, Any] = {
    key: ANTHROPIC_TEMPLATE[key] for key in ("model", "system", "messages", "tools", "tool_choice")
}

_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "function", "text", "image_url", "user", "tool", "auto", "custom"])
)
ANY_JSON = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _nest(value: Any, depth: int) -> Any:
    for i in range(depth):
        value = [value] if i % 2 else {"x": value}
    return value


@st.composite
def mutated(draw: st.DrawFn, template: Any, rate: float = 0.12) -> Any:
    """``template`` with some subtrees replaced, dropped or nested very deep."""

    def walk(node: Any) -> Any:
        roll = draw(st.floats(0, 1))
        if roll < rate:
            return draw(ANY_JSON)
        if roll < rate * 1.15:
            return _nest(draw(_LEAVES), draw(st.sampled_from([100, 127, 200, 254, 300, 1000])))
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if draw(st.floats(0, 1)) < rate / 3:
                    continue  # a field dropped
                out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(template)


def structured(template: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    def with_model(body: Any, model: str, stream: bool) -> Any:
        if isinstance(body, dict):
            if "model" in body and isinstance(body["model"], str):
                body["model"] = model
            if body.get("stream") is False:
                body["stream"] = stream
        return body

    return st.builds(with_model, mutated(template), st.sampled_from(MODELS), st.booleans())


def dumps(body: Any) -> bytes:
    """JSON text of ``body``; bodies too deep for orjson are written by the stdlib."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        import json
        import sys

        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 5000))
        try:
            return json.dumps(body).encode()
        finally:
            sys.setrecursionlimit(limit)


@st.composite
def byte_mutation(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` with a few bytes flipped, inserted, deleted or the tail cut."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(
                st.binary(min_size=1, max_size=4)
                | st.sampled_from([b"[", b"{", b'"', b"\\u0000", b"\xff"])
            )
        elif op == "delete" and data:
            del data[at]
        elif op == "cut":
            del data[at:]
    return bytes(data)


RAW_BYTES = st.binary(max_size=256) | st.sampled_from(
    [b"", b"null", b"[]", b"{}", b"1e999", b'"x"', b"[" * 2000, b'{"a":' * 600, b"\xef\xbb\xbf{}"]
)

__all__ = [
    "ANTHROPIC_TEMPLATE",
    "ANY_JSON",
    "COUNT_TOKENS_TEMPLATE",
    "EMBEDDINGS_TEMPLATE",
    "MODELS",
    "OPENAI_TEMPLATE",
    "RAW_BYTES",
    "RESPONSES_TEMPLATE",
    "byte_mutation",
    "dumps",
    "mutated",
    "structured",
]
