"""Load mode of the simulator: precomputed answers, one write per chunk, one scheduler.

``trioproxy simulate --load`` drives benchmarks of 1,000 concurrent streams
without becoming the bottleneck. It answers ``POST /v1/chat/completions`` and
``POST /v1/messages`` in the same wire formats as :class:`~.server.Simulator`
(same :mod:`.plan`, :mod:`.openai_wire`, :mod:`.anthropic_wire` bytes), but:

* an answer's bytes, HTTP framing included, are computed once per shape
  (wire, model, stream, usage, token count, status) and reused: the text
  does not depend on the prompt and every answer of a shape has the same id;
* a stream is a list of writes: the head with the first event, then one
  content chunk per write on an absolute schedule (``t0 + i * chunk_ms``),
  then the tail in one write;
* one scheduler task writes every due chunk of every stream with a plain
  non-blocking ``send`` (a heap of due times), instead of a task and a timer
  per stream. A stream whose client does not keep up is handed back to its
  connection task, which waits until the socket is writable;
* requests are parsed with httptools; no auth, no body validation beyond the
  wire's own parse; faults limited to ``tokens``, ``chunk_ms``, ``ttft_ms`` and
  ``status`` (``x-sim-fault`` / ``x-sim-tokens`` headers or the defaults).

``GET /_sim/stats`` reports ``output_tokens`` (content chunks fully written),
``responses``, ``connections`` and ``broken``; ``POST /_sim/reset`` zeroes them.
"""

from __future__ import annotations

import functools
import heapq
import socket
from dataclasses import dataclass, field

import httptools
import orjson
import trio

from trioproxy.simulator.anthropic_wire import ANTHROPIC
from trioproxy.simulator.faults import DEFAULT_RETRY_AFTER, Fault, FaultError
from trioproxy.simulator.openai_wire import OPENAI
from trioproxy.simulator.plan import BadRequest, Intent, Wire, make_plan

RECV_BYTES = 65_536
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 429: b"Too Many Requests",
            500: b"Internal Server Error", 503: b"Service Unavailable", 529: b"Overloaded"}  # fmt: skip
_LOAD_KEYS = frozenset({"tokens", "chunk_ms", "ttft_ms", "status", "retry_after"})


def _frame(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _whole(status: int, body: bytes, extra: bytes = b"") -> bytes:
    reason = _REASONS.get(status, b"Error")
    return b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b\r\n%b" % (
        status,
        reason,
        len(body),
        extra,
        body,
    )


@dataclass(frozen=True, slots=True)
class Answer:
    writes: tuple[bytes, ...]
    """Each element is one socket write; a non-stream answer is one write."""
    tokens: tuple[int, ...]
    """Content chunks (output tokens) carried by each write."""


_WIRES: dict[bytes, Wire] = {b"/v1/chat/completions": OPENAI, b"/v1/messages": ANTHROPIC}


@functools.lru_cache(maxsize=512)
def build_answer(path: bytes, intent: Intent, n_tokens: int, status: int | None,
                 retry_after: float | None) -> Answer:  # fmt: skip
    """The precomputed bytes of one answer shape on the wire served at ``path`` (pure)."""
    wire = _WIRES[path]
    if status is not None:
        extra = b""
        if status in (429, 529):
            extra = b"retry-after: %d\r\n" % round(
                DEFAULT_RETRY_AFTER if retry_after is None else retry_after
            )
        return Answer((_whole(status, wire.error_body(status, "simulated failure"), extra),), (0,))
    plan = make_plan(intent, n_tokens, "chatcmpl-load" if wire is OPENAI else "msg_load", 0)
    if not intent.stream:
        return Answer((_whole(200, wire.completion(plan)),), (plan.output_tokens,))
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    encode = wire.chunk_encoder(plan)
    chunks = [_frame(encode(piece)) for piece in plan.pieces]
    first = head + _frame(wire.stream_head(plan))
    tail = _frame(wire.stream_tail(plan)) + b"0\r\n\r\n"
    if not chunks:
        return Answer((first + tail,), (plan.head_tokens,))
    writes = [first + chunks[0], *chunks[1:], tail]
    tokens = [plan.head_tokens + 1] + [1] * (len(chunks) - 1) + [0]
    return Answer(tuple(writes), tuple(tokens))


@dataclass(slots=True)
class LoadStats:
    output_tokens: int = 0
    responses: int = 0
    connections: int = 0
    broken: int = 0

    def snapshot(self) -> dict[str, int]:
        return {"output_tokens": self.output_tokens, "responses": self.responses,
                "connections": self.connections, "broken": self.broken}  # fmt: skip


@dataclass(eq=False, slots=True)
class _Stream:
    sock: socket.socket
    answer: Answer
    t0: float
    interval: float
    index: int = 0
    pending: bytes = b""
    """Unsent rest of a write the client could not take (the connection task flushes it)."""
    state: str = "running"
    """running | blocked | done | broken"""
    wake: trio.Event = field(default_factory=trio.Event)


class _Request:
    """httptools callbacks for one request."""

    __slots__ = ("body", "complete", "headers", "keep_alive", "parser", "url")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.keep_alive = True
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = bool(self.parser.should_keep_alive())


class LoadSimulator:
    def __init__(
        self, *, tokens: int = 50, chunk_ms: float = 20.0, ttft_ms: float = 0.0,
        status: int | None = None,
    ) -> None:  # fmt: skip
        self.default = Fault(tokens=tokens, chunk_ms=chunk_ms, ttft_ms=ttft_ms, status=status)
        self.stats = LoadStats()
        self._heap: list[tuple[float, int, _Stream]] = []
        self._seq = 0
        self._changed = trio.Event()

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:  # fmt: skip
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(4096)
        listener.setblocking(False)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._scheduler)
                task_status.started(listener.getsockname()[1])
                while True:
                    await trio.lowlevel.wait_readable(listener)
                    while True:
                        try:
                            conn, _ = listener.accept()
                        except BlockingIOError:
                            break
                        conn.setblocking(False)
                        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        nursery.start_soon(self._connection, conn)
        finally:
            listener.close()

    # --- scheduler -----------------------------------------------------------------

    def _push(self, st: _Stream, due: float) -> None:
        self._seq += 1
        heap = self._heap
        if not heap or due < heap[0][0]:
            self._changed.set()
        heapq.heappush(heap, (due, self._seq, st))

    async def _scheduler(self) -> None:
        heap = self._heap
        while True:
            if heap:
                with trio.move_on_at(heap[0][0]):
                    await self._changed.wait()
            else:
                await self._changed.wait()
            self._changed = trio.Event()
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                st = heapq.heappop(heap)[2]
                self._write(st, now)

    def _write(self, st: _Stream, now: float) -> None:
        """Write the stream's next chunk without blocking; reschedule or hand it back."""
        answer, i = st.answer, st.index
        data = answer.writes[i]
        try:
            sent = st.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            st.state = "broken"
            st.wake.set()
            return
        st.index = i + 1
        if sent < len(data):
            st.pending = data[sent:]
            st.state = "blocked"
            st.wake.set()
            return
        self.stats.output_tokens += answer.tokens[i]
        if st.index == len(answer.writes):
            st.state = "done"
            st.wake.set()
            return
        self._push(st, st.t0 + st.index * st.interval)

    # --- connections ----------------------------------------------------------------

    async def _send_all(self, sock: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)

    async def _read_request(self, sock: socket.socket) -> _Request | None:
        req = _Request()
        while not req.complete:
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(RECV_BYTES)
            except BlockingIOError:
                continue
            if not data:
                return None
            req.parser.feed_data(data)
        return req

    async def _connection(self, sock: socket.socket) -> None:
        self.stats.connections += 1
        try:
            while (req := await self._read_request(sock)) is not None:
                if not await self._answer(sock, req) or not req.keep_alive:
                    break
        except (OSError, httptools.HttpParserError):
            pass
        finally:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def _answer(self, sock: socket.socket, req: _Request) -> bool:
        path = req.url.split(b"?", 1)[0]
        if path == b"/_sim/stats":
            await self._send_all(sock, _whole(200, orjson.dumps(self.stats.snapshot())))
            return True
        if path == b"/_sim/reset":
            self.stats = LoadStats()
            await self._send_all(sock, _whole(200, b'{"ok":true}'))
            return True
        wire = _WIRES.get(path)
        try:
            if wire is None:
                raise BadRequest(f"no such path in load mode: {path.decode('latin-1')}")
            fault = self._fault(req.headers)
            intent = wire.parse(orjson.loads(b"".join(req.body)))
        except (ValueError, FaultError) as exc:  # BadRequest and JSON errors are ValueErrors
            body = (wire or OPENAI).error_body(400, str(exc))
            await self._send_all(sock, _whole(400 if wire else 404, body))
            return True
        intent = Intent(intent.model, intent.input_tokens, "load", None, intent.stream,
                        intent.include_usage, None)  # fmt: skip
        n = fault.tokens if fault.tokens is not None else 0
        answer = build_answer(path, intent, n, fault.status, fault.retry_after)
        if fault.ttft_ms:
            await trio.sleep(fault.ttft_ms / 1000)
        self.stats.responses += 1
        interval = (fault.chunk_ms or 0.0) / 1000
        if len(answer.writes) == 1:
            await self._send_all(sock, b"".join(answer.writes))
            self.stats.output_tokens += sum(answer.tokens)
            return True
        st = _Stream(sock, answer, trio.current_time(), interval)
        self._write(st, st.t0)
        while st.state not in ("done", "broken"):
            await st.wake.wait()
            st.wake = trio.Event()
            if st.state == "blocked":
                await self._send_all(sock, st.pending)
                self.stats.output_tokens += st.answer.tokens[st.index - 1]
                st.pending, st.state = b"", "running"
                if st.index == len(answer.writes):
                    st.state = "done"
                else:
                    due = max(trio.current_time(), st.t0 + st.index * interval)
                    self._push(st, due)
        if st.state == "broken":
            self.stats.broken += 1
            return False
        return True

    def _fault(self, headers: dict[bytes, bytes]) -> Fault:
        fault = Fault.parse(headers.get(b"x-sim-fault", b"").decode("latin-1"))
        unknown = set(fault.to_dict()) - _LOAD_KEYS
        if unknown:
            raise FaultError(f"load mode supports only {sorted(_LOAD_KEYS)}, got {sorted(unknown)}")
        if (tokens := headers.get(b"x-sim-tokens")) is not None:
            fault = Fault(tokens=int(tokens)).over(fault)
        return fault.over(self.default)


def main_load(
    host: str, port: int, tokens: int, chunk_ms: float, status: int | None = None
) -> None:
    """Run a load-mode simulator until interrupted; prints the bound address."""

    async def run() -> None:
        sim = LoadSimulator(tokens=tokens, chunk_ms=chunk_ms, status=status)
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(sim.serve, host, port)
            print(f"trioproxy load simulator listening on http://{host}:{bound}", flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


__all__ = ["Answer", "LoadSimulator", "LoadStats", "build_answer", "main_load"]
