"""Test servers for the upstream transport: the simulator behind TLS, a CONNECT proxy,
and a keep-alive server that drops connections the way real providers do."""

from __future__ import annotations

import socket
import ssl
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Any

import h11
import orjson
import trio
import trustme

from trioproxy.simulator import Simulator


async def next_event(conn: h11.Connection, stream: trio.SocketStream) -> Any:
    """h11's next event, reading from ``stream`` while it needs data; None once the peer
    closed."""
    while (event := conn.next_event()) is h11.NEED_DATA:
        data = await stream.receive_some(65536)
        if not data:
            return None
        conn.receive_data(data)
    return event


async def read_request(conn: h11.Connection, stream: trio.SocketStream) -> h11.Request:
    """A whole request (its head; the body read to its end)."""
    request = None
    while (event := await next_event(conn, stream)) is not None:
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            break
    assert request is not None
    return request


def json_answer(conn: h11.Connection, body: bytes) -> bytes:
    """A whole 200 answer with a JSON ``body``."""
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    out = conn.send(h11.Response(status_code=200, headers=headers))
    return out + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())


@dataclass
class TlsSim:
    sim: Simulator
    port: int
    ca_file: str
    """PEM of the test CA that signed the simulator's certificate."""
    sni: list[str | None] = field(default_factory=list)
    """Server names the clients asked for (SNI), one per TLS handshake."""


async def start_tls_simulator(nursery: trio.Nursery, *names: str) -> TlsSim:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("localhost",))).configure_cert(server_ctx)
    ca_file = tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False)
    ca_file.write(ca.cert_pem.bytes())
    ca_file.close()
    sim = Simulator()
    seen: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, name, _ctx: seen.append(name)  # type: ignore[assignment,misc,return-value]
    port = await nursery.start(
        lambda task_status: sim.serve(tls=server_ctx, task_status=task_status)
    )
    return TlsSim(sim, port, ca_file.name, seen)


class Listening:
    """A test server on a free 127.0.0.1 port: :meth:`serve` (for ``nursery.start``) binds
    it, sets ``port`` and hands each connection to ``_client``."""

    port: int

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._client, listeners)

    async def _client(self, stream: trio.SocketStream) -> None:
        raise NotImplementedError


@dataclass
class ConnectProxy(Listening):
    """An HTTP CONNECT proxy that sends every tunnel to 127.0.0.1 (any host name)."""

    port: int = 0
    requests: list[str] = field(default_factory=list)
    """The CONNECT targets asked for, in order."""
    auth: list[str | None] = field(default_factory=list)
    refuse: int | None = None
    """Answer every CONNECT with this status instead of opening a tunnel."""

    async def _client(self, client: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with client:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await client.receive_some(65536))
                    continue
                break
            if not isinstance(event, h11.Request) or event.method != b"CONNECT":
                return
            target = event.target.decode()
            self.requests.append(target)
            self.auth.append(
                next((v.decode() for k, v in event.headers if k == b"proxy-authorization"), None)
            )
            if self.refuse is not None:
                headers = [(b"content-length", b"0")]
                await client.send_all(
                    conn.send(h11.Response(status_code=self.refuse, headers=headers))
                )
                return
            port = int(target.rsplit(":", 1)[1])
            upstream = await trio.open_tcp_stream("127.0.0.1", port)
            async with upstream:
                await client.send_all(conn.send(h11.Response(status_code=200, headers=[])))
                extra, _ = conn.trailing_data
                if extra:
                    await upstream.send_all(extra)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pipe, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(_pipe, upstream, client, nursery.cancel_scope)


async def _pipe(src: trio.SocketStream, dst: trio.SocketStream, scope: trio.CancelScope) -> None:
    try:
        while data := await src.receive_some(65536):
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()


@dataclass
class FlakyKeepAlive(Listening):
    """Answers OpenAI-shaped JSON with keep-alive, then misbehaves on the connection.

    ``mode="close_after"``: closes the socket right after each response (the
    client finds it dead when idle). ``mode="drop_second"``: reads the second
    request on a connection and closes without answering (the provider may have
    acted on it: the client must not send it again). ``mode="reset_second_head"``:
    on the second request of a connection, reads its head and resets the
    connection (``SO_LINGER`` 0) while the body is still on its way (sending fails:
    the request never fully went out).
    """

    mode: str
    port: int = 0
    connections: int = 0
    received: int = 0
    """Complete requests read (each one the provider could have acted on)."""
    answered: int = 0
    closed: int = 0
    """Connections this server has closed."""

    async def _client(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            await self._exchanges(stream)
        finally:
            self.closed += 1

    async def _exchanges(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        served = 0
        async with stream:
            while (event := await next_event(conn, stream)) is not None:
                if isinstance(event, h11.Request) and self.mode == "reset_second_head":
                    if served == 1:
                        linger = struct.pack("ii", 1, 0)
                        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                        return
                if isinstance(event, h11.EndOfMessage):
                    self.received += 1
                    if self.mode == "drop_second" and served == 1:
                        return
                    body = b'{"id":"x","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}'
                    out = json_answer(conn, body)
                    served += 1
                    self.answered += 1  # before the write: the client may finish first
                    await stream.send_all(out)
                    if self.mode == "close_after":
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return


_OPENAI_CHUNK = (
    '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    '"system_fingerprint":"fp_stall","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}'
)
_RESPONSE = {
    "id": "resp_upstream_1", "object": "response", "created_at": 1, "status": "in_progress",
    "completed_at": None, "error": None, "incomplete_details": None, "model": "m-upstream",
    "output": [], "parallel_tool_calls": True, "store": False, "temperature": 1.0, "top_p": 1.0,
    "tool_choice": "auto", "tools": [{"type": "web_search"}], "text": {"format": {"type": "text"}},
    "truncation": "disabled", "usage": None, "metadata": {}, "instructions": None,
    "previous_response_id": None, "reasoning": None, "user": None, "max_output_tokens": None,
    "background": False, "service_tier": "default", "prompt_cache_key": None,
    "safety_identifier": None, "top_logprobs": 0, "presence_penalty": 0.0,
    "frequency_penalty": 0.0, "max_tool_calls": None,
}  # fmt: skip
_SEARCH = {"id": "ws_upstream_1", "type": "web_search_call", "status": "completed",
           "action": {"type": "search", "query": "hello world"}}  # fmt: skip
_CITATION = {"type": "url_citation", "start_index": 0, "end_index": 11,
             "url": "https://example.com/hello", "title": "Hello"}  # fmt: skip
_PART = {"type": "output_text", "text": "Hello world", "annotations": [_CITATION], "logprobs": []}
_MESSAGE = {"id": "msg_upstream_1", "type": "message", "status": "completed",
            "role": "assistant", "content": [_PART]}  # fmt: skip
_RESPONSES_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("response.created", {"sequence_number": 0, "response": _RESPONSE}),
    ("response.in_progress", {"sequence_number": 1, "response": _RESPONSE}),
    ("response.output_item.added", {"sequence_number": 2, "output_index": 0,
                                    "item": {**_SEARCH, "status": "in_progress"}}),
    ("response.web_search_call.in_progress", {"sequence_number": 3, "output_index": 0,
                                              "item_id": "ws_upstream_1"}),
    ("response.web_search_call.searching", {"sequence_number": 4, "output_index": 0,
                                            "item_id": "ws_upstream_1"}),
    ("response.web_search_call.completed", {"sequence_number": 5, "output_index": 0,
                                            "item_id": "ws_upstream_1"}),
    ("response.output_item.done", {"sequence_number": 6, "output_index": 0, "item": _SEARCH}),
    ("response.output_item.added", {"sequence_number": 7, "output_index": 1,
                                    "item": {**_MESSAGE, "status": "in_progress", "content": []}}),
    ("response.content_part.added", {"sequence_number": 8, "item_id": "msg_upstream_1",
                                     "output_index": 1, "content_index": 0,
                                     "part": {**_PART, "text": "", "annotations": []}}),
    ("response.output_text.delta", {"sequence_number": 9, "item_id": "msg_upstream_1",
                                    "output_index": 1, "content_index": 0, "delta": "Hello",
                                    "logprobs": [], "obfuscation": "x3Rk"}),
    ("response.output_text.delta", {"sequence_number": 10, "item_id": "msg_upstream_1",
                                    "output_index": 1, "content_index": 0, "delta": " world",
                                    "logprobs": [], "obfuscation": "QpZ"}),
    ("response.output_text.annotation.added", {"sequence_number": 11,
                                               "item_id": "msg_upstream_1", "output_index": 1,
                                               "content_index": 0, "annotation_index": 0,
                                               "annotation": _CITATION}),
    ("response.future_feature.delta", {"sequence_number": 12, "item_id": "msg_upstream_1",
                                       "delta": "a type no decoder knows"}),
    ("response.output_text.done", {"sequence_number": 13, "item_id": "msg_upstream_1",
                                   "output_index": 1, "content_index": 0, "text": "Hello world",
                                   "logprobs": []}),
    ("response.content_part.done", {"sequence_number": 14, "item_id": "msg_upstream_1",
                                    "output_index": 1, "content_index": 0, "part": _PART}),
    ("response.output_item.done", {"sequence_number": 15, "output_index": 1, "item": _MESSAGE}),
    ("response.completed", {"sequence_number": 16, "response": {
        **_RESPONSE, "status": "completed", "completed_at": 2, "output": [_SEARCH, _MESSAGE],
        "usage": {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": 8}}}),
]  # fmt: skip
"""A Responses stream with what the gateway's decoder does not model: a hosted tool's item
and events, an annotation, log probabilities, an obfuscation field, an event type of the
future, the provider's own ids."""
STALL_EVENTS = {
    "/v1/chat/completions": [
        b"data: "
        + (_OPENAI_CHUNK % ('{"role":"assistant","content":"Hello"}', "null")).encode()
        + b"\n\n",
        b"data: " + (_OPENAI_CHUNK % ('{"content":" world"}', "null")).encode() + b"\n\n",
        b"data: " + (_OPENAI_CHUNK % ("{}", '"stop"')).encode() + b"\n\n",
    ],
    "/v1/messages": [
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
        b'"type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,'
        b'"usage":{"input_tokens":5,"output_tokens":1}}}\n\n',
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Hello world"}}\n\n',
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":3}}\n\n',
    ],
    "/v1/responses": [
        b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"
        for kind, fields in _RESPONSES_EVENTS
    ],
}
"""Per upstream path: a stream up to its final event (the finish reason), without what
follows (OpenAI's usage chunk and ``[DONE]``, Anthropic's ``message_stop``; the Responses
wire's final event, ``response.completed``, is its end)."""
END_EVENTS = {
    "/v1/chat/completions": [
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"system_fingerprint":"fp_stall","choices":[],'
        b'"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}\n\n',
        b"data: [DONE]\n\n",
    ],
    "/v1/messages": [b'event: message_stop\ndata: {"type":"message_stop"}\n\n'],
    "/v1/responses": [],
}
"""What follows :data:`STALL_EVENTS`: the usage and the stream's end event."""


@dataclass
class StallAfterFinal(Listening):
    """Streams :data:`STALL_EVENTS` for the request's path, then sends nothing more and
    keeps the connection open (a provider that stalls after its final event)."""

    port: int = 0
    with_end: bool = False
    """Send the end events too (:data:`END_EVENTS`), then stall before the body's end."""
    stalled: trio.Event = field(default_factory=trio.Event)
    """Set once a stream's last event is written."""
    closed: int = 0
    """Connections the client closed."""

    async def _client(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            request = await read_request(conn, stream)
            headers = [(b"content-type", b"text/event-stream")]
            await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
            path = request.target.decode()
            for data in STALL_EVENTS[path] + (END_EVENTS[path] if self.with_end else []):
                await stream.send_all(conn.send(h11.Data(data=data)))
            self.stalled.set()
            try:
                while await stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass
            self.closed += 1


@dataclass
class FixedAnswer(Listening):
    """Answers every request with ``body`` (JSON, status 200), keep-alive."""

    body: bytes = b"{}"
    port: int = 0

    async def _client(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while (event := await next_event(conn, stream)) is not None:
                if isinstance(event, h11.EndOfMessage):
                    await stream.send_all(json_answer(conn, self.body))
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return


__all__ = [
    "END_EVENTS",
    "STALL_EVENTS",
    "ConnectProxy",
    "FixedAnswer",
    "FlakyKeepAlive",
    "InParts",
    "Listening",
    "StallAfterFinal",
    "TlsSim",
    "start_tls_simulator",
]


@dataclass
class OneWrite(Listening):
    """Answers every request with ``body`` as a 200 SSE stream in one write (so that it comes
    in one read, as a short answer from a fast server does), then ends the response. With
    ``rest``: then waits for ``go`` (set by the test once the caller has read what it
    wanted) and sends ``rest`` in one write before the end."""

    body: bytes = b""
    rest: bytes = b""
    go: trio.Event = field(default_factory=trio.Event)
    port: int = 0

    async def _client(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            await read_request(conn, stream)
            headers = [(b"content-type", b"text/event-stream"), (b"connection", b"close")]
            head = conn.send(h11.Response(status_code=200, headers=headers))
            out = head + conn.send(h11.Data(data=self.body))
            if self.rest:
                await stream.send_all(out)
                await self.go.wait()
                out = conn.send(h11.Data(data=self.rest))
            await stream.send_all(out + conn.send(h11.EndOfMessage()))


@dataclass
class InParts(Listening):
    """Answers every request with a 200 SSE stream written in ``parts``, one write each: the
    first at once, each next one once the test sets its gate (``gates[i]`` before
    ``parts[i + 1]``: the caller has read what it waited for), then ends the response. So a
    part the gateway reads is never joined to the next one in its read."""

    parts: list[bytes] = field(default_factory=list)
    gates: list[trio.Event] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.gates = [trio.Event() for _ in self.parts[1:]]

    async def _client(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            await read_request(conn, stream)
            headers = [(b"content-type", b"text/event-stream"), (b"connection", b"close")]
            out = conn.send(h11.Response(status_code=200, headers=headers))
            for n, part in enumerate(self.parts):
                if n:
                    await stream.send_all(out)
                    await self.gates[n - 1].wait()
                    out = b""
                out += conn.send(h11.Data(data=part))
            await stream.send_all(out + conn.send(h11.EndOfMessage()))
