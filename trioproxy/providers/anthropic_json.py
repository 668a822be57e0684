"""JSON output on Anthropic targets: OpenAI's ``response_format`` as a system instruction.

Anthropic's messages API has no JSON mode, so a request translated from the chat form
(chat completions or Responses ``text.format``) would otherwise lose the caller's demand
for JSON. The instruction asks for one JSON object, and names the schema when one is
given. It is an instruction, not a constraint: the answer is not validated.
"""

from __future__ import annotations

from typing import Any

import orjson

JSON_ONLY = "Respond with a single valid JSON object only, with no text before or after it."


def json_instruction(response_format: Any) -> str | None:
    """The system instruction for a chat-form ``response_format``; None for plain text."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return JSON_ONLY
    spec = response_format.get("json_schema")
    if kind == "json_schema" and isinstance(spec, dict):
        schema = orjson.dumps(spec.get("schema") or {}).decode()
        return f"{JSON_ONLY} It must conform to this JSON Schema ({spec.get('name', 'output')}): {schema}"
    return None


def with_json_instruction(body: dict[str, Any], response_format: Any) -> dict[str, Any]:
    """``body`` (an Anthropic messages body) with the instruction appended to ``system``
    (a string, or a list of text blocks whose cache markers stay where they are)."""
    instruction = json_instruction(response_format)
    if instruction is None:
        return body
    system = body.get("system")
    if isinstance(system, list):
        body["system"] = [*system, {"type": "text", "text": instruction}]
    else:
        body["system"] = f"{system}\n\n{instruction}" if system else instruction
    return body


__all__ = ["JSON_ONLY", "json_instruction", "with_json_instruction"]
