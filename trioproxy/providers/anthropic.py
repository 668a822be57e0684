"""Anthropic messages upstream (``POST /v1/messages``).

Same-dialect requests pass the caller's body through; OpenAI-dialect requests
are translated from the canonical chat form by :mod:`.anthropic_chat`. An
Anthropic-dialect caller's ``anthropic-version`` is sent unchanged; its
``anthropic-beta`` values (from either dialect) pass through in order, filtered
by the provider's allow and deny lists. Usage
keeps Anthropic's disjoint buckets (uncached input, cache reads, 5-minute and
1-hour cache writes; :mod:`trioproxy.core.usage`). A usage that never says its
``input_tokens`` (absent or null, in a whole answer or all along a stream) is no usage:
the gateway's estimate is billed, not 0 input.
"""

from __future__ import annotations

from typing import Any

import orjson

from trioproxy.core.tokens import answer_cap, estimate_tokens
from trioproxy.core.types import (
    ChatRequest,
    Completion,
    FinishReason,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
    Wire,
)
from trioproxy.core.usage import MalformedUsage, from_anthropic, merge_anthropic, token_count
from trioproxy.errors import ErrorKind, ProviderError
from trioproxy.providers.anthropic_chat import chat_to_messages
from trioproxy.providers.base import (
    BetaPolicy,
    JsonAdapter,
    JsonEventDecoder,
    UpstreamRequest,
    completion_of,
    error_text,
    json_object,
    json_request,
)

PATH = "/v1/messages"
VERSION = "2023-06-01"
_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def stop_reason(value: Any) -> FinishReason:
    return _STOP.get(value, "stop") if isinstance(value, str) else "stop"


class AnthropicAdapter(JsonAdapter):
    wire: Wire = "anthropic"

    def build_request(
        self,
        req: ChatRequest,
        deployment: str,
        api_key: str | None,
        betas: BetaPolicy | None = None,
        max_output: int | None = None,
    ) -> UpstreamRequest:
        version = VERSION
        cap = req.max_tokens if max_output is None else answer_cap(req.max_tokens, max_output)
        if req.dialect == self.wire:
            body = {**req.body, "model": deployment}
            if max_output is not None:
                body["max_tokens"] = cap
            version = req.anthropic_version or VERSION
        else:
            body = chat_to_messages(req.chat, deployment, cap)
        if req.stream:
            body["stream"] = True
        headers = [("anthropic-version", version)]
        passed = (betas or BetaPolicy()).filter(req.anthropic_beta)
        if passed:
            headers.append(("anthropic-beta", ",".join(passed)))
        if api_key is not None:
            headers.append(("x-api-key", api_key))
        return json_request(PATH, body, *headers)

    def parse_response(self, body: bytes) -> Completion:
        data = json_object(body)
        content, usage = data.get("content"), data.get("usage")
        if not isinstance(content, list) or not isinstance(usage, dict):
            raise ValueError("response is not an Anthropic message")
        text: list[str] = []
        thoughts: list[str] = []
        calls: list[ToolCall] = []
        try:
            for block in content:
                if block["type"] == "text":
                    text.append(block["text"])
                elif block["type"] == "thinking" and isinstance(block.get("thinking"), str):
                    thoughts.append(block["thinking"])
                elif block["type"] == "tool_use":
                    arguments = orjson.dumps(block.get("input") or {}).decode()
                    calls.append(ToolCall(block["id"], block["name"], arguments))
            metered = from_anthropic(usage)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed message: {exc!r}") from None
        finish = stop_reason(data.get("stop_reason"))
        answer, bad = "".join(text), None
        try:  # (its other counts are counts: from_anthropic said so)
            token_count(usage, "input_tokens", required=True)
        except MalformedUsage as exc:  # never said: no usage, as in a stream (_total): the
            bad = str(exc)  # gateway's estimate is billed (it was billed 0 input, exact)
            metered = Usage(0, estimate_tokens(answer), estimated=True)
        return completion_of(
            data, self.wire, answer, finish, metered, tuple(calls), bad, "".join(thoughts)
        )

    def new_stream_decoder(self) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder()


class AnthropicStreamDecoder(JsonEventDecoder):
    """Anthropic stream events to canonical events.

    ``message_delta`` usage is cumulative and may omit input counts; fields it
    carries override those from ``message_start``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._usage: dict[str, Any] = {}
        self._tools: dict[int, int] = {}
        """Anthropic content-block index -> canonical tool-call index."""
        self._with_args: set[int] = set()
        """Tool blocks that streamed some input JSON."""

    def decode(self, data: dict[str, Any]) -> list[StreamEvent]:
        kind = data.get("type")
        if kind == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                return [TextDelta(delta["text"])] if delta["text"] else []
            if delta["type"] == "thinking_delta":  # not relayed across wires; billed as output
                self._hidden += estimate_tokens(delta["thinking"])
                return []
            if delta["type"] == "input_json_delta" and data["index"] in self._tools:
                if not (partial := delta["partial_json"]):
                    return []
                self._with_args.add(data["index"])
                return [ToolCallDelta(self._tools[data["index"]], None, None, partial)]
            return []
        if kind == "content_block_start":
            block = data["content_block"]
            if block["type"] == "tool_use":
                tool = self._tools[data["index"]] = len(self._tools)
                return [ToolCallDelta(tool, block["id"], block["name"], "")]
            if block["type"] == "text" and block.get("text"):
                return [TextDelta(block["text"])]
            return []
        if kind == "content_block_stop":
            index = data.get("index")
            if index in self._tools and index not in self._with_args:
                # a call without arguments streams no input JSON at all (or only ""): its
                # arguments are the empty object, as the whole answer's input {} says (OpenAI
                # and Responses callers got "", which json.loads and strict SDK parsing reject)
                self._with_args.add(index)
                return [ToolCallDelta(self._tools[index], None, None, "{}")]
            return []
        if kind == "message_start":
            message = data["message"]
            self._usage = {}
            raw = message.get("usage")
            up_front = None if raw is None else self.usage_or_none(self._up_front, raw)
            return [StreamStart(message["id"], message["model"], up_front)]
        if kind == "message_delta":
            out: list[StreamEvent] = []
            if (reason := data["delta"].get("stop_reason")) is not None:
                out.append(StreamEnd(stop_reason(reason)))
            usage = data.get("usage")
            total = None if usage is None else self.usage_or_none(self._total, usage)
            if total is None:  # metered by estimate: a verbatim relay writes what is billed
                self.unbilled_ends += 1
            else:
                out.append(UsageReport(total))
            return out
        if kind == "message_stop":
            self.finish()
        elif kind == "error":
            message = error_text(data) or "upstream stream error"
            raise ProviderError(ErrorKind.STREAM_INTERRUPTED, message)
        return []

    def _up_front(self, raw: Any) -> Usage | None:
        """``message_start``'s usage: its input buckets (the output count comes later), once
        it says its ``input_tokens``; a null or absent one is not said yet (servers that count
        the prompt only at the end): it was taken as 0, exact, and the prompt billed as
        nothing when the final usage was no usage either."""
        _merged(self._usage, raw, "message_start")
        if self._usage.get("input_tokens") is None:
            return None
        return from_anthropic(self._usage, output_required=False)

    def _total(self, raw: Any) -> Usage:
        """The final usage: ``message_delta``'s counts over ``message_start``'s. Without an
        input count from either it is no usage (the prompt's estimate is billed), not 0."""
        _merged(self._usage, raw, "message_delta")
        token_count(self._usage, "input_tokens", required=True)
        return from_anthropic(self._usage)


def _merged(acc: dict[str, Any], raw: Any, where: str) -> None:
    if not isinstance(raw, dict):
        raise MalformedUsage(f"malformed {where} usage: {repr(raw)[:40]}")
    merge_anthropic(acc, raw)


__all__ = ["AnthropicAdapter", "AnthropicStreamDecoder"]
