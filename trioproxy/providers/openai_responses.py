"""OpenAI Responses upstream (``POST /v1/responses``), for Responses callers on
``openai`` providers: the caller's body passes through with the deployment's
model name and ``store: false`` (the gateway is stateless, and so is what it
asks of the provider). Bodies and ``response.*`` stream events decode into the
canonical values, so budgets, the ledger and the cache treat them as any other
answer. A whole body is relayed verbatim (``Completion.native``); so is a stream,
unless the cache needs every event (:mod:`trioproxy.providers.passthrough`: only the
events the gateway needs go through :class:`ResponsesStreamDecoder`); a cached
stream is written back by the caller's encoder
(:mod:`trioproxy.dialects.responses_render`).
"""

from __future__ import annotations

from typing import Any

from trioproxy.core.tokens import answer_cap
from trioproxy.core.types import (
    ChatRequest,
    Completion,
    Dialect,
    FinishReason,
    OutputItem,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from trioproxy.core.usage import MalformedUsage, from_responses
from trioproxy.errors import ErrorKind, ProviderError
from trioproxy.providers.base import (
    BetaPolicy,
    JsonAdapter,
    JsonEventDecoder,
    UpstreamRequest,
    bearer,
    completion_of,
    json_object,
    json_request,
)

PATH = "/v1/responses"
_TERMINAL = ("response.completed", "response.incomplete")


def usage_of(raw: Any) -> Usage:
    """Disjoint buckets from the Responses usage (cached and reasoning tokens are subsets)."""
    if not isinstance(raw, dict):
        raise MalformedUsage("response has no usage")
    return from_responses(raw)


def finish_of(response: dict[str, Any], has_calls: bool) -> FinishReason:
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details") or {}
        return "content_filter" if details.get("reason") == "content_filter" else "length"
    return "tool_calls" if has_calls else "stop"


def output_of(response: dict[str, Any]) -> tuple[str, tuple[ToolCall, ...]]:
    """The answer's text and function calls; raises ``ValueError`` on garbage."""
    output = response.get("output")
    if not isinstance(output, list):
        raise ValueError("response has no output list")
    text: list[str] = []
    calls: list[ToolCall] = []
    try:
        for item in output:
            if item["type"] == "message":
                text.extend(p["text"] for p in item["content"] if p["type"] == "output_text")
            elif item["type"] == "function_call":
                calls.append(ToolCall(item["call_id"], item["name"], item["arguments"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed output item: {exc!r}") from None
    return "".join(text), tuple(calls)


class OpenAIResponsesAdapter(JsonAdapter):
    wire: Dialect = "responses"

    def build_request(
        self,
        req: ChatRequest,
        deployment: str,
        api_key: str | None,
        betas: BetaPolicy | None = None,
        max_output: int | None = None,
    ) -> UpstreamRequest:
        body = {**req.body, "model": deployment, "store": False}
        if max_output is not None:
            body["max_output_tokens"] = answer_cap(req.max_tokens, max_output)
        if req.stream:
            body["stream"] = True
        return json_request(PATH, body, *bearer(api_key))

    def parse_response(self, body: bytes) -> Completion:
        data = json_object(body)
        text, calls = output_of(data)
        finish = finish_of(data, bool(calls))
        return completion_of(data, self.wire, text, finish, usage_of(data.get("usage")), calls)

    def new_stream_decoder(self) -> ResponsesStreamDecoder:
        return ResponsesStreamDecoder()


class ResponsesStreamDecoder(JsonEventDecoder):
    """``response.*`` events to canonical events; done at the terminal event."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[str, int] = {}
        """Output item id -> canonical tool-call index."""
        self._refused = False

    def done_marker(self) -> list[StreamEvent]:
        return []  # some servers end a Responses stream with [DONE] too

    def decode(self, data: dict[str, Any]) -> list[StreamEvent]:
        kind = data.get("type")
        if kind == "response.output_text.delta":
            return [TextDelta(data["delta"])] if data["delta"] else []
        if kind == "response.refusal.delta":  # the model declined: its words, as text (as the
            self._refused = True  # chat decoder does), and a content_filter finish
            return [TextDelta(data["delta"])] if data.get("delta") else []
        if kind == "response.function_call_arguments.delta":
            index = self._calls.get(data["item_id"])
            if index is None or not data["delta"]:
                return []
            return [ToolCallDelta(index, None, None, data["delta"])]
        if kind == "response.output_item.done" and data["item"]["type"] == "reasoning":
            return [OutputItem(data["item"])]
        if kind == "response.output_item.added" and data["item"]["type"] == "function_call":
            item = data["item"]
            index = self._calls[item["id"]] = len(self._calls)
            return [ToolCallDelta(index, item["call_id"], item["name"], item.get("arguments", ""))]
        if kind == "response.created":
            response = data["response"]
            return [StreamStart(str(response["id"]), str(response.get("model", "")))]
        if kind in _TERMINAL:
            self.finish()
            response = data["response"]
            finish = finish_of(response, bool(self._calls))
            if self._refused and finish == "stop":
                finish = "content_filter"
            usage = self.usage_or_none(usage_of, response.get("usage"))
            if usage is None:  # (none is no usage too): a verbatim relay writes what is billed
                self.unbilled_ends += 1
                return [StreamEnd(finish)]
            return [StreamEnd(finish), UsageReport(usage)]
        if kind in ("response.failed", "error"):
            err = (data.get("response") or {}).get("error") or data
            message = err.get("message") if isinstance(err, dict) else None
            raise ProviderError(ErrorKind.STREAM_INTERRUPTED, message or "upstream stream error")
        return []


__all__ = ["OpenAIResponsesAdapter", "ResponsesStreamDecoder"]
