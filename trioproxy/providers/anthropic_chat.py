"""The canonical chat form (OpenAI chat completions) as an Anthropic messages body.

System and developer messages become ``system``; assistant ``tool_calls``
become ``tool_use`` blocks; ``tool`` messages become ``tool_result`` blocks
in a user turn; consecutive turns of one role merge. ``temperature`` is
clamped to Anthropic's 0..1. ``response_format`` (JSON) becomes a system
instruction (:mod:`.anthropic_json`). Fields with no Anthropic counterpart
(``seed``, ``logprobs``...) are dropped; ``n > 1`` and
non-function tools are refused, since they cannot be honoured.
"""

from __future__ import annotations

from typing import Any

import orjson

from trioproxy.core.tokens import content_text
from trioproxy.errors import invalid
from trioproxy.providers.anthropic_json import with_json_instruction

DEFAULT_MAX_TOKENS = 4096
_TOOL_CHOICE = {"auto": "auto", "required": "any", "none": "none"}


def chat_to_messages(chat: dict[str, Any], model: str, max_tokens: int | None) -> dict[str, Any]:
    if (chat.get("n") or 1) != 1:
        raise invalid("'n' greater than 1 is not supported by this model's provider", "n")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(chat["messages"]):
        role, where = m.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(_marked(_system_blocks(m.get("content")), m))
        elif role == "user":
            _push(turns, "user", _marked(_user_blocks(m.get("content"), where), m))
        elif role == "assistant":
            _push(turns, "assistant", _marked(_assistant_blocks(m, where), m))
        elif role == "tool":
            content = m.get("content")
            result = {
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id"),
                "content": _system_blocks(content)
                if _any_marked(content)
                else content_text(content),
            }
            _push(turns, "user", _marked([result], m))
        else:
            raise invalid(f"role '{role}' is not supported by this model's provider", where)
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
        "messages": [_finish_turn(t) for t in turns],
    }
    if any("cache_control" in b for b in system):
        body["system"] = [b for b in system if b["text"] or "cache_control" in b]
    elif system_text := "\n\n".join(b["text"] for b in system if b["text"]):
        body["system"] = system_text
    if (temperature := chat.get("temperature")) is not None:
        body["temperature"] = min(float(temperature), 1.0)
    if chat.get("top_p") is not None:
        body["top_p"] = chat["top_p"]
    if (stop := chat.get("stop")) is not None:
        # Anthropic refuses a sequence of whitespace alone (OpenAI callers send "\n")
        kept = [s for s in ([stop] if isinstance(stop, str) else stop) if s.strip()]
        if kept:
            body["stop_sequences"] = kept
    if tools := chat.get("tools"):
        body["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
        choice = _tool_choice(chat.get("tool_choice"), chat.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    if isinstance(user := chat.get("user"), str):
        body["metadata"] = {"user_id": user}
    if chat.get("stream"):
        body["stream"] = True
    return with_json_instruction(body, chat.get("response_format"))


def _push(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _marker(source: Any) -> Any:
    return source.get("cache_control") if isinstance(source, dict) else None


def _marked(blocks: list[dict[str, Any]], message: dict[str, Any]) -> list[dict[str, Any]]:
    """A message-level ``cache_control`` goes on the message's last block."""
    if (marker := _marker(message)) is not None and blocks:
        blocks[-1] = {**blocks[-1], "cache_control": marker}
    return blocks


def _any_marked(content: Any) -> bool:
    return isinstance(content, list) and any(_marker(p) is not None for p in content)


def _system_blocks(content: Any) -> list[dict[str, Any]]:
    """Text parts as text blocks, markers kept (a string is one block)."""
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                block: dict[str, Any] = {"type": "text", "text": part["text"]}
                if (marker := _marker(part)) is not None:
                    block["cache_control"] = marker
                out.append(block)
        return out
    return [{"type": "text", "text": content_text(content)}]


def _finish_turn(turn: dict[str, Any]) -> dict[str, Any]:
    blocks = turn["content"]
    if len(blocks) == 1 and blocks[0]["type"] == "text" and "cache_control" not in blocks[0]:
        return {"role": turn["role"], "content": blocks[0]["text"]}
    # Anthropic wants tool results first in their user turn.
    blocks.sort(key=lambda b: b["type"] != "tool_result")
    return turn


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content or ()):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            blocks.append({"type": "image", "source": _image_source(url)})
        else:
            if kind != "text":
                where_j = f"{where}.content[{j}]"
                raise invalid(
                    f"content part '{kind}' is not supported by this model's provider", where_j
                )
            continue
        if (marker := _marker(part)) is not None:
            blocks[-1]["cache_control"] = marker
    return blocks


def _image_source(url: str) -> dict[str, str]:
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _assistant_blocks(m: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = m.get("content")
    if _any_marked(content):
        blocks.extend(b for b in _system_blocks(content) if b["text"] or "cache_control" in b)
    elif text := content_text(content):
        blocks.append({"type": "text", "text": text})
    for k, call in enumerate(m.get("tool_calls") or ()):
        fn = call.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            param = f"{where}.tool_calls[{k}].function.arguments"
            raise invalid("tool call arguments must be a JSON object", param)
        blocks.append(
            {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args}
        )
    return blocks


def _tool(tool: dict[str, Any], where: str) -> dict[str, Any]:
    fn = tool.get("function")
    if tool.get("type") != "function" or not isinstance(fn, dict):
        raise invalid("only function tools are supported by this model's provider", where)
    out: dict[str, Any] = {
        "name": fn.get("name"),
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        out["description"] = fn["description"]
    if (marker := _marker(tool) or _marker(fn)) is not None:
        out["cache_control"] = marker
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None = None
    if isinstance(choice, str) and choice in _TOOL_CHOICE:
        out = {"type": _TOOL_CHOICE[choice]}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    if parallel is False and (out is None or out["type"] != "none"):
        out = out or {"type": "auto"}
        out["disable_parallel_tool_use"] = True
    return out


__all__ = ["DEFAULT_MAX_TOKENS", "chat_to_messages"]
