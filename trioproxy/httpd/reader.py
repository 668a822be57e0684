"""The reading half of a client connection: a task that reads and parses, and what the
serving side waits on.

The reader keeps reading while a response is written, so a client that leaves is seen at
once (EOF) and reaches the app as ``http.disconnect`` (and the request's disconnect hook);
it pauses when the app lags behind (body bytes above ``recv_high_water``, or
``max_pipelined`` requests queued ahead of their responses), so memory per connection is
bounded. :class:`~trioproxy.httpd.conn.Connection` serves what it parses.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from trioproxy.httpd.limits import RECV_BYTES, HttpLimits
from trioproxy.httpd.parse import ProtocolError, RequestParser
from trioproxy.upstream.http1 import plain_socket


class ConnectionReader:
    __slots__ = (  # one per open connection, with Connection's: no instance dict
        "_gone",
        "_head_started",
        "_in_head",
        "_resume",
        "_sock",
        "eof",
        "error",
        "limits",
        "lot",
        "parser",
        "stream",
    )

    def __init__(self, stream: trio.abc.Stream, limits: HttpLimits) -> None:
        self.limits = limits
        self.stream = stream
        self._sock = plain_socket(stream)
        """The stdlib socket of a plain TCP connection (the fast paths), else None."""
        self.parser = RequestParser(limits)
        self.lot = trio.lowlevel.ParkingLot()
        """Where the serving side waits for the reader (heads, body, EOF)."""
        self._resume = trio.lowlevel.ParkingLot()
        """Where a paused reader waits for the serving side to consume."""
        self.eof = False
        self.error: ProtocolError | None = None
        self._head_started = 0.0
        self._in_head = False
        self._gone: Callable[[], None] | None = None
        """The running request's disconnect hook (:meth:`on_disconnect`)."""

    def wake(self) -> None:
        """Let the serving side re-check its state (drain started)."""
        self.lot.unpark_all()

    def _must_pause(self) -> bool:
        parser = self.parser
        if len(parser.heads) >= self.limits.max_pipelined:
            return True
        current = parser.current
        return current is not None and current.buffered > self.limits.recv_high_water

    async def _read(self) -> None:
        stream, parser, lot, sock = self.stream, self.parser, self.lot, self._sock
        data: bytes | bytearray
        while True:
            while self._must_pause():
                await self._resume.park()
            if sock is not None:
                # plain TCP: wait, then read, as upstream/http1.py does (the wait is the
                # checkpoint). The reader waits here for a whole response: without
                # SocketStream.receive_some's three frames and error-translating context
                # manager, ~1.3 KB less per open connection
                try:
                    await trio.lowlevel.wait_readable(sock)
                    data = sock.recv(RECV_BYTES)
                except BlockingIOError:
                    continue
                except (OSError, trio.ClosedResourceError):
                    data = b""  # as receive_some's Broken/ClosedResourceError
            else:
                try:
                    data = await stream.receive_some(RECV_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
            if not data:
                self._disconnected()
                return
            try:
                parser.feed(data)
            except ProtocolError as err:
                self.error = err
                lot.unpark_all()
                return
            if parser.in_head != self._in_head:
                self._in_head = parser.in_head
                if parser.in_head:
                    self._head_started = trio.current_time()
            lot.unpark_all()

    async def _reader_caught_up(self) -> bool:
        """After a deadline fired: whether the reader still had bytes to hand over.

        A busy event loop can run a timer before the reader whose bytes arrived in time;
        one scheduling round lets the reader take what the kernel already holds, so a
        saturated gateway does not blame its own lag on the client.
        """
        before = (self.parser.bytes_fed, self.eof, self.error)
        await trio.lowlevel.checkpoint()
        return (self.parser.bytes_fed, self.eof, self.error) != before

    def _disconnected(self) -> None:
        """EOF or a dead connection: wake the serving side, call the request's hook."""
        self.eof = True
        self.lot.unpark_all()
        gone, self._gone = self._gone, None
        if gone is not None:
            gone()

    def on_disconnect(self, gone: Callable[[], None] | None) -> None:
        """Call ``gone()`` once if the client goes away (EOF, a dead connection) while the
        current request runs, at once if it already has; None removes it. Offered in the
        scope as ``trioproxy.on_disconnect``: what an ``http.disconnect`` watcher task
        learns, without the task."""
        self._gone = gone
        if gone is not None and self.eof:
            self._disconnected()


__all__ = ["ConnectionReader"]
