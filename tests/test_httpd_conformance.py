"""Request smuggling refused; and llhttp (our parser) against h11 on generated messages."""

from __future__ import annotations

import re
from dataclasses import dataclass

import h11
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.httpd_helpers import EchoApp, read_responses, start_server, wait_closed
from trioproxy.httpd.limits import HttpLimits
from trioproxy.httpd.parse import ProtocolError, RequestParser

SMUGGLING = {
    "cl_and_te": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_and_cl": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 4\r\n\r\n0\r\n\r\n",
    "duplicate_cl_same": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    "duplicate_cl_differ": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
    b"Content-Length: 5\r\n\r\nabcde",
    "cl_list": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc",
    "cl_plus_sign": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
    "chunk_size_not_hex": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nabc\r\n0\r\n\r\n",
    "chunk_size_overflow": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "chunk_size_negative": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"-3\r\nabc\r\n0\r\n\r\n",
    "chunk_missing_crlf": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabcX\r\n0\r\n\r\n",
    "obs_fold": b"POST / HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n",
    "obs_fold_te": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "space_in_header_name": b"GET / HTTP/1.1\r\nHost: t\r\nX A: b\r\n\r\n",
    "space_before_colon": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length : 3\r\n\r\nabc",
    "ctl_in_header_name": b"GET / HTTP/1.1\r\nHost: t\r\nX\x01A: b\r\n\r\n",
    "empty_header_name": b"GET / HTTP/1.1\r\nHost: t\r\n: b\r\n\r\n",
    "nul_in_value": b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n",
    "bare_lf": b"GET / HTTP/1.1\nHost: t\n\n",
    "te_in_http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "no_host": b"GET / HTTP/1.1\r\nX: y\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "te_chunked_twice": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "space_in_target": b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
async def test_smuggling_is_refused_with_400(nursery: trio.Nursery, name: str) -> None:
    app = EchoApp()
    srv = await start_server(nursery, app)
    stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
    async with stream:
        await stream.send_all(SMUGGLING[name])
        got = await wait_closed(stream)
    assert got.startswith(b"HTTP/1.1 400 "), got[:60]
    assert b"connection: close\r\n" in got
    assert app.bodies == []  # the app never saw it


async def test_unknown_transfer_coding_is_not_implemented(nursery: trio.Nursery) -> None:
    srv = await start_server(nursery, EchoApp())
    stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
    async with stream:
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked"
                              b"\r\n\r\n0\r\n\r\n")  # fmt: skip
        assert (await wait_closed(stream)).startswith(b"HTTP/1.1 501 ")


async def test_an_upgrade_without_a_body_is_ignored_and_served_once(
    nursery: trio.Nursery,
) -> None:
    """``Upgrade: h2c`` (curl --http2 on http://) is ignored: the request is served over
    HTTP/1.1, once, and the next request on the connection too (it was answered by the app
    and then by a stray 501, a second response to one request)."""
    app = EchoApp()
    srv = await start_server(nursery, app)
    stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
    async with stream:
        await stream.send_all(
            b"GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: h2c\r\nConnection: Upgrade, "
            b"HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        )
        first, _, second, _ = await read_responses(stream, 2)
        rest = await wait_closed(stream)
    assert (first.status_code, second.status_code, rest) == (200, 200, b"")
    assert app.bodies == [b"", b"hi"]


@pytest.mark.parametrize(
    ("data", "status"),
    [(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nUpgrade: h2c\r\n"
      b"Connection: Upgrade\r\n\r\nhello", b"501"),
     (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nUpgrade: x\r\n"
      b"Connection: Upgrade\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"501"),
     (b"CONNECT /echo HTTP/1.1\r\nHost: t\r\n\r\n", b"501"),
     (b"CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n\r\n", b"400")],
    ids=["content-length", "chunked", "connect", "connect-authority"],
)  # fmt: skip
async def test_an_upgrade_with_a_body_or_connect_gets_one_refusal(
    nursery: trio.Nursery, data: bytes, status: bytes
) -> None:
    """llhttp stops framing at an upgrade: such a request is refused with exactly one
    response and never reaches the app (it got an empty body, then a second response)."""
    app = EchoApp()
    srv = await start_server(nursery, app)
    stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
    async with stream:
        await stream.send_all(data)
        got = await wait_closed(stream)
    assert got.startswith(b"HTTP/1.1 " + status) and got.count(b"HTTP/1.1 ") == 1, got
    assert app.bodies == []


# --- differential test against h11 ------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))


@dataclass(frozen=True)
class Parsed:
    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def ours(data: bytes, cuts: list[int]) -> Parsed | str:
    parser = RequestParser(HttpLimits())
    last = 0
    try:
        for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
            parser.feed(data[last:cut])
            last = cut
    except ProtocolError:
        return "reject"
    if not parser.heads:
        return "incomplete"
    req = parser.heads[0]
    if not req.complete:
        return "incomplete"
    return Parsed(req.method.encode(), req.target, tuple(req.headers), req.take_body())


def theirs(data: bytes) -> Parsed | str:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    head: h11.Request | None = None
    body = b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return "incomplete"
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return Parsed(head.method, head.target,
                              tuple((k, v) for k, v in head.headers.raw_items()), body)  # fmt: skip
    except h11.RemoteProtocolError:
        return "reject"


def _lower(p: Parsed | str) -> Parsed | str:
    if isinstance(p, str):
        return p
    return Parsed(p.method, p.target, tuple((k.lower(), v) for k, v in p.headers), p.body)


token = st.text(TCHAR, min_size=1, max_size=12)
bad_token = st.builds(lambda a, c, b: a + c + b, token, st.sampled_from(' @(),;:"/[]{}\x01\x7f'),
                      token)  # fmt: skip
value = st.text(VCHAR + " \t", max_size=20).map(lambda v: v.strip(" \t"))
# h11 accepts other control characters in values, a bare LF as a line end and obs-fold;
# llhttp refuses them (pinned below and in SMUGGLING).
bad_value = st.builds(lambda a, c, b: a + c + b, value, st.sampled_from("\x00\r\n"),
                      st.text(VCHAR, min_size=1, max_size=5))  # fmt: skip
target = st.builds(lambda p, q: "/" + p + (("?" + q) if q else ""),
                   st.text(TCHAR.replace("#", ""), max_size=15),
                   st.text(TCHAR.replace("#", "") + "=&", max_size=10))  # fmt: skip


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    # llhttp knows a fixed list of methods and refuses others (h11 takes any token):
    # the one intended difference, pinned in test_unknown_method_is_refused.
    method = draw(st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH",
                                             "OPTIONS", "HEAD"]), bad_token))  # fmt: skip
    version = draw(st.sampled_from(["1.1", "1.1", "1.1", "1.0"]))
    headers: list[tuple[str, str]] = []
    if version == "1.1" and draw(st.integers(0, 9)) > 0:
        headers.append(("Host", draw(value.filter(bool)) or "h"))
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.one_of(token, token, token, bad_token))
        if name.lower() in ("content-length", "transfer-encoding", "host", "expect",
                            "connection", "upgrade"):  # fmt: skip
            continue
        headers.append((name, draw(st.one_of(value, value, value, bad_value))))
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["none", "cl", "cl", "chunked", "chunked", "cl_short",
                                    "bad_chunk", "cl_te"]))  # fmt: skip
    payload = b""
    if framing in ("cl", "cl_short", "cl_te"):
        n = len(body) + (5 if framing == "cl_short" else 0)
        headers.append(("Content-Length", str(n)))
        payload = body
    if framing in ("chunked", "bad_chunk", "cl_te") and version == "1.1":
        headers.append(("Transfer-Encoding", "chunked"))
        size = b"%x" % len(body) if framing != "bad_chunk" else b"g%x" % len(body)
        payload = (size + b"\r\n" + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    order = draw(st.permutations(headers))
    head = f"{method} {draw(target)} HTTP/{version}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in order
    )
    return head.encode("latin-1") + b"\r\n" + payload


def test_unknown_method_is_refused() -> None:
    assert ours(b"FROB / HTTP/1.1\r\nHost: t\r\n\r\n", []) == "reject"


@pytest.mark.parametrize("ctl", [1, 8, 0x1F, 0x7F])
def test_control_characters_in_values_are_refused(ctl: int) -> None:
    """Stricter than h11, which lets them through."""
    data = b"GET / HTTP/1.1\r\nHost: t\r\nX: a" + bytes([ctl]) + b"b\r\n\r\n"
    assert ours(data, []) == "reject"


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.lists(st.integers(0, 400), max_size=3))
@example(b"GET / HTTP/1.1\r\nHost: 0\r\n0: \n0:\r\n\r\n", [])  # found by a run on 12-05
@example(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 22\r\n\r\n\r\ntransfer-encoding: x", [])
def test_llhttp_agrees_with_h11(data: bytes, cuts: list[int]) -> None:
    """Both accept or both refuse; when both accept, the same request (fed in pieces).

    Where h11 follows RFC 9112's leniency and we refuse on purpose (Content-Length with
    Transfer-Encoding, a request smuggling vector), ours must refuse.
    """
    head = data.split(b"\r\n\r\n", 1)[0]
    lowered = head.lower()  # the head only: the body is random bytes and may hold these words
    if b"\r\ncontent-length:" in lowered and b"\r\ntransfer-encoding:" in lowered:
        assert ours(data, cuts) == "reject"
        return
    if b"\x00" in head or re.search(rb"\r(?!\n)|(?<!\r)\n", head):
        # A NUL, a bare CR or a bare LF in the head: h11 takes a bare LF as a line end
        # (so "X: \nY:" is two headers to it); we refuse all three on purpose.
        assert ours(data, cuts) == "reject", data
        return
    assert _lower(ours(data, cuts)) == _lower(theirs(data)), data
