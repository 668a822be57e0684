"""A Trio-native Redis client: one auto-pipelined connection under a reconnecting supervisor.

Concurrent callers append their encoded command to an output buffer and a reply slot to a FIFO
in one synchronous step; a writer task sends everything buffered in one ``send_all`` (so
concurrent commands are pipelined for free) and a reader task parses replies with hiredis and
resolves the slots in order. A caller that is cancelled or times out leaves its slot behind and
the reader still consumes its reply, so the reply stream never desyncs.

``run()`` owns the connection: it connects (TLS for ``rediss://``, then AUTH and SELECT), serves
until the connection breaks, fails every pending call with :class:`RedisUnavailable`, and
reconnects with exponential backoff. While disconnected, calls fail at once; nothing waits for a
reconnect. Start it with ``await nursery.start(client.run)``: that returns once connected and
raises :class:`RedisUnavailable` if the first connection fails.

Not supported: RESP3, pub/sub, MONITOR, blocking commands (they would hold up every caller on
the connection), Sentinel, Cluster.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import trio

from trioproxy.core.backoff import BackoffPolicy
from trioproxy.store.resp import (
    Arg,
    RedisError,
    RedisTimeout,
    RedisUnavailable,
    RedisURL,
    ReplyReader,
    Script,
    encode_command,
)

__all__ = [
    "RedisClient",
    "RedisError",
    "RedisStatistics",
    "RedisTimeout",
    "RedisUnavailable",
    "Script",
]

log = logging.getLogger(__name__)

_READ_SIZE = 65_536
# Errors that mean "this connection is unusable"; anything else is a bug and propagates.
_STREAM_ERRORS = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    hiredis.ProtocolError,
)


class _ConnectionClosed(Exception):
    """The server closed the connection."""


_CONNECT_ERRORS = (*_STREAM_ERRORS, trio.TooSlowError, RedisError, _ConnectionClosed)


def _describe(exc: BaseException) -> str:
    """``repr`` plus the cause: trio wraps SSL and socket errors in BrokenResourceError."""
    cause = exc.__cause__
    return f"{exc!r} caused by {cause!r}" if cause is not None else repr(exc)


@dataclass(frozen=True, slots=True)
class RedisStatistics:
    connected: bool
    pending: int  # commands queued or sent whose reply has not been read yet
    reconnects: int  # successful connections after the first one


class _Slot:
    __slots__ = ("done", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None


class _Connection:
    """One live connection: output buffer, reply FIFO, writer and reader tasks."""

    def __init__(self, stream: trio.abc.Stream, reader: ReplyReader, stall_timeout: float) -> None:
        self.stream = stream
        self.reader = reader
        self.stall_timeout = stall_timeout
        self.progress_at = trio.current_time()  # last reply read, or when replies became owed
        self.outbuf: list[bytes] = []
        self.slots: deque[_Slot] = deque()
        self.has_output = trio.Event()
        self.alive = True
        self.lost_reason = ""
        self._scope = trio.CancelScope()

    def submit(self, command: bytes) -> _Slot:
        slot = _Slot()
        if not self.slots:
            self.progress_at = trio.current_time()
        self.slots.append(slot)
        self.outbuf.append(command)
        self.has_output.set()
        return slot

    async def serve(self) -> None:
        """Run the writer and reader until the connection breaks (returns) or is cancelled."""
        with self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._read_loop)
                nursery.start_soon(self._watch_stall)

    def fail_pending(self) -> None:
        message = f"Redis connection lost ({self.lost_reason}); the command may have been applied"
        while self.slots:
            slot = self.slots.popleft()
            slot.value = RedisUnavailable(message)
            slot.done.set()

    def _lose(self, reason: str) -> None:
        if self.alive:
            self.alive = False
            self.lost_reason = reason
        self._scope.cancel()

    async def _write_loop(self) -> None:
        try:
            while True:
                if not self.outbuf:
                    self.has_output = trio.Event()
                    await self.has_output.wait()
                data = b"".join(self.outbuf)
                self.outbuf.clear()
                await self.stream.send_all(data)
        except _STREAM_ERRORS as exc:
            self._lose(f"send failed: {_describe(exc)}")

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.stream.receive_some(_READ_SIZE)
                if not data:
                    self._lose("closed by the server")
                    return
                self.progress_at = trio.current_time()
                self.reader.feed(data)
                for reply in self.reader.replies():
                    if not self.slots:
                        self._lose(f"unsolicited reply {reply!r:.80}")
                        return
                    slot = self.slots.popleft()
                    slot.value = reply
                    slot.done.set()
        except _STREAM_ERRORS as exc:
            self._lose(f"receive failed: {_describe(exc)}")

    async def _watch_stall(self) -> None:
        """Drop a connection that owes replies but has read nothing for ``stall_timeout``:
        a hung server or a silent network partition would otherwise never reconnect. Replies
        already in the socket are read first: after a pause of this whole process (a loaded
        host), this watch and the reader wake in the same scheduler batch, and the watch must
        not count the time the reader could not run as the server's."""
        while True:
            await trio.sleep(self.stall_timeout / 4)
            if not (self.slots and trio.current_time() - self.progress_at > self.stall_timeout):
                continue
            await trio.lowlevel.checkpoint()  # the reader's turn, if it was woken with us
            stalled = trio.current_time() - self.progress_at
            if self.slots and stalled > self.stall_timeout:
                self._lose(f"no reply for {stalled:.1f}s (stall_timeout={self.stall_timeout}s)")
                return


class RedisClient:
    """Redis over one auto-pipelined connection. See the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        call_timeout: float = 1.0,
        connect_timeout: float = 2.0,
        max_pending: int = 10_000,
        stall_timeout: float = 5.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        rng: random.Random | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._url = RedisURL.parse(url)
        self._ssl_context = ssl_context or self._url.ssl_context()  # used for rediss:// only
        self.call_timeout = call_timeout  # seconds from submit to reply, per call
        self.connect_timeout = connect_timeout  # seconds for TCP + TLS + AUTH + SELECT
        self.max_pending = max_pending
        self.stall_timeout = stall_timeout  # seconds without a reply while owed -> reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._conn: _Connection | None = None
        self._connected = trio.Event()  # set while a connection is up; replaced when lost
        self._reconnects = 0

    def __repr__(self) -> str:
        return f"RedisClient({self._url!r})"

    def statistics(self) -> RedisStatistics:
        conn = self._conn
        return RedisStatistics(
            connected=conn is not None and conn.alive,
            pending=len(conn.slots) if conn is not None else 0,
            reconnects=self._reconnects,
        )

    async def wait_connected(self) -> None:
        """Return once a connection is up (at once if it is up now)."""
        await self._connected.wait()

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply (bytes, int, list, None...).

        Raises :class:`RedisError` for an error reply, :class:`RedisUnavailable` at once if
        not connected or ``max_pending`` commands are in flight, or if the connection breaks
        before the reply, and :class:`RedisTimeout` after ``call_timeout`` seconds.
        """
        command = encode_command(args)
        conn = self._conn
        if conn is None or not conn.alive:
            await trio.lowlevel.checkpoint()  # failing fast must still be a scheduling point
            reason = f" ({conn.lost_reason})" if conn is not None else ""
            raise RedisUnavailable(f"not connected to {self._url!r}{reason}")
        if len(conn.slots) >= self.max_pending:
            await trio.lowlevel.checkpoint()
            raise RedisUnavailable(f"{self.max_pending} Redis commands already pending")
        slot = conn.submit(command)
        try:
            with trio.fail_after(self.call_timeout):
                await slot.done.wait()
        except trio.TooSlowError:
            name = args[0] if isinstance(args[0], str) else repr(args[0])
            raise RedisTimeout(
                f"no reply to {name} within call_timeout={self.call_timeout}s"
            ) from None
        value = slot.value
        if isinstance(value, RedisError):
            raise value
        return value

    async def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run ``script`` by SHA; if the server does not have it (NOSCRIPT), send it with EVAL."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except RedisUnavailable:
            raise
        except RedisError as exc:
            if exc.code != "NOSCRIPT":
                raise
        return await self.execute("EVAL", script.text, len(keys), *keys, *args)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the connection until cancelled: connect, serve, reconnect with backoff."""
        try:
            conn = await self._connect()
        except _CONNECT_ERRORS as exc:
            raise RedisUnavailable(f"cannot connect to {self._url!r}: {_describe(exc)}") from exc
        task_status.started()
        while True:
            await self._serve(conn)
            conn = await self._reconnect()
            self._reconnects += 1

    async def _serve(self, conn: _Connection) -> None:
        self._conn = conn
        self._connected.set()
        try:
            await conn.serve()
        finally:
            self._connected = trio.Event()
            conn.alive = False
            conn.lost_reason = conn.lost_reason or "client shut down"
            conn.fail_pending()
            await trio.aclose_forcefully(conn.stream)
        log.warning("Redis %r: connection lost (%s)", self._url, conn.lost_reason)

    async def _reconnect(self) -> _Connection:
        failures = 0
        while True:
            delay = BackoffPolicy(self.backoff_initial, self.backoff_max).delay(failures, self._rng)
            await trio.sleep(delay)
            try:
                conn = await self._connect()
            except _CONNECT_ERRORS as exc:
                failures += 1
                log.debug(
                    "Redis %r: reconnect attempt %d failed: %s", self._url, failures, _describe(exc)
                )
                continue
            log.warning("Redis %r: reconnected after %d failed attempts", self._url, failures)
            return conn

    async def _connect(self) -> _Connection:
        """TCP (+ TLS), then AUTH/SELECT, all within ``connect_timeout``."""
        url = self._url
        with trio.fail_after(self.connect_timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(url.host, url.port)
            try:
                if url.tls:
                    assert self._ssl_context is not None
                    stream = trio.SSLStream(stream, self._ssl_context, server_hostname=url.host)
                    await stream.do_handshake()  # verify now; SSLStream would do it lazily
                reader = ReplyReader()
                handshake = url.handshake()
                if handshake:
                    await stream.send_all(b"".join(handshake))
                    replies: list[Any] = []
                    while len(replies) < len(handshake):
                        data = await stream.receive_some(_READ_SIZE)
                        if not data:
                            raise _ConnectionClosed("closed by the server during AUTH/SELECT")
                        reader.feed(data)
                        replies.extend(reader.replies())
                    for reply in replies:
                        if isinstance(reply, RedisError):
                            raise reply
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        return _Connection(stream, reader, self.stall_timeout)
