"""The OpenAI chat form, checked field by field.

Every field the gateway reads, translates or passes on to a provider is
type-checked here, so a caller's mistake is a 400 in the caller's dialect
before routing, caching or any budget reservation, and nothing malformed
reaches a provider: the fields of OpenAI's chat API too that the gateway only passes
on (``metadata``, ``reasoning_effort``, ``service_tier``, ``store``, ``modalities``...; a
``metadata`` of ``[1]`` or a ``reasoning_effort`` of ``5`` went through). Fields the gateway
does not know at all are passed on as sent (their nesting is bounded by
:func:`._fields.load_object`).
"""

from __future__ import annotations

from typing import Any

from trioproxy.dialects import _fields as f
from trioproxy.errors import invalid

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
TOOL_CHOICES = frozenset({"none", "auto", "required"})
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
REASONING_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high"})
"""OpenAI's reasoning efforts (``none`` on its newer models): the chat form's
``reasoning_effort`` and the Responses API's ``reasoning.effort``."""
PASSED_STRINGS = (
    "service_tier", "verbosity", "prompt_cache_key", "safety_identifier",
)  # fmt: skip
PASSED_OBJECTS = ("prediction", "audio", "web_search_options")
"""Fields of OpenAI's chat API that the gateway passes on without reading: their types."""
MAX_N = 128
"""OpenAI's own limit on ``n``; each answer is reserved for, so it is also a budget bound."""
MAX_STOP = 4
"""OpenAI accepts up to four stop sequences."""


def check_chat(data: dict[str, Any]) -> None:
    """Raise ``CallerError`` (400) for the first field of ``data`` that is malformed."""
    for i, m in enumerate(f.message_list(data)):
        _message(m, f"messages[{i}]")
    stream = f.opt_bool(data, "stream")
    options = f.opt_dict(data, "stream_options")
    f.opt_bool(options, "include_usage", "stream_options.include_usage")
    if data.get("stream_options") is not None and not stream:  # as OpenAI answers it
        raise invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    f.opt_pos_int(data, "max_tokens")
    f.opt_pos_int(data, "max_completion_tokens")
    f.opt_number(data, "temperature", 0, 2)
    f.opt_number(data, "top_p", 0, 1)
    f.opt_number(data, "presence_penalty", -2, 2)
    f.opt_number(data, "frequency_penalty", -2, 2)
    f.opt_pos_int(data, "n", MAX_N)
    f.opt_int(data, "seed", -(2**63), 2**63 - 1)
    f.opt_bool(data, "logprobs")
    f.opt_int(data, "top_logprobs", 0, 20)
    f.opt_bool(data, "parallel_tool_calls")
    f.opt_str(data, "user")
    f.opt_metadata(data)
    f.opt_choice(data, "reasoning_effort", REASONING_EFFORTS)
    for key in PASSED_STRINGS:
        f.opt_str(data, key)
    f.opt_bool(data, "store")
    for i, kind in enumerate(f.opt_list(data, "modalities")):
        if not isinstance(kind, str):
            raise invalid(f"'modalities[{i}]' must be a string", f"modalities[{i}]")
    for key in PASSED_OBJECTS:
        f.opt_dict(data, key)
    _stop(data.get("stop"))
    for i, tool in enumerate(f.objects(f.opt_list(data, "tools"), "tools")):
        _tool(tool, f"tools[{i}]")
    _tool_choice(data.get("tool_choice"))
    f.offered_tool_choice(data, "tool_choice.function.name")
    if (rf := data.get("response_format")) is not None:
        if not isinstance(rf, dict):
            raise invalid("'response_format' must be an object", "response_format")
        if f.opt_choice(rf, "type", RESPONSE_FORMATS, "response_format.type") == "json_schema":
            _json_schema(rf)
    for k, v in f.opt_dict(data, "logit_bias").items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise invalid("'logit_bias' values must be numbers", f"logit_bias.{k}")


def _json_schema(rf: dict[str, Any]) -> None:
    """``response_format.json_schema``: an object with a string ``name``; its ``schema`` an
    object (``"notaschema"`` was answered 200 where OpenAI answers 400)."""
    at = "response_format.json_schema"
    spec = f.req_dict(rf, "json_schema", at)
    if not isinstance(name := spec.get("name"), str) or not name:
        raise invalid(f"'{at}.name' is required and must be a string", f"{at}.name")
    f.opt_dict(spec, "schema", f"{at}.schema")
    f.opt_str(spec, "description", f"{at}.description")
    f.opt_bool(spec, "strict", f"{at}.strict")


def _message(m: dict[str, Any], at: str) -> None:
    role = m.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise invalid(f"{at}.role must be one of {sorted(ROLES)}", f"{at}.role")
    content = m.get("content")
    if isinstance(content, list):
        for j, part in enumerate(f.objects(content, f"{at}.content")):
            _part(part, f"{at}.content[{j}]")
    elif content is not None and not isinstance(content, str):
        raise invalid("content must be a string or an array", f"{at}.content")
    f.opt_str(m, "name", f"{at}.name")
    if role == "tool" and not isinstance(m.get("tool_call_id"), str):
        raise invalid("tool messages need a 'tool_call_id'", f"{at}.tool_call_id")
    calls = f.opt_list(m, "tool_calls", f"{at}.tool_calls")
    if content is None and not (role == "assistant" and (calls or m.get("function_call"))):
        raise invalid(
            f"{role} messages need 'content' (null only in an assistant message with 'tool_calls')",
            f"{at}.content",
        )
    if calls and role != "assistant":
        raise invalid("only assistant messages carry 'tool_calls'", f"{at}.tool_calls")
    for k, call in enumerate(f.objects(calls, f"{at}.tool_calls")):
        where = f"{at}.tool_calls[{k}]"
        if not isinstance(call.get("id"), str):
            raise invalid("tool calls need a string 'id'", f"{where}.id")
        f.opt_choice(call, "type", frozenset({"function"}), f"{where}.type")
        _function_call(f.req_dict(call, "function", f"{where}.function"), f"{where}.function")
    if (legacy := m.get("function_call")) is not None:
        if not isinstance(legacy, dict):
            raise invalid("'function_call' must be an object", f"{at}.function_call")
        _function_call(legacy, f"{at}.function_call")


def _function_call(fn: dict[str, Any], at: str) -> None:
    if not isinstance(fn.get("name"), str):
        raise invalid(f"'{at}.name' must be a string", f"{at}.name")
    if not isinstance(fn.get("arguments", ""), str):
        raise invalid(f"'{at}.arguments' must be a string (JSON text)", f"{at}.arguments")


def _part(part: dict[str, Any], at: str) -> None:
    kind = f.req_type(part, at)
    if kind not in PART_TYPES:
        raise invalid(f"content part type must be one of {sorted(PART_TYPES)}", f"{at}.type")
    if kind in ("text", "refusal"):
        if not isinstance(part.get(kind), str):
            raise invalid(f"{kind} parts need a string '{kind}'", f"{at}.{kind}")
    elif kind == "image_url":
        image = f.req_dict(part, "image_url", f"{at}.image_url")
        if not isinstance(image.get("url"), str):
            raise invalid("image parts need a string 'image_url.url'", f"{at}.image_url.url")
        f.opt_str(image, "detail", f"{at}.image_url.detail")
    else:
        f.req_dict(part, kind, f"{at}.{kind}")


def _stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if (
        not isinstance(stop, list)
        or len(stop) > MAX_STOP
        or not all(isinstance(s, str) for s in stop)
    ):
        raise invalid(f"'stop' must be a string or an array of up to {MAX_STOP} strings", "stop")


def _tool(tool: dict[str, Any], at: str) -> None:
    kind = tool.get("type")
    if kind == "custom":  # OpenAI's free-form tools: passed on, refused by other wires
        custom = f.req_dict(tool, "custom", f"{at}.custom")
        if not isinstance(custom.get("name"), str):
            raise invalid("custom tools need a string 'custom.name'", f"{at}.custom.name")
        return
    if kind != "function":
        raise invalid("tools[].type must be 'function' or 'custom'", f"{at}.type")
    fn = tool.get("function")
    if not isinstance(fn, dict) or not isinstance(name := fn.get("name"), str) or not name:
        raise invalid("function tools need a string 'function.name'", f"{at}.function.name")
    f.opt_str(fn, "description", f"{at}.function.description")
    if fn.get("parameters") is not None:
        f.opt_dict(fn, "parameters", f"{at}.function.parameters")
    f.opt_bool(fn, "strict", f"{at}.function.strict")


def _tool_choice(choice: Any) -> None:
    if choice is None or (isinstance(choice, str) and choice in TOOL_CHOICES):
        return
    if isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return
    raise invalid(
        "'tool_choice' must be none, auto, required or "
        '{"type": "function", "function": {"name": ...}}',
        "tool_choice",
    )


__all__ = ["MAX_N", "MAX_STOP", "PART_TYPES", "REASONING_EFFORTS", "ROLES", "check_chat"]
