"""HTTP/1.1 server framing for the simulator: h11 on a raw trio stream.

One :class:`HttpConnection` per accepted socket; requests are read whole
(bodies are capped at :data:`MAX_BODY_BYTES`), responses are written as a head
then body pieces. Keep-alive follows h11's state machine. While a response is
in flight, :meth:`HttpConnection.wait_peer_closed` watches the receive side so
that a client that goes away is noticed during delays, not at the next write.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

import h11
import trio

MAX_BODY_BYTES = 8 * 1024 * 1024
REQUEST_IDLE_S = 120.0
"""Longest wait for the next complete request on an open connection."""
RECV_BYTES = 65_536
LINGER_S = 2.0
"""After an early error (413), how long unread input is drained before closing,
so that the client, still writing its body, gets to read the answer."""
MAX_PIPELINED_BYTES = 1024 * 1024
"""Bytes of a pipelined next request buffered while a response is in flight."""

Headers = Sequence[tuple[bytes, bytes]]
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus} | {529: b"Overloaded"}


class BodyTooLarge(Exception):
    """The request body exceeds :data:`MAX_BODY_BYTES`; answer 413 and close."""


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes


class HttpConnection:
    __slots__ = ("_chunked", "_h11", "closed", "peer_eof", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self.peer_eof = False
        self.closed = False
        self._chunked = False

    async def next_request(self) -> Request | None:
        """The next complete request, or ``None`` once the peer closed or idled out.

        Raises :class:`BodyTooLarge` and :class:`h11.RemoteProtocolError`.
        """
        head: h11.Request | None = None
        parts: list[bytes] = []
        size = 0
        with trio.move_on_after(REQUEST_IDLE_S):
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    if self._h11.they_are_waiting_for_100_continue:
                        await self._send(h11.InformationalResponse(status_code=100, headers=[]))
                    data = await self._receive()
                    self._h11.receive_data(data)
                elif isinstance(event, h11.Request):
                    head = event
                    length = _content_length(event.headers)
                    if length is not None and length > MAX_BODY_BYTES:
                        raise BodyTooLarge
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > MAX_BODY_BYTES:
                        raise BodyTooLarge
                    parts.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    assert head is not None
                    target = bytes(head.target).split(b"?", 1)[0]
                    return Request(
                        head.method.decode("ascii", "replace"),
                        target.decode("ascii", "replace"),
                        {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers},
                        b"".join(parts),
                    )
                else:  # ConnectionClosed or PAUSED: nothing more on this connection
                    return None
        return None

    async def _receive(self) -> bytes:
        try:
            data = bytes(await self.stream.receive_some(RECV_BYTES))
        except trio.BrokenResourceError:
            data = b""
        if not data:
            self.peer_eof = True
        return data

    async def wait_peer_closed(self) -> None:
        """Return once the peer has closed (EOF or reset); buffer pipelined bytes."""
        buffered = 0
        while True:
            data = await self._receive()
            if not data:
                return
            buffered += len(data)
            self._h11.receive_data(data)
            if buffered > MAX_PIPELINED_BYTES:
                await trio.sleep_forever()

    async def discard_input(self) -> None:
        """Read and drop what the peer still sends, for at most :data:`LINGER_S`."""
        with trio.move_on_after(LINGER_S):
            while await self._receive():
                pass

    async def _send(self, event: h11.Event) -> None:
        data = self._h11.send(event)
        if data:
            await self.stream.send_all(data)

    def head_bytes(self, status: int, headers: Headers) -> bytes:
        reason = _REASONS.get(status, b"")
        response = h11.Response(status_code=status, headers=list(headers), reason=reason)
        return self._h11.send(response) or b""

    def data_bytes(self, data: bytes) -> bytes:
        return self._h11.send(h11.Data(data=data)) or b""

    def end_bytes(self) -> bytes:
        return self._h11.send(h11.EndOfMessage()) or b""

    async def send_head(self, status: int, headers: Headers) -> None:
        head = self.head_bytes(status, headers)
        self._chunked = b"\r\ntransfer-encoding: chunked\r\n" in head.lower()
        await self.stream.send_all(head)

    async def send_data(self, data: bytes) -> None:
        """One body piece in one write.

        For chunked bodies the framing is written here rather than by h11, whose
        chunked writer keeps no state, to keep per-chunk work to one format.
        """
        if self._chunked:
            await self.stream.send_all(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            await self.stream.send_all(self._h11.send(h11.Data(data=data)) or b"")

    async def send_end(self) -> None:
        await self._send(h11.EndOfMessage())

    async def send_whole(self, status: int, headers: Headers, body: bytes) -> None:
        """A complete response with a content-length, in one write."""
        all_headers = [*headers, (b"content-length", b"%d" % len(body))]
        await self.stream.send_all(
            self.head_bytes(status, all_headers) + self.data_bytes(body) + self.end_bytes()
        )

    def next_cycle(self) -> bool:
        """Prepare for the next request; ``False`` when the connection must close."""
        if self.peer_eof or self.closed:
            return False
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            return True
        return False

    def can_respond(self) -> bool:
        return self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    async def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0, then close)."""
        if self.closed:
            return
        tcp = self.stream
        if isinstance(tcp, trio.SSLStream):  # under TLS: the TCP stream beneath
            tcp = tcp.transport_stream
        assert isinstance(tcp, trio.SocketStream)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.aclose()

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            await trio.aclose_forcefully(self.stream)


def _content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


__all__ = [
    "MAX_BODY_BYTES",
    "REQUEST_IDLE_S",
    "BodyTooLarge",
    "HttpConnection",
    "Request",
]
