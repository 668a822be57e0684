"""The upstream transport over real sockets: keep-alive pool, TLS with a test CA and SNI,
CONNECT proxies, dead and stale connections, the connect timeout, exception mapping."""

from __future__ import annotations

from functools import partial

import httpx
import openai
import orjson
import pytest
import trio

from tests.fixtures_gateway import start_gateway
from tests.settings_factory import KEY, chain_settings
from tests.upstream_servers import ConnectProxy, FlakyKeepAlive, start_tls_simulator
from trioproxy.config.model import ProviderConfig
from trioproxy.providers.base import UpstreamRequest
from trioproxy.simulator import Simulator
from trioproxy.upstream import transport as transport_module
from trioproxy.upstream.transport import (
    HttpTransport,
    UpstreamConnectError,
    UpstreamIOError,
)

AUTH = (("content-type", "application/json"), ("authorization", "Bearer sk-test"))


def chat(stream: bool = False, tokens: int = 5, fault: str = "") -> UpstreamRequest:
    body = {"model": "gpt-4o-mini", "stream": stream,
            "messages": [{"role": "user", "content": "hello"}]}  # fmt: skip
    headers = (*AUTH, ("x-sim-tokens", str(tokens)))
    if fault:
        headers = (*headers, ("x-sim-fault", fault))
    return UpstreamRequest("/v1/chat/completions", headers, orjson.dumps(body))


def provider(url: str, **kw: object) -> ProviderConfig:
    return ProviderConfig(name="p", kind="openai", base_url=url, **kw)  # type: ignore[arg-type]


async def start_sim(nursery: trio.Nursery) -> tuple[Simulator, str]:
    sim = Simulator()
    port = await nursery.start(sim.serve, "127.0.0.1", 0)
    return sim, f"http://127.0.0.1:{port}"


async def complete(t: HttpTransport, p: ProviderConfig, req: UpstreamRequest) -> tuple[int, bytes]:
    async with t.open(p, req, connect_timeout=5) as resp:
        return resp.status, await resp.read(1 << 20)


async def test_keep_alive_reuses_one_connection_for_json_and_streams(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery)
    t, p = HttpTransport({}, env={}), provider(url)
    for stream in (False, True, False, True):
        status, body = await complete(t, p, chat(stream))
        assert status == 200
        assert (b"[DONE]" in body) == stream
    assert t.pool(p).opened == 1 and sim.stats.connections == 1
    assert t.pool(p).idle == 1


async def test_stream_body_arrives_in_pieces_and_ends_with_empty_bytes(
    nursery: trio.Nursery,
) -> None:
    _, url = await start_sim(nursery)
    t, p = HttpTransport({}, env={}), provider(url)
    async with t.open(p, chat(True, tokens=20, fault="chunk_ms=2"), connect_timeout=5) as resp:
        assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
        pieces = []
        while data := await resp.receive():
            pieces.append(data)
    assert len(pieces) > 5 and b"".join(pieces).endswith(b"data: [DONE]\n\n")
    assert t.pool(p).idle == 1  # the chunked terminator was read: reusable


async def test_pool_is_bounded_and_waiters_get_released_connections(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery)
    t, p = HttpTransport({}, env={}), provider(url, max_connections=2)
    results: list[int] = []

    async def one() -> None:
        status, _ = await complete(t, p, chat(True, tokens=10, fault="chunk_ms=5"))
        results.append(status)

    async with trio.open_nursery() as n:
        for _ in range(6):
            n.start_soon(one)
    assert results == [200] * 6
    assert t.pool(p).opened == 2 and sim.stats.connections == 2


async def test_cancelled_acquire_keeps_the_idle_connection(nursery: trio.Nursery) -> None:
    """A caller cancelled while taking an idle connection (a hedge lost, a client left) must
    not take it with it: the pool keeps the connection and its slot."""
    _, url = await start_sim(nursery)
    t, p = HttpTransport({}, env={}), provider(url, max_connections=1)
    assert (await complete(t, p, chat()))[0] == 200
    pool = t.pool(p)
    assert (pool.idle, pool.total) == (1, 1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await pool.acquire(5)
    assert scope.cancelled_caught
    assert (pool.idle, pool.total) == (1, 1)
    assert (await complete(t, p, chat()))[0] == 200 and pool.opened == 1


async def test_pool_wait_is_bounded_by_the_connect_timeout(nursery: trio.Nursery) -> None:
    _, url = await start_sim(nursery)
    t, p = HttpTransport({}, env={}), provider(url, max_connections=1)
    with trio.CancelScope() as scope:
        async with t.open(p, chat(True, tokens=500, fault="chunk_ms=20"), connect_timeout=5):
            with pytest.raises(UpstreamConnectError, match="connect timeout"):
                async with t.open(p, chat(), connect_timeout=0.05):
                    pass
            scope.cancel()
            await trio.sleep_forever()
    assert t.pool(p).total == 0  # the abandoned exchange was closed, not pooled


async def test_abandoned_stream_closes_its_connection(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery)
    t, p = HttpTransport({}, env={}), provider(url)
    with trio.CancelScope() as scope:
        async with t.open(p, chat(True, tokens=500, fault="chunk_ms=5"), connect_timeout=5) as r:
            await r.receive()
            scope.cancel()
            await r.receive()
    assert t.pool(p).total == 0
    with trio.fail_after(5):
        while sim.stats.active:
            await trio.sleep(0.005)


async def test_idle_connections_are_evicted(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery)
    t, p = HttpTransport({}, env={}), provider(url, pool_idle_s=0.05)
    await complete(t, p, chat())
    idle_since = trio.current_time()
    while trio.current_time() - idle_since <= 0.05:  # observed time, not a fixed sleep
        await trio.sleep(0.01)
    await complete(t, p, chat())
    assert t.pool(p).opened == 2 and sim.stats.connections == 2


async def test_connection_closed_by_the_server_while_idle_is_not_reused(
    nursery: trio.Nursery,
) -> None:
    server = FlakyKeepAlive("close_after")
    port = await nursery.start(server.serve)
    t, p = HttpTransport({}, env={}), provider(f"http://127.0.0.1:{port}")
    pool = t.pool(p)
    for n in range(1, 4):
        assert (await complete(t, p, chat()))[0] == 200
        with trio.fail_after(5):  # the server's close has reached the idle connection
            while server.closed < n:
                await trio.sleep(0.001)
            await trio.lowlevel.wait_readable(pool._idle[-1].raw_socket)
    assert server.answered == 3 and server.connections == 3 and pool.opened == 3


async def test_a_request_sent_on_a_reused_connection_is_never_sent_twice(
    nursery: trio.Nursery,
) -> None:
    """The provider read the request and closed without answering: it may have acted on
    it (and billed it), so the exchange fails instead of sending the request again."""
    server = FlakyKeepAlive("drop_second")
    port = await nursery.start(server.serve)
    t, p = HttpTransport({}, env={}), provider(f"http://127.0.0.1:{port}")
    assert (await complete(t, p, chat()))[0] == 200
    with pytest.raises(UpstreamIOError) as info:
        await complete(t, p, chat())
    assert not isinstance(info.value, UpstreamConnectError)
    assert (server.received, server.connections) == (2, 1)  # read once, not re-sent
    assert t.pool(p).total == 0
    assert (await complete(t, p, chat()))[0] == 200  # the next request: a new connection
    assert (server.received, server.answered, server.connections) == (3, 2, 2)


async def test_a_request_that_could_not_be_sent_on_a_stale_connection_goes_on_a_new_one(
    nursery: trio.Nursery,
) -> None:
    """Sending failed (reset while the body was on its way): the request never fully
    went out, so it is sent once more, on a new connection."""
    server = FlakyKeepAlive("reset_second_head")
    port = await nursery.start(server.serve)
    t, p = HttpTransport({}, env={}), provider(f"http://127.0.0.1:{port}")
    assert (await complete(t, p, chat()))[0] == 200
    small = chat()
    pad = b', "pad": "' + b"x" * (16 << 20) + b'"}'
    big = UpstreamRequest(small.path, small.headers, small.body[:-1] + pad)
    assert (await complete(t, p, big))[0] == 200  # larger than every socket buffer
    assert (server.received, server.answered, server.connections) == (2, 2, 2)


async def test_refused_connection_maps_to_connect_error(nursery: trio.Nursery) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    t = HttpTransport({}, env={})
    with pytest.raises(UpstreamConnectError):
        await complete(t, provider(f"http://127.0.0.1:{port}"), chat())


async def test_reset_mid_body_maps_to_io_error(nursery: trio.Nursery) -> None:
    _, url = await start_sim(nursery)
    t, p = HttpTransport({}, env={}), provider(url)
    with pytest.raises(UpstreamIOError) as info:
        await complete(t, p, chat(True, tokens=20, fault="reset_after=3;chunk_ms=1"))
    assert not isinstance(info.value, UpstreamConnectError)
    assert t.pool(p).total == 0


# --- TLS -----------------------------------------------------------------------------


async def test_tls_with_provider_ca_file_verifies_and_sends_sni(nursery: trio.Nursery) -> None:
    tls = await start_tls_simulator(nursery, "localhost")
    t = HttpTransport({}, env={})
    p = provider(f"https://localhost:{tls.port}", ca_file=tls.ca_file)
    for stream in (True, False):
        status, body = await complete(t, p, chat(stream))
        assert status == 200 and (b"[DONE]" in body) == stream
    assert tls.sni == ["localhost"]  # one handshake, SNI set, then keep-alive
    assert tls.sim.stats.connections == 1


async def test_tls_contexts_are_built_with_the_transport_not_by_a_request(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a CA bundle blocks for milliseconds: the configured providers' TLS contexts
    are built when the transport is (start-up, or the reload thread), not on the loop by
    the first request to each provider."""
    tls = await start_tls_simulator(nursery, "localhost")
    p = provider(f"https://localhost:{tls.port}", ca_file=tls.ca_file)
    t = HttpTransport({p.name: p}, env={})

    def on_the_request_path(ca_file: str | None) -> None:
        raise AssertionError("a TLS context was built by a request")

    monkeypatch.setattr(transport_module, "tls_context", on_the_request_path)
    for stream in (False, True):
        assert (await complete(t, p, chat(stream)))[0] == 200


async def test_tls_without_the_test_ca_fails_verification(nursery: trio.Nursery) -> None:
    tls = await start_tls_simulator(nursery, "localhost")
    t = HttpTransport({}, env={})
    with pytest.raises(UpstreamConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await complete(t, provider(f"https://localhost:{tls.port}"), chat())


async def test_tls_rejects_a_certificate_for_another_host(nursery: trio.Nursery) -> None:
    tls = await start_tls_simulator(nursery, "api.example.test")
    t = HttpTransport({}, env={})
    p = provider(f"https://localhost:{tls.port}", ca_file=tls.ca_file)
    with pytest.raises(UpstreamConnectError, match=r"CERTIFICATE_VERIFY_FAILED|match"):
        await complete(t, p, chat())


# --- proxies -------------------------------------------------------------------------


async def test_https_proxy_from_env_tunnels_tls_end_to_end(nursery: trio.Nursery) -> None:
    tls = await start_tls_simulator(nursery, "sim.test")
    proxy = ConnectProxy()
    await nursery.start(proxy.serve)
    env = {"HTTPS_PROXY": f"http://user:pa%40ss@127.0.0.1:{proxy.port}", "NO_PROXY": "other.test"}
    t = HttpTransport({}, env=env)
    p = provider(f"https://sim.test:{tls.port}", ca_file=tls.ca_file)
    for _ in range(2):
        status, body = await complete(t, p, chat(True))
        assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    assert proxy.requests == [f"sim.test:{tls.port}"]  # one tunnel, reused
    assert proxy.auth == ["Basic dXNlcjpwYUBzcw=="]  # user:pa@ss
    assert tls.sni == ["sim.test"]


async def test_configured_proxy_carries_plain_http_and_no_proxy_bypasses_env(
    nursery: trio.Nursery,
) -> None:
    sim, url = await start_sim(nursery)
    proxy = ConnectProxy()
    await nursery.start(proxy.serve)
    t = HttpTransport({}, env={"HTTP_PROXY": "http://127.0.0.1:1", "NO_PROXY": "127.0.0.1"})
    assert (await complete(t, provider(url, proxy=f"http://127.0.0.1:{proxy.port}"), chat()))[
        0
    ] == 200
    assert proxy.requests == [url.removeprefix("http://")]
    q = ProviderConfig(name="q", kind="openai", base_url=url)  # env proxy, loopback: direct
    assert (await complete(t, q, chat()))[0] == 200
    assert len(proxy.requests) == 1 and sim.stats.connections == 2


async def test_proxy_refusing_connect_is_a_connect_error(nursery: trio.Nursery) -> None:
    proxy = ConnectProxy(refuse=407)
    await nursery.start(proxy.serve)
    t = HttpTransport({}, env={"HTTPS_PROXY": f"127.0.0.1:{proxy.port}"})
    with pytest.raises(UpstreamConnectError, match="HTTP 407"):
        await complete(t, provider("https://api.example.test"), chat())


async def test_gateway_streams_from_a_tls_provider_with_the_sdk(nursery: trio.Nursery) -> None:
    tls = await start_tls_simulator(nursery, "localhost")
    settings = chain_settings(
        [f"https://localhost:{tls.port}"], provider_extra={"ca_file": tls.ca_file}
    )
    g = await start_gateway(nursery, settings)

    def sdk() -> str:
        client = openai.OpenAI(base_url=g.url + "/v1", api_key=KEY, max_retries=0)
        stream = client.chat.completions.create(
            model="r", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    text = await trio.to_thread.run_sync(sdk)
    assert text and tls.sim.stats.output_tokens > 0 and tls.sni == ["localhost"]


async def test_gateway_falls_back_instead_of_sending_a_call_twice(nursery: trio.Nursery) -> None:
    """A provider that read the call on a keep-alive connection and closed it without an
    answer saw the call once; the race takes the next target, and the ledger shows both."""
    flaky = FlakyKeepAlive("drop_second")
    port = await nursery.start(flaky.serve)
    sim, url = await start_sim(nursery)
    g = await start_gateway(nursery, chain_settings([f"http://127.0.0.1:{port}", url]))
    body = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=30) as c:
        post = partial(c.post, g.url + "/v1/chat/completions", json=body,
                       headers={"authorization": f"Bearer {KEY}"})  # fmt: skip
        first, second = await post(), await post()
    assert first.status_code == 200 and first.headers["x-trioproxy-target"] == "m0"
    assert second.status_code == 200 and second.headers["x-trioproxy-target"] == "m1"
    assert (flaky.received, flaky.connections, sim.stats.requests) == (2, 1, 1)
    rid = second.headers["x-request-id"]
    with trio.fail_after(10):  # the records follow the response
        while not any(r.request_id == rid and r.kind == "request" for r in g.sink.records):
            await trio.sleep(0.01)
    attempts = {r.target: r.outcome for r in g.sink.records
                if r.request_id == rid and r.kind == "attempt"}  # fmt: skip
    assert attempts == {"m0": "failed", "m1": "won"}
