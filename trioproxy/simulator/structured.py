"""JSON answers for structured-output requests (pure).

A request that asks for JSON (OpenAI's ``response_format`` ``json_object`` / ``json_schema``,
the Responses API's ``text.format``) is answered with JSON, as a real model in JSON mode
answers: an object whose string values are the simulator's deterministic words. With a
schema, the object follows it: every property (``required`` or not) with a value of its
type (the first ``enum`` / ``const`` value when it has one), arrays of one item, nested
objects and ``$ref``s into ``$defs`` / ``definitions`` followed to a bounded depth. Without
one, ``{"answer": "..."}``. What the schema language has beyond that (``anyOf`` picks its
first branch, formats and patterns are not honoured) is a demo's, not a validator's.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from trioproxy.core.tokens import content_text

MAX_DEPTH = 8
"""Nested objects, arrays and references followed before a value is ``null``."""
WORDS = 4
"""Words in a string value."""

ANY_OBJECT: Mapping[str, Any] = {}
"""A JSON request without a schema (``json_object``): any object."""


def requested_json(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The schema a chat or Responses request's body asks its answer to follow:
    :data:`ANY_OBJECT` for JSON without a schema, ``None`` for text."""
    fmt = body.get("response_format")  # chat completions
    if not isinstance(fmt, Mapping):
        text = body.get("text")  # the Responses API
        fmt = text.get("format") if isinstance(text, Mapping) else None
    if not isinstance(fmt, Mapping):
        return None
    kind = fmt.get("type")
    if kind == "json_object":
        return ANY_OBJECT
    if kind != "json_schema":
        return None
    wrapper = fmt.get("json_schema")  # chat: {"json_schema": {"name", "schema"}}
    schema = wrapper.get("schema") if isinstance(wrapper, Mapping) else fmt.get("schema")
    return schema if isinstance(schema, Mapping) else ANY_OBJECT


_SCHEMA_AT = re.compile(r"JSON Schema\b[^{]{0,200}", re.IGNORECASE)
_JSON_OBJECT = re.compile(r"\bJSON object\b", re.IGNORECASE)


def anthropic_json(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The schema an Anthropic request asks its answer to follow: its structured-output
    format (``output_config.format``, or the beta's ``output_format``: ``{"type":
    "json_schema", "schema": ...}``, what the SDK's ``messages.parse`` sends), else what its
    system prompt asks (:func:`instructed_json`)."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, Mapping) else body.get("output_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        return schema if isinstance(schema, Mapping) else ANY_OBJECT
    return instructed_json(body.get("system"))


def instructed_json(system: Any) -> Mapping[str, Any] | None:
    """The schema an Anthropic request's ``system`` prompt (a string or text blocks) asks the
    answer to follow, as a model follows an instruction (that wire has no JSON mode: the
    gateway writes one, :mod:`trioproxy.providers.anthropic_json`): the first JSON object
    after "JSON Schema", else :data:`ANY_OBJECT` when it asks for a "JSON object", else
    ``None`` (text)."""
    system = content_text(system)
    if (at := _SCHEMA_AT.search(system)) is not None:
        try:
            schema, _ = json.JSONDecoder().raw_decode(system, at.end())
        except ValueError:
            schema = None
        if isinstance(schema, Mapping):
            return schema
    return ANY_OBJECT if _JSON_OBJECT.search(system) else None


def json_answer(seed_text: str, schema: Mapping[str, Any], vocabulary: Sequence[str]) -> str:
    """The answer's JSON text for ``schema``, its strings of ``vocabulary``'s words
    (deterministic in ``seed_text``)."""
    rng = _Words(zlib.crc32(seed_text.encode("utf-8", "replace")), vocabulary)
    if not schema:
        return orjson.dumps({"answer": rng.words()}).decode()
    return orjson.dumps(_value(schema, schema, rng, 0)).decode()


class _Words(random.Random):
    def __init__(self, seed: int, vocabulary: Sequence[str]) -> None:
        super().__init__(seed)
        self.vocabulary = vocabulary

    def words(self) -> str:
        return " ".join(self.choice(self.vocabulary) for _ in range(WORDS)).capitalize()


def _value(schema: Any, root: Mapping[str, Any], rng: _Words, depth: int) -> Any:
    if not isinstance(schema, Mapping) or depth > MAX_DEPTH:
        return None
    if isinstance(ref := schema.get("$ref"), str):
        return _value(_resolve(ref, root), root, rng, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(enum := schema.get("enum"), list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(options := schema.get(key), list) and options:
            return _value(options[0], root, rng, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the first that is not null
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        if not isinstance(props, Mapping):
            return {"answer": rng.words()}
        return {str(k): _value(v, root, rng, depth + 1) for k, v in props.items()}
    if kind == "array":
        return [_value(schema.get("items"), root, rng, depth + 1)]
    if kind == "string":
        return rng.words()
    if kind == "integer":
        return rng.randint(1, 100)
    if kind == "number":
        return round(rng.uniform(1, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def _resolve(ref: str, root: Mapping[str, Any]) -> Any:
    """A local ``#/...`` reference's target in ``root`` (None if it has none)."""
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/") if ref != "#" else ():
        if not isinstance(node, Mapping):
            return None
        node = node.get(part.replace("~1", "/").replace("~0", "~"))
    return node


__all__ = ["ANY_OBJECT", "json_answer", "requested_json"]
