"""The OpenAI Responses dialect (``POST /v1/responses``), stateless: parsing.

Validates the body and builds the canonical chat form: ``instructions`` become
a leading system message; ``input`` (a string, or items) becomes messages:
``message`` items with ``input_text`` / ``output_text`` / ``input_image`` parts,
``function_call`` items become assistant ``tool_calls`` (consecutive calls
join one assistant turn), ``function_call_output`` items become ``tool``
messages; ``reasoning`` items are dropped (they only mean something to the
model that wrote them). Function ``tools`` and ``tool_choice`` map one to one,
``max_output_tokens`` becomes ``max_tokens``, ``text.format`` becomes
``response_format``.

Stateless: ``previous_response_id``, ``conversation``, ``store: true``,
``background: true`` and ``item_reference`` items are a 400 that names them.
Rendering answers and streams lives in :mod:`.responses_render`.
"""

from __future__ import annotations

from typing import Any

from trioproxy.core.types import ChatRequest
from trioproxy.dialects import _fields as f
from trioproxy.dialects.base import translated
from trioproxy.dialects.openai_check import REASONING_EFFORTS
from trioproxy.errors import invalid

_ROLES = frozenset({"user", "system", "developer", "assistant"})
_TOOL_CHOICES = frozenset({"auto", "none", "required"})
_STATEFUL = (
    ("previous_response_id", "previous_response_id"),
    ("conversation", "conversation"),
)
CHAT_ONLY: dict[str, str | None] = {
    "messages": "the conversation is 'input' (and 'instructions')",
    "max_tokens": "the output cap is 'max_output_tokens'",
    "max_completion_tokens": "the output cap is 'max_output_tokens'",
    "response_format": "a JSON answer is asked with 'text.format'",
    "n": "one answer per request",
    "stop": "there are no stop sequences",
    "functions": "functions are 'tools'",
    "function_call": "'tool_choice' picks a tool",
    "logit_bias": None,
    "presence_penalty": None,
    "frequency_penalty": None,
    "seed": None,
    "logprobs": None,
}
"""Chat Completions fields the Responses API does not know (OpenAI refuses them with
"Unknown parameter"): refused here too, whatever the target, instead of being dropped on a
translated one (a caller that sends ``max_tokens`` would get no cap). Other fields the gateway
does not read pass to an OpenAI target as sent, which judges them."""


def parse_request(body: bytes) -> ChatRequest:
    data = f.load_object(body)
    model = f.req_str(data, "model")
    _refuse_state(data)
    if (key := next((k for k in data if k in CHAT_ONLY), None)) is not None:
        hint = CHAT_ONLY[key]
        where = f" On /v1/responses {hint}." if hint else ""
        raise invalid(f"Unknown parameter: '{key}'.{where}", key)
    stream = bool(f.opt_bool(data, "stream"))
    max_tokens = f.opt_pos_int(data, "max_output_tokens")
    f.opt_number(data, "temperature", 0, 2)
    f.opt_number(data, "top_p", 0, 1)
    f.opt_bool(data, "parallel_tool_calls")
    f.opt_metadata(data)
    end_user = f.end_user(data, "user") or f.end_user(data, "safety_identifier")
    messages: list[dict[str, Any]] = []
    instructions = data.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise invalid("'instructions' must be a string", "instructions")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    messages.extend(_input_messages(data.get("input")))
    chat: dict[str, Any] = {"model": model, "messages": messages}
    if max_tokens is not None:
        chat["max_tokens"] = max_tokens
    for key in ("temperature", "top_p", "parallel_tool_calls"):
        if data.get(key) is not None:
            chat[key] = data[key]
    if tools := f.opt_list(data, "tools"):
        chat["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    if (choice := data.get("tool_choice")) is not None:
        chat["tool_choice"] = _tool_choice(choice)
        f.offered_tool_choice(chat, "tool_choice.name")
    if (fmt := _response_format(f.opt_dict(data, "text"))) is not None:
        chat["response_format"] = fmt
    effort = f.opt_choice(
        f.opt_dict(data, "reasoning"), "effort", REASONING_EFFORTS, "reasoning.effort"
    )
    if effort is not None:
        chat["reasoning_effort"] = effort
    return translated(
        "responses", data, chat, model, stream=stream, max_tokens=max_tokens, end_user=end_user
    )


def _refuse_state(data: dict[str, Any]) -> None:
    for key, param in _STATEFUL:
        if data.get(key) is not None:
            raise invalid(
                f"'{key}' is not supported: this gateway serves the Responses API statelessly "
                "and stores no responses or conversations; send the whole conversation in "
                "'input' instead.",
                param,
            )
    if f.opt_bool(data, "store"):
        raise invalid(
            "'store: true' is not supported: this gateway stores no responses; "
            "omit 'store' or set it to false.",
            "store",
        )
    if f.opt_bool(data, "background"):
        raise invalid("'background: true' is not supported by this gateway.", "background")


def _input_messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        if not value:
            raise invalid("'input' must not be empty", "input")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise invalid("'input' must be a non-empty string or array of items", "input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"'{where}' must be an object", where)
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item, where))
        elif kind == "function_call":
            _function_call(out, item, where)
        elif kind == "function_call_output":
            out.append(_function_output(item, where))
        elif kind == "reasoning":
            continue
        elif kind == "item_reference":
            raise invalid(
                "'item_reference' items are not supported: this gateway stores no items; "
                "send the item itself.",
                f"{where}.type",
            )
        else:
            raise invalid(f"unsupported input item type {kind!r}", f"{where}.type")
    if not any(m["role"] in ("user", "tool") for m in out):
        raise invalid("'input' needs at least one user message or tool output", "input")
    return out


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if not isinstance(role, str) or role not in _ROLES:  # a list or an object is no role
        raise invalid(f"{where}.role must be one of {sorted(_ROLES)}", f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": "system" if role == "developer" else role, "content": content}
    if not isinstance(content, list):
        raise invalid("content must be a string or an array of parts", f"{where}.content")
    parts = [_part(p, role, f"{where}.content[{j}]") for j, p in enumerate(content)]
    if role != "user":
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        return {"role": "system" if role == "developer" else role, "content": text}
    return {"role": "user", "content": parts}


def _part(part: Any, role: str, where: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise invalid(f"'{where}' must be an object", where)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "refusal"):
        text = part.get("text" if kind != "refusal" else "refusal")
        if not isinstance(text, str):
            raise invalid(f"{kind} parts need a string text", f"{where}.text")
        return {"type": "text", "text": text}
    if kind == "input_image" and role == "user":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise invalid(
                "input_image parts need an 'image_url' (file_id is not supported)",
                f"{where}.image_url",
            )
        image: dict[str, Any] = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise invalid(f"unsupported content part type {kind!r} for role {role}", f"{where}.type")


def _function_call(out: list[dict[str, Any]], item: dict[str, Any], where: str) -> None:
    call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(args, str):
        raise invalid("function_call items need 'call_id', 'name' and 'arguments' strings", where)
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
    last = out[-1] if out else None
    if last is not None and last["role"] == "assistant" and "tool_calls" in last:
        last["tool_calls"].append(call)
    elif last is not None and last["role"] == "assistant":
        last["tool_calls"] = [call]
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})


def dropped_from_chat(body: dict[str, Any]) -> list[Any]:
    """What the canonical chat form leaves out of a Responses request that still reaches the
    provider and shapes the answer: a function output's parts beyond its text (images) and
    ``reasoning`` items."""
    items = body.get("input")
    out: list[Any] = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        output = item.get("output")
        if item.get("type") == "function_call_output" and isinstance(output, list):
            out.extend(
                p for p in output if not (isinstance(p, dict) and p.get("type") == "input_text")
            )
        elif item.get("type") == "reasoning":
            out.append(item)
    return out


def _function_output(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str):
        raise invalid("function_call_output items need a 'call_id'", f"{where}.call_id")
    if isinstance(output, list):
        output = "".join(
            p["text"]
            for p in output
            if isinstance(p, dict) and p.get("type") == "input_text"
            and isinstance(p.get("text"), str)
        )  # fmt: skip
    if not isinstance(output, str):
        raise invalid("function_call_output 'output' must be a string", f"{where}.output")
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise invalid(f"'{where}' must be an object", where)
    if tool.get("type") != "function":
        raise invalid(
            f"only function tools are supported (got {tool.get('type')!r})", f"{where}.type"
        )
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise invalid("function tools need a 'name'", f"{where}.name")
    fn: dict[str, Any] = {"name": name}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            fn[key] = tool[key]
    return {"type": "function", "function": fn}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if isinstance(name, str) and name:
            return {"type": "function", "function": {"name": name}}
    raise invalid(
        "'tool_choice' must be 'auto', 'none', 'required' or {type: function, name}",
        "tool_choice",
    )


def _response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    fmt = f.opt_dict(text, "format", "text.format")
    kind = fmt.get("type")
    if not fmt or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not isinstance(schema, dict):
            raise invalid("json_schema formats need a 'name' and a 'schema'", "text.format")
        spec = {"name": name, "schema": schema}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        return {"type": "json_schema", "json_schema": spec}
    raise invalid(f"unsupported text.format type {kind!r}", "text.format.type")


__all__ = ["dropped_from_chat", "parse_request"]
