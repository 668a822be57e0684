"""The gateway's own usage-bearing events on a verbatim stream (pure).

A stream relayed as it is (:mod:`trioproxy.providers.passthrough`) whose final event came
without a usable usage has that event held back and written once the attempt has metered the
rest, with the usage the ledger bills (:meth:`~trioproxy.upstream.meter.Meter.final`), as the
decoding path's encoder writes it: an Anthropic ``message_delta`` with that usage
(:func:`delta_with_usage`), an OpenAI usage-only chunk of the gateway's (:func:`usage_chunk`)
before its ``[DONE]`` (:func:`usage_then`), and the events that came after the held one in
the same read after it (:func:`then`). The Responses wire's is
:func:`~trioproxy.providers.responses_trail.with_usage`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from trioproxy.core.sse import event_bytes, json_event
from trioproxy.core.types import Usage
from trioproxy.core.usage import anthropic_json, openai_json
from trioproxy.providers.openai import OpenAIStreamDecoder


def delta_with_usage(ev: bytes, usage: Usage) -> bytes:
    """An Anthropic ``message_delta`` (without its blank line, as the tap took it) with
    ``usage`` (what the ledger bills, as the decoding path's encoder writes it) over the
    provider's counts, which were none or no usage; its other usage fields stay."""
    head, data = json_event(ev)
    raw = data.get("usage")
    data["usage"] = {**(raw if isinstance(raw, dict) else {}), **anthropic_json(usage)}
    return event_bytes(head, data) + b"\n\n"


def usage_chunk(head: dict[str, Any], usage: Usage) -> bytes:
    """A usage-only chunk of the stream whose first chunk's small fields are ``head``, with
    ``usage`` (what the ledger bills) as the decoding path's encoder writes it."""
    chunk = {
        "id": head.get("id", ""),
        "object": "chat.completion.chunk",
        "created": head["created"] if "created" in head else int(time.time()),
        "model": head.get("model", ""),
    }
    if "system_fingerprint" in head:
        chunk["system_fingerprint"] = head["system_fingerprint"]
    chunk["choices"] = []
    chunk["usage"] = openai_json(usage)
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def usage_then(chunks: OpenAIStreamDecoder, ev: bytes, usage: Usage) -> bytes:
    """The usage-only chunk an OpenAI stream lacked, then ``ev`` (its ``[DONE]``, without its
    blank line, as the tap took it)."""
    return usage_chunk(chunks.head, usage) + ev + b"\n\n"


def then(finish: Callable[[Usage], bytes], after: bytes, usage: Usage) -> bytes:
    """A held final event's bytes, then the events that came after it in the same read."""
    return finish(usage) + after


__all__ = ["delta_with_usage", "then", "usage_chunk", "usage_then"]
