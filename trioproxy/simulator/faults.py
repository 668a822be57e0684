"""Faults the simulator injects, per instance or per request.

A request carries faults in its ``x-sim-fault`` header as a compact
``key=value;key=value`` string (``hang`` may stand alone); an instance has a
default set through the constructor or ``POST /_sim/faults`` (a JSON object
with the same keys). Per key, the request's value wins over the default.

Keys (times in milliseconds):

``ttft_ms``      delay before the response head (the first byte)
``chunk_ms``     delay between consecutive stream chunks
``status``       answer with this error status in the provider's envelope
``retry_after``  seconds in the ``retry-after`` header of 429/529 (default 1)
``hang``         read the request, never answer
``reset_after``  N: abort with a TCP RST after N content chunks of a stream
                 (non-stream: right after the response head)
``drip_ms``      send the body byte by byte, this long between bytes
``tokens``       length of the answer in tokens (before ``max_tokens``)
``fail_first``   N: only the instance's first N chat requests fail with
                 ``status`` (500 when unset); later ones succeed
``usage``        a JSON scalar sent instead of every token count of the answer's
                 usage (chat, embeddings, token counts): a misbehaving provider's
                 ``9223372036854775808``, ``-1``, ``1e30``, ``2.5``, ``"12"``, ``null``
``late_usage``   with ``usage``: only the stream's last usage is odd (Anthropic's
                 ``message_delta``; its ``message_start`` says good counts), so the
                 content goes out before the odd counts
``reasoning_content``  a reasoning model on the OpenAI wire streams its hidden reasoning
                 as ``reasoning_content`` deltas before the answer (one per token,
                 paced as content), as DeepSeek / vLLM servers do
``no_usage``     the OpenAI wire sends no usage at all (no ``usage`` in a completion, no
                 usage chunk whatever ``stream_options`` says), as OpenAI-compatible
                 servers that ignore ``stream_options`` do; other wires are unchanged
``no_end``       a stream's body ends after its final event without the wire's end marker
                 (no ``data: [DONE]``, no ``message_stop``), as some OpenAI-compatible
                 servers end theirs; the Responses wire is unchanged (its final event is
                 its end)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import orjson

DEFAULT_FAIL_STATUS = 500
DEFAULT_RETRY_AFTER = 1.0


class FaultError(ValueError):
    """A fault spec that does not parse; the message names the key."""


def _nonneg_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("must be >= 0")
    return value


def _nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _status(text: str) -> int:
    value = int(text)
    if not 400 <= value <= 599:
        raise ValueError("must be an HTTP error status (400-599)")
    return value


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("", "1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be a boolean")


def _json_scalar(text: str) -> str:
    """The literal itself (kept as text: a count past 64 bits is not re-encoded)."""
    if isinstance(orjson.loads(text), (dict, list)):  # a JSONDecodeError is a ValueError
        raise ValueError("must be a JSON scalar")
    return text


_PARSERS: dict[str, Callable[[str], object]] = {
    "ttft_ms": _nonneg_float,
    "chunk_ms": _nonneg_float,
    "status": _status,
    "retry_after": _nonneg_float,
    "hang": _flag,
    "reset_after": _nonneg_int,
    "drip_ms": _nonneg_float,
    "tokens": _nonneg_int,
    "fail_first": _nonneg_int,
    "usage": _json_scalar,
    "no_usage": _flag,
    "late_usage": _flag,
    "reasoning_content": _flag,
    "no_end": _flag,
}


@dataclass(frozen=True, slots=True)
class Fault:
    """A set of faults; ``None`` means "not set here" (see :meth:`over`)."""

    ttft_ms: float | None = None
    chunk_ms: float | None = None
    status: int | None = None
    retry_after: float | None = None
    hang: bool | None = None
    reset_after: int | None = None
    drip_ms: float | None = None
    tokens: int | None = None
    fail_first: int | None = None
    usage: str | None = None
    no_usage: bool | None = None
    late_usage: bool | None = None
    reasoning_content: bool | None = None
    no_end: bool | None = None

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Parse ``key=value;key=value``; raises :class:`FaultError`."""
        values: dict[str, str] = {}
        for item in spec.split(";"):
            item = item.strip()
            if not item:
                continue
            key, _, value = item.partition("=")
            values[key.strip()] = value.strip()
        return cls._build(values)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Fault:
        """Build from a JSON object; raises :class:`FaultError`."""
        values: dict[str, str] = {}
        for key, value in data.items():
            if value is None:
                continue
            if key == "usage":
                values[key] = orjson.dumps(value).decode()
                continue
            values[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return cls._build(values)

    @classmethod
    def _build(cls, values: Mapping[str, str]) -> Fault:
        parsed: dict[str, object] = {}
        for key, text in values.items():
            parser = _PARSERS.get(key)
            if parser is None:
                raise FaultError(f"unknown fault key {key!r} (known: {', '.join(_PARSERS)})")
            try:
                parsed[key] = parser(text)
            except ValueError as exc:
                raise FaultError(f"fault {key}={text!r}: {exc}") from None
        return cls(**parsed)  # type: ignore[arg-type]

    def over(self, base: Fault) -> Fault:
        """This fault with every unset key taken from ``base``."""
        return Fault(
            **{
                f.name: getattr(self, f.name)
                if getattr(self, f.name) is not None
                else getattr(base, f.name)
                for f in fields(self)
            }
        )

    def to_dict(self) -> dict[str, object]:
        """The keys that are set, as JSON-ready values."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    def error_status(self, nth_request: int) -> int | None:
        """The error status for the instance's ``nth_request`` (1-based), if any."""
        if self.fail_first is not None:
            if nth_request > self.fail_first:
                return None
            return self.status if self.status is not None else DEFAULT_FAIL_STATUS
        return self.status


NO_FAULT = Fault()

__all__ = ["DEFAULT_FAIL_STATUS", "DEFAULT_RETRY_AFTER", "NO_FAULT", "Fault", "FaultError"]
