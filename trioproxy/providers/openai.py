"""OpenAI chat completions upstream (kinds ``openai`` and ``openai_compatible``).

The canonical chat form is OpenAI's, so building a request is a copy with
the deployment's model name and, for streams, ``include_usage`` forced on:
the gateway meters every stream.
"""

from __future__ import annotations

from typing import Any

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
from trioproxy.core.usage import from_openai
from trioproxy.errors import ErrorKind, ProviderError
from trioproxy.providers.base import (
    BetaPolicy,
    JsonAdapter,
    JsonEventDecoder,
    UpstreamRequest,
    bearer,
    completion_of,
    error_text,
    json_object,
    json_request,
)

PATH = "/v1/chat/completions"
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def finish_reason(value: Any) -> FinishReason:
    return _FINISH.get(value, "stop") if isinstance(value, str) else "stop"


def usage_of(raw: Any) -> Usage | None:
    """Disjoint buckets from OpenAI's subsets (cached and reasoning tokens)."""
    return from_openai(raw) if isinstance(raw, dict) else None


_CAP_FIELDS = ("max_completion_tokens", "max_tokens")


class OpenAIAdapter(JsonAdapter):
    wire: Wire = "openai"

    def __init__(self, cap_field: str = "max_tokens") -> None:
        self.cap_field = cap_field
        """The output cap's field when the request names none: OpenAI's own API wants
        ``max_completion_tokens`` (its reasoning models refuse ``max_tokens``); servers that
        only copy its API (vLLM, Ollama, ...) all read ``max_tokens``."""

    def build_request(
        self,
        req: ChatRequest,
        deployment: str,
        api_key: str | None,
        betas: BetaPolicy | None = None,
        max_output: int | None = None,
    ) -> UpstreamRequest:
        source = req.body if req.dialect == self.wire else req.chat
        body = {**source, "model": deployment}
        if req.dialect != self.wire and "max_tokens" in body and self.cap_field != "max_tokens":
            # a translated cap is the gateway's naming, not the caller's: this provider's own
            # field (OpenAI's reasoning models refuse max_tokens)
            body[self.cap_field] = body.pop("max_tokens")
            source = body
        if max_output is not None:
            named = [f for f in _CAP_FIELDS if source.get(f) is not None]
            for f in named or [self.cap_field]:
                body[f] = answer_cap(source.get(f), max_output)
        if req.stream:
            body["stream"] = True
            options = source.get("stream_options")
            body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return json_request(PATH, body, *bearer(api_key))

    def parse_response(self, body: bytes) -> Completion:
        data = json_object(body)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ValueError("response has no choices")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise ValueError("choice has no message")
        text = message.get("content") or ""
        if not isinstance(text, str):
            raise ValueError("message content is not a string")
        try:
            calls = tuple(
                ToolCall(c["id"], c["function"]["name"], c["function"].get("arguments") or "")
                for c in message.get("tool_calls") or ()
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed tool_calls: {exc!r}") from None
        finish = finish_reason(choice.get("finish_reason"))
        refusal = message.get("refusal")
        if not text and isinstance(refusal, str) and refusal:  # the model declined: its words
            text, finish = refusal, "content_filter"  # (an Anthropic caller's "refusal")
        if calls and finish == "stop":  # a forced (named) tool call ends with "stop"
            finish = "tool_calls"
        usage = usage_of(data.get("usage")) or Usage(0, estimate_tokens(text), estimated=True)
        thinking = reasoning_of(message) or ""
        return completion_of(data, self.wire, text, finish, usage, calls, thinking=thinking)

    def new_stream_decoder(self) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder()


REASONING_FIELDS = ("reasoning_content", "reasoning")
"""Where OpenAI-compatible servers (DeepSeek, vLLM, Ollama...) stream a reasoning model's
thinking in a chunk's delta: billed as output, counted along the stream."""


def reasoning_of(delta: Any) -> str | None:
    """A chunk delta's streamed reasoning text, if any."""
    for name in REASONING_FIELDS:
        if isinstance(text := delta.get(name), str) and text:
            return text
    return None


CHUNK_HEAD = ("id", "created", "model", "system_fingerprint")
"""The fields of a ``chat.completion.chunk`` that are the same in each chunk of a stream, but
its ``object``."""


class OpenAIStreamDecoder(JsonEventDecoder):
    """``chat.completion.chunk`` events to canonical events.

    The usage chunk (``choices: []``) becomes a :class:`UsageReport`. Some
    compatible servers put usage on a chunk that also has choices; that usage
    is kept and reported at ``[DONE]`` unless a usage chunk came first. A ``[DONE]``
    after no usable usage at all (a server that ignores ``stream_options``, counts that
    are no counts) is an :attr:`~trioproxy.providers.base.JsonEventDecoder.unbilled_ends`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._usage_sent = False
        self._pending: Usage | None = None
        self._refused = self._called = False
        self.head: dict[str, Any] = {}
        """The first chunk's small fields (:data:`CHUNK_HEAD`, those it has): a verbatim
        relay's own usage chunk carries them."""

    def done_marker(self) -> list[StreamEvent]:
        self.finish()
        if self._usage_sent:
            return []
        if self._pending is not None:
            return [UsageReport(self._pending)]
        self.unbilled_ends += 1  # metered by estimate: a verbatim relay writes what is billed
        return []

    def decode(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if "error" in chunk:
            message = error_text(chunk) or "upstream stream error"
            raise ProviderError(ErrorKind.STREAM_INTERRUPTED, message)
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            self.head = {k: chunk[k] for k in CHUNK_HEAD if k in chunk}
            out.append(StreamStart(str(chunk.get("id", "")), str(chunk.get("model", ""))))
        choices = chunk.get("choices") or []
        for choice in choices:
            if choice.get("index", 0) == 0:
                self._choice(choice, out)
        raw = chunk.get("usage")  # null on every content chunk: no call for those
        usage = None if raw is None else self.usage_or_none(usage_of, raw)
        if usage is not None:
            if choices:
                self._pending = usage
            else:
                self._usage_sent = True
                out.append(UsageReport(usage))
        return out

    def _choice(self, choice: dict[str, Any], out: list[StreamEvent]) -> None:
        delta = choice.get("delta") or {}
        if text := delta.get("content"):
            out.append(TextDelta(text))
        if (thought := reasoning_of(delta)) is not None:  # not relayed; billed as output
            self._hidden += estimate_tokens(thought)
        if (refusal := delta.get("refusal")) and isinstance(refusal, str):
            self._refused = True
            out.append(TextDelta(refusal))
        for call in delta.get("tool_calls") or ():
            self._called = True
            fn = call.get("function") or {}
            out.append(
                ToolCallDelta(
                    index=call.get("index", 0),
                    id=call.get("id"),
                    name=fn.get("name"),
                    arguments=fn.get("arguments") or "",
                )
            )
        if (reason := choice.get("finish_reason")) is not None:
            finish = finish_reason(reason)
            if finish == "stop" and self._refused:
                finish = "content_filter"
            elif finish == "stop" and self._called:  # a forced (named) tool call
                finish = "tool_calls"
            out.append(StreamEnd(finish))


__all__ = ["OpenAIAdapter", "OpenAIStreamDecoder"]
