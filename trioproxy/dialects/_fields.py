"""Field checks shared by the client dialects; each failure names its ``param``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from trioproxy.errors import CallerError, ErrorKind, invalid

MAX_DEPTH = 128
"""Deepest JSON nesting a request body may have. The parser accepts 1024 levels but
orjson serialises only ~255, and the gateway re-serialises a body inside a few more
levels (cache keys, the translated upstream body): 128 leaves room for both."""
MAX_INT = 2**31 - 1
"""Largest token count or other integer knob a caller may send (stays exact in Lua)."""


def load_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _unreadable(body, exc) from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    if too_deep(data, MAX_DEPTH):
        raise invalid(f"request body is nested deeper than {MAX_DEPTH} levels")
    return data


def _unreadable(body: bytes, exc: orjson.JSONDecodeError) -> CallerError:
    """What is wrong with a body orjson refused, in the caller's terms: orjson calls any
    byte that is not UTF-8 a "surrogate", and nesting past its own 1,024 levels a "depth
    limit" (the gateway's is 128: :data:`MAX_DEPTH`)."""
    if "depth limit exceeded" in str(exc):
        return invalid(f"request body is nested deeper than {MAX_DEPTH} levels")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        return CallerError(
            ErrorKind.INVALID_JSON,
            f"request body is not valid UTF-8 (byte 0x{body[bad.start]:02x} at offset "
            f"{bad.start}): send JSON encoded as UTF-8",
        )
    return CallerError(ErrorKind.INVALID_JSON, f"request body is not valid JSON: {exc}")


def too_deep(value: Any, limit: int) -> bool:
    """True if ``value`` nests containers more than ``limit`` levels (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                if depth >= limit:
                    return True
                if child:
                    stack.append((child, depth + 1))
    return False


def req_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise invalid(f"'{key}' is required and must be a non-empty string", key)
    return value


def opt_str(body: Mapping[str, Any], key: str, param: str | None = None) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(f"'{param or key}' must be a string", param or key)
    return value


MAX_END_USER = 256
"""Longest end-user id (``user``, ``metadata.user_id``, ``safety_identifier``), as
Anthropic limits it: the id goes into every ledger record and names a budget bucket."""


def end_user(body: Mapping[str, Any], key: str, param: str | None = None) -> str | None:
    """An end-user id field: a string of at most :data:`MAX_END_USER` characters."""
    value = opt_str(body, key, param)
    if value is not None and len(value) > MAX_END_USER:
        raise invalid(f"'{param or key}' is longer than {MAX_END_USER} characters", param or key)
    return value


def opt_bool(body: Mapping[str, Any], key: str, param: str | None = None) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise invalid(f"'{param or key}' must be a boolean", param or key)
    return value


def opt_int(
    body: Mapping[str, Any], key: str, lo: int, hi: int = MAX_INT, param: str | None = None
) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise invalid(f"'{param or key}' must be an integer from {lo} to {hi}", param or key)
    return value


def opt_pos_int(body: Mapping[str, Any], key: str, hi: int = MAX_INT) -> int | None:
    return opt_int(body, key, 1, hi)


def opt_choice(
    body: Mapping[str, Any], key: str, choices: frozenset[str], param: str | None = None
) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or value not in choices):
        where = param or key
        raise invalid(f"'{where}' must be one of {sorted(choices)}", where)
    return value


def req_dict(body: Mapping[str, Any], key: str, param: str) -> dict[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        raise invalid(f"'{param}' is required and must be an object", param)
    return value


def req_type(block: Mapping[str, Any], at: str) -> str:
    kind = block.get("type")
    if not isinstance(kind, str):
        raise invalid(f"'{at}.type' must be a string", f"{at}.type")
    return kind


def objects(values: list[Any], at: str) -> list[dict[str, Any]]:
    """``values`` when every item is an object, else a 400 naming the first that is not."""
    for i, v in enumerate(values):
        if not isinstance(v, dict):
            raise invalid(f"'{at}[{i}]' must be an object", f"{at}[{i}]")
    return values


def opt_number(body: Mapping[str, Any], key: str, lo: float, hi: float) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise invalid(f"'{key}' must be a number between {lo:g} and {hi:g}", key)


def opt_dict(body: Mapping[str, Any], key: str, param: str | None = None) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"'{param or key}' must be an object", param or key)
    return value


METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512
"""OpenAI's bounds on ``metadata``: pairs, characters of a key, characters of a value."""


def opt_metadata(body: Mapping[str, Any], key: str = "metadata") -> None:
    """OpenAI's ``metadata``: an object of at most 16 string values (keys of at most 64
    characters, values of at most 512), as OpenAI refuses any other."""
    meta = opt_dict(body, key)
    if len(meta) > METADATA_PAIRS:
        raise invalid(f"'{key}' has more than {METADATA_PAIRS} pairs", key)
    for k, v in meta.items():
        if len(k) > METADATA_KEY:
            raise invalid(f"'{key}' keys must be at most {METADATA_KEY} characters", key)
        if not isinstance(v, str) or len(v) > METADATA_VALUE:
            raise invalid(
                f"'{key}.{k}' must be a string of at most {METADATA_VALUE} characters", f"{key}.{k}"
            )


def opt_list(body: Mapping[str, Any], key: str, param: str | None = None) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(f"'{param or key}' must be an array", param or key)
    return value


def message_list(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty array", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise invalid(f"'messages[{i}]' must be an object", f"messages[{i}]")
    return messages


__all__ = [
    "MAX_DEPTH",
    "MAX_END_USER",
    "MAX_INT",
    "end_user",
    "load_object",
    "message_list",
    "objects",
    "opt_bool",
    "opt_choice",
    "opt_dict",
    "opt_int",
    "opt_list",
    "opt_number",
    "opt_pos_int",
    "opt_str",
    "req_dict",
    "req_str",
    "req_type",
    "too_deep",
]


def offered_tool_choice(chat: Mapping[str, Any], name_param: str) -> None:
    """A chat form's ``tool_choice`` can be met by its ``tools``: a named function must be one
    of them (``name_param``: where the caller wrote the name, in its own dialect), and
    "required" (Anthropic's "any") needs at least one. The providers refuse both with a 400
    that would blame them; a cached answer would be served to the next such request."""
    choice = chat.get("tool_choice")
    tools = chat.get("tools") or ()
    if choice == "required" and not tools:
        raise invalid("'tool_choice' requires a tool call but 'tools' offers none", "tool_choice")
    if isinstance(choice, dict) and isinstance(fn := choice.get("function"), dict):
        names = {(t.get("function") or t.get("custom") or {}).get("name") for t in tools}
        if (name := fn.get("name")) not in names:
            raise invalid(f"'tool_choice' names '{name}', which 'tools' does not offer", name_param)
