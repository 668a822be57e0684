"""Field checks shared by the client dialects; each failure names its ``param``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from trioproxy.errors import CallerError, ErrorKind, invalid


def load_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CallerError(
            ErrorKind.INVALID_JSON, f"request body is not valid JSON: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    return data


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


def opt_bool(body: Mapping[str, Any], key: str, param: str | None = None) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise invalid(f"'{param or key}' must be a boolean", param or key)
    return value


def opt_pos_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid(f"'{key}' must be a positive integer", key)
    return value


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


def opt_list(body: Mapping[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(f"'{key}' must be an array", key)
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
    "load_object",
    "message_list",
    "opt_bool",
    "opt_dict",
    "opt_list",
    "opt_number",
    "opt_pos_int",
    "opt_str",
    "req_str",
]
