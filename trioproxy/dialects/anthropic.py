"""The Anthropic messages dialect (``POST /v1/messages``).

Parsing validates the body and builds the canonical OpenAI chat form:
``system`` becomes a leading system message, ``tool_use`` blocks become
assistant ``tool_calls``, ``tool_result`` blocks become ``tool`` messages,
``tools`` become function tools and ``stop_sequences`` becomes ``stop``.
"""

from __future__ import annotations

from typing import Any

import orjson

from trioproxy.core.tokens import content_text
from trioproxy.core.types import ChatRequest, Completion, Dialect
from trioproxy.core.usage import anthropic_json
from trioproxy.dialects import _fields as f
from trioproxy.dialects.anthropic_stream import STOP_REASONS, AnthropicStreamEncoder, error_body
from trioproxy.dialects.base import dialect_id, translated
from trioproxy.errors import GatewayError, invalid

_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}


def parse_request(body: bytes) -> ChatRequest:
    data = f.load_object(body)
    model = f.req_str(data, "model")
    max_tokens = f.opt_pos_int(data, "max_tokens")
    if max_tokens is None:
        raise invalid("'max_tokens' is required", "max_tokens")
    stream = bool(f.opt_bool(data, "stream"))
    f.opt_number(data, "temperature", 0, 1)
    f.opt_number(data, "top_p", 0, 1)
    f.opt_pos_int(data, "top_k")
    end_user = f.end_user(f.opt_dict(data, "metadata"), "user_id", "metadata.user_id")
    _check_thinking(data.get("thinking"))
    stop = f.opt_list(data, "stop_sequences")
    if not all(isinstance(s, str) for s in stop):
        raise invalid("'stop_sequences' must be an array of strings", "stop_sequences")

    messages: list[dict[str, Any]] = []
    if (system := _system_text(data.get("system"))) is not None:
        messages.append({"role": "system", "content": system})
    for i, m in enumerate(f.message_list(data)):
        messages.extend(_to_chat(m, f"messages[{i}]"))
    chat: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    for key in ("temperature", "top_p"):
        if data.get(key) is not None:
            chat[key] = data[key]
    if stop:
        chat["stop"] = stop
    if tools := f.opt_list(data, "tools"):
        chat["tools"] = [_to_function_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    if (choice := data.get("tool_choice")) is not None:
        _put_tool_choice(chat, choice)
        f.offered_tool_choice(chat, "tool_choice.name")
    if (schema := _output_schema(data)) is not None:  # structured output, for a chat target
        chat["response_format"] = {
            "type": "json_schema", "json_schema": {"name": "output", "schema": schema}
        }  # fmt: skip
    return translated(
        "anthropic", data, chat, model, stream=stream, max_tokens=max_tokens, end_user=end_user
    )


def _output_schema(data: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of ``output_config.format`` (structured outputs), if the request has
    one: an OpenAI target gets it as ``response_format`` (it was dropped, and the caller got
    free text)."""
    config = f.opt_dict(data, "output_config")
    fmt = f.opt_dict(config, "format", "output_config.format")
    if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        return None  # (another kind: the provider's to judge, passed on to Anthropic as sent)
    schema: dict[str, Any] = fmt["schema"]
    return schema


def _system_text(system: Any) -> str | None:
    if system is None or isinstance(system, str):
        return system or None
    if isinstance(system, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in system
    ):
        return "\n".join(b["text"] for b in system) or None
    raise invalid("'system' must be a string or an array of text blocks", "system")


def _to_chat(m: dict[str, Any], where: str) -> list[dict[str, Any]]:
    role, content = m.get("role"), m.get("content")
    if role not in ("user", "assistant"):
        raise invalid(f"{where}.role must be 'user' or 'assistant'", f"{where}.role")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list) or not all(
        isinstance(b, dict) and isinstance(b.get("type"), str) for b in content
    ):
        raise invalid("content must be a string or an array of blocks", f"{where}.content")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind, at = block["type"], f"{where}.content[{j}]"
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise invalid("text blocks need a string 'text'", f"{at}.text")
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image" and role == "user":
            parts.append(_image_part(block, at))
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise invalid("tool_use blocks need 'id' and 'name'", at)
            f.opt_dict(block, "input", f"{at}.input")
            arguments = orjson.dumps(block.get("input") or {}).decode()
            fn = {"name": block["name"], "arguments": arguments}
            calls.append({"id": block["id"], "type": "function", "function": fn})
        elif kind == "tool_result" and role == "user":
            if not isinstance(block.get("tool_use_id"), str):
                raise invalid("tool_result blocks need 'tool_use_id'", f"{at}.tool_use_id")
            _check_tool_result(block, at)
            text = content_text(block.get("content"))
            if block.get("is_error") is True:  # chat has no such flag: the model is told so
                text = f"Error: {text}" if text else "Error"
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise invalid(f"unsupported content block type '{kind}' for role {role}", f"{at}.type")
    if role == "assistant":
        text = "".join(p["text"] for p in parts)
        msg: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
        if calls:
            msg["tool_calls"] = calls
        out.append(msg)
    elif parts:
        plain = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if plain else parts})
    return out


def _image_part(block: dict[str, Any], at: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict):
        if (
            source.get("type") == "base64"
            and isinstance(media_type := source.get("media_type"), str)
            and isinstance(data := source.get("data"), str)
        ):
            url = f"data:{media_type};base64,{data}"
            return {"type": "image_url", "image_url": {"url": url}}
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise invalid("image blocks need a base64 or url 'source'", f"{at}.source")


def _check_tool_result(block: dict[str, Any], at: str) -> None:
    f.opt_bool(block, "is_error", f"{at}.is_error")
    content = block.get("content")
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid("tool_result content must be a string or an array", f"{at}.content")
    for k, part in enumerate(f.objects(content, f"{at}.content")):
        where = f"{at}.content[{k}]"
        kind = f.req_type(part, where)
        if kind == "text" and not isinstance(part.get("text"), str):
            raise invalid("text blocks need a string 'text'", f"{where}.text")
        if kind == "image":
            _image_part(part, where)
        elif kind not in ("text", "image"):
            raise invalid("tool_result content blocks must be text or image", f"{where}.type")


def _check_thinking(thinking: Any) -> None:
    if thinking is None:
        return
    # "enabled" needs a budget; the other types ("disabled", "adaptive", whatever the API
    # adds) are the provider's to judge: the SDK (2.17) sends "adaptive", refused here before
    if not isinstance(thinking, dict) or not isinstance(thinking.get("type"), str):
        raise invalid("'thinking' must be an object with a string \"type\"", "thinking")
    if thinking["type"] == "enabled":
        if f.opt_pos_int(thinking, "budget_tokens") is None:
            raise invalid("'thinking.budget_tokens' is required", "thinking.budget_tokens")


def _to_function_tool(tool: Any, at: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise invalid("tools need a string 'name'", f"{at}.name")
    if tool.get("type", "custom") != "custom":
        raise invalid("only custom tools (with an 'input_schema') are supported", f"{at}.type")
    schema = tool.get("input_schema")
    if not isinstance(schema, dict):
        raise invalid("tools need an object 'input_schema'", f"{at}.input_schema")
    fn: dict[str, Any] = {"name": tool["name"], "parameters": schema}
    if f.opt_str(tool, "description", f"{at}.description") is not None:
        fn["description"] = tool["description"]
    return {"type": "function", "function": fn}


def _put_tool_choice(chat: dict[str, Any], choice: Any) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or not isinstance(kind, str):
        raise invalid("'tool_choice' must be an object with a 'type'", "tool_choice")
    f.opt_bool(choice, "disable_parallel_tool_use", "tool_choice.disable_parallel_tool_use")
    if kind == "tool" and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif kind in _TOOL_CHOICE:
        chat["tool_choice"] = _TOOL_CHOICE[kind]
    else:
        raise invalid("'tool_choice.type' must be auto, any, tool or none", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False


def dropped_from_chat(body: dict[str, Any]) -> list[Any]:
    """What a provider of this wire still bills that the canonical chat form leaves out:
    tool-result content beyond its text (images) and thinking blocks (for the budget)."""
    out: list[Any] = []
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        for block in content if isinstance(content, list) else ():
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "tool_result" and isinstance(block.get("content"), list):
                out.append(block["content"])
            elif kind in ("thinking", "redacted_thinking"):
                out.append(block)
    return out


def render_completion(completion: Completion, req: ChatRequest) -> bytes:
    if completion.wire == "anthropic" and completion.native is not None:
        native = completion.native  # the provider's own body (the same wire)
        if completion.usage.estimated:  # no usable usage (no input count): what the ledger
            raw = native.get("usage")  # bills over its counts, as below; its other fields stay
            usage = {**(raw if isinstance(raw, dict) else {}), **anthropic_json(completion.usage)}
            native = {**native, "usage": usage}
        return orjson.dumps(native)
    content: list[dict[str, Any]] = []
    if completion.text:
        content.append({"type": "text", "text": completion.text})
    for call in completion.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": _tool_input(call.arguments),
            }
        )
    return orjson.dumps(
        {
            "id": dialect_id("msg_", completion.id),
            "type": "message",
            "role": "assistant",
            "model": completion.model,
            "content": content,
            "stop_reason": STOP_REASONS[completion.finish_reason],
            "stop_sequence": None,
            "usage": anthropic_json(completion.usage),
        }
    )


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def render_error(err: GatewayError) -> bytes:
    return orjson.dumps(error_body(err))


class AnthropicDialect:
    name: Dialect = "anthropic"

    def parse_request(self, body: bytes) -> ChatRequest:
        return parse_request(body)

    def render_completion(self, completion: Completion, req: ChatRequest) -> bytes:
        return render_completion(completion, req)

    def new_stream_encoder(self, req: ChatRequest) -> AnthropicStreamEncoder:
        return AnthropicStreamEncoder(req)

    def render_error(self, err: GatewayError) -> bytes:
        return render_error(err)


__all__ = ["AnthropicDialect", "dropped_from_chat", "parse_request", "render_completion"]
