"""Bad input gets the caller's own error envelope and the right status, never a 500."""

from __future__ import annotations

import httpx
import orjson
import pytest
import trio

from tests.fixtures_gateway import Running, start_gateway, start_simulator
from tests.settings_factory import KEY, chain_settings
from trioproxy.config import hash_key, parse_settings
from trioproxy.simulator.faults import Fault

OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"
MSGS = [{"role": "user", "content": "hi"}]


async def call(
    g: Running,
    path: str,
    *,
    content: bytes | None = None,
    json: object = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> httpx.Response:
    h = {"authorization": f"Bearer {g.key}", **(headers or {})}
    async with httpx.AsyncClient(timeout=10) as c:
        return await c.request(method, g.url + path, content=content, json=json, headers=h)


def openai_envelope(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and err["type"]


def anthropic_envelope(r: httpx.Response, status: int, etype: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == etype and body["error"]["message"]


@pytest.mark.parametrize(
    ("path", "content", "status", "code"),
    [
        (OPENAI, b"{not json", 400, "invalid_json"),
        (OPENAI, b'{"model": "chat", "messages": "hi"}', 400, "invalid_request"),
        (OPENAI, b'{"model": 5, "messages": []}', 400, "invalid_request"),
        (
            OPENAI,
            b'{"model": "chat", "messages": [{"role":"user","content":"x"}], "stream": "yes"}',
            400,
            "invalid_request",
        ),
        (
            OPENAI,
            b'{"model": "nope", "messages": [{"role":"user","content":"x"}]}',
            404,
            "model_not_found",
        ),
        (OPENAI, b"[]", 400, "invalid_request"),
    ],
)
async def test_openai_dialect_errors(
    gateway: Running, path: str, content: bytes, status: int, code: str
) -> None:
    openai_envelope(await call(gateway, path, content=content), status, code)


@pytest.mark.parametrize(
    ("content", "status", "etype"),
    [
        (b"{not json", 400, "invalid_request_error"),
        (
            b'{"model": "chat", "messages": [{"role":"user","content":"x"}]}',
            400,
            "invalid_request_error",
        ),  # max_tokens is required by Anthropic's API
        (
            b'{"model": "nope", "max_tokens": 5, "messages": [{"role":"user","content":"x"}]}',
            404,
            "not_found_error",
        ),
    ],
)
async def test_anthropic_dialect_errors(
    gateway: Running, content: bytes, status: int, etype: str
) -> None:
    anthropic_envelope(await call(gateway, ANTHROPIC, content=content), status, etype)


async def test_auth_errors(gateway: Running) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.post(gateway.url + OPENAI, json={"model": "chat", "messages": MSGS})
        openai_envelope(r, 401, "missing_api_key")
        r = await c.post(
            gateway.url + ANTHROPIC,
            headers={"x-api-key": "bad"},
            json={"model": "chat", "max_tokens": 5, "messages": MSGS},
        )
        anthropic_envelope(r, 401, "authentication_error")


async def test_identity_is_never_taken_from_the_body(gateway: Running) -> None:
    r = await call(
        gateway,
        OPENAI,
        json={"model": "chat", "messages": MSGS, "team": "victim", "user": "end-user-7"},
    )
    assert r.status_code == 200
    with trio.fail_after(5):
        while not [x for x in gateway.sink.records if x.kind == "request"]:
            await trio.sleep(0.01)
    rec = [x for x in gateway.sink.records if x.kind == "request"][-1]
    assert rec.team == "demo" and rec.user == "demo" and rec.end_user == "end-user-7"


async def test_body_too_large_is_413(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery)
    settings = chain_settings([sim.url], extra={"server": {"max_body_bytes": 1000}})
    g = await start_gateway(nursery, settings)
    g.key = KEY
    big = {"model": "r", "messages": [{"role": "user", "content": "x" * 5000}]}
    openai_envelope(await call(g, OPENAI, json=big), 413, "body_too_large")
    r = await call(g, ANTHROPIC, json={**big, "max_tokens": 5})
    anthropic_envelope(r, 413, "request_too_large")


async def test_method_path_and_priority_errors(gateway: Running) -> None:
    openai_envelope(await call(gateway, OPENAI, method="GET"), 405, "method_not_allowed")
    openai_envelope(await call(gateway, "/v1/nothing", method="GET"), 404, "not_found")
    # the Anthropic SDK at a base URL with a stray /v1 (it adds /v1/messages itself): told
    # in its own dialect (it sends anthropic-version on every call)
    stray = await call(
        gateway, "/v1" + ANTHROPIC, json={"model": "chat", "max_tokens": 5, "messages": MSGS},
        headers={"anthropic-version": "2023-06-01"},
    )  # fmt: skip
    anthropic_envelope(stray, 404, "not_found_error")
    assert "POST /v1/v1/messages" in stray.json()["error"]["message"]
    r = await call(
        gateway,
        OPENAI,
        json={"model": "chat", "messages": MSGS},
        headers={"x-trioproxy-priority": "urgent"},
    )
    openai_envelope(r, 400, "invalid_request")


async def test_forbidden_route_is_403(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery)
    settings = chain_settings([sim.url])
    data = {
        "providers": {"p0": {"kind": "openai", "base_url": sim.url, "api_key_env": "K"}},
        "models": {"m0": {"provider": "p0", "input_per_mtok": 1, "output_per_mtok": 1}},
        "routes": {
            "r": {"chains": {"default": [{"model": "m0"}]}},
            "other": {"chains": {"default": [{"model": "m0"}]}},
        },
        "api_keys": [
            {"name": "k", "key_sha256": hash_key(KEY), "team": "t", "user": "u", "routes": ["r"]}
        ],
    }
    settings = parse_settings(data, env={"K": "x"})
    g = await start_gateway(nursery, settings)
    g.key = KEY
    openai_envelope(
        await call(g, OPENAI, json={"model": "other", "messages": MSGS}), 403, "route_forbidden"
    )
    assert (await call(g, OPENAI, json={"model": "r", "messages": MSGS})).status_code == 200


async def test_selection_rules_pick_chain_by_priority(gateway: Running) -> None:
    r = await call(
        gateway,
        OPENAI,
        json={"model": "chat", "messages": MSGS},
        headers={"x-trioproxy-priority": "high"},
    )
    assert r.status_code == 200
    assert r.headers["x-trioproxy-chain"] == "premium"
    assert r.headers["x-trioproxy-reason"] == "high priority"
    r = await call(
        gateway,
        OPENAI,
        json={"model": "chat", "messages": MSGS, "max_tokens": 100},
        headers={"x-trioproxy-priority": "low"},
    )
    assert r.headers["x-trioproxy-chain"] == "cheap"


async def test_overload_sheds_with_503_and_retry_after(nursery: trio.Nursery) -> None:
    sim = await start_simulator(nursery, Fault(ttft_ms=1000))
    g = await start_gateway(
        nursery, chain_settings([sim.url], extra={"server": {"max_in_flight": 1, "queue_max": 0}})
    )
    g.key = KEY
    results: list[httpx.Response] = []

    async def one() -> None:
        results.append(await call(g, OPENAI, json={"model": "r", "messages": MSGS}))

    async with trio.open_nursery() as n:
        n.start_soon(one)
        await trio.sleep(0.3)
        n.start_soon(one)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 503]
    shed = next(r for r in results if r.status_code == 503)
    assert shed.headers["retry-after"] == "10"  # nothing finished yet: retry_after_max_s


async def test_metrics_need_an_admin_key_and_count_requests(gateway: Running) -> None:
    from tests.test_metrics import parse

    labels = {"route": "chat", "target": "gpt-4o-mini", "status": "200", "cache": "miss"}
    served = frozenset(labels.items())
    assert (
        await call(gateway, OPENAI, json={"model": "chat", "messages": MSGS})
    ).status_code == 200
    async with httpx.AsyncClient() as c:
        assert (await c.get(gateway.admin_url + "/metrics")).status_code == 401
        with trio.fail_after(20):  # the record is written just after the response
            while True:
                r = await c.get(
                    gateway.admin_url + "/metrics",
                    headers={"authorization": f"Bearer {gateway.key}"},
                )
                got = parse(r.text)
                # the record is written in the request's finally, just before it leaves in-flight
                if got.get(("trioproxy_requests_total", served)) and not got.get(
                    ("trioproxy_in_flight_requests", frozenset())
                ):
                    break
                await trio.sleep(0.01)
    assert r.status_code == 200 and got[("trioproxy_requests_total", served)] == 1
    assert got[("trioproxy_in_flight_requests", frozenset())] == 0


async def test_n_greater_than_one_cannot_be_streamed(gateway: Running) -> None:
    r = await call(
        gateway, OPENAI, json={"model": "chat", "messages": MSGS, "n": 2, "stream": True}
    )
    openai_envelope(r, 400, "invalid_request")
    assert r.json()["error"]["param"] == "n"


async def test_refusals_before_routing_get_an_access_line_and_a_count(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad key, a malformed body, an unknown model (and a wrong method, an unknown path):
    each one access line (no secret, no model name as a label) and one count by kind."""
    import logging

    from tests.test_metrics import parse

    caplog.set_level(logging.INFO, logger="trioproxy.access")
    sent = [
        await call(gateway, OPENAI, json={"model": "chat", "messages": MSGS},
                   headers={"authorization": "Bearer sk-WRONG-secret-1234"}),
        await call(gateway, OPENAI, content=b"{not json"),
        await call(gateway, ANTHROPIC, json={"model": "nope-model-x", "max_tokens": 5,
                                             "messages": MSGS}),
        await call(gateway, OPENAI, method="GET"),
        await call(gateway, "/v1/nowhere"),
    ]  # fmt: skip
    assert [r.status_code for r in sent] == [401, 400, 404, 405, 404]
    lines = [r.fields for r in caplog.records if r.name == "trioproxy.access"]  # type: ignore[attr-defined]
    assert [(x["status"], x["error_kind"], x["outcome"]) for x in lines] == [
        (401, "invalid_api_key", "refused"), (400, "invalid_json", "refused"),
        (404, "model_not_found", "refused"), (405, "method_not_allowed", "refused"),
        (404, "not_found", "refused"),
    ]  # fmt: skip
    key_name = next(iter(gateway.settings.api_keys.values())).name
    assert [x["key"] for x in lines] == [None, key_name, key_name, None, None]
    assert [x["dialect"] for x in lines] == ["openai", "openai", "anthropic", "openai", "openai"]
    assert [x["path"] for x in lines] == [OPENAI, OPENAI, ANTHROPIC, OPENAI, "/v1/nowhere"]
    assert lines[1]["request_id"] == sent[1].headers["x-request-id"]
    assert lines[2]["request_id"] == sent[2].headers["x-request-id"]
    assert all(x["duration_ms"] is not None and x["duration_ms"] >= 0 for x in lines)
    text = caplog.text + repr(lines)
    assert "sk-WRONG-secret" not in text and gateway.key not in text
    assert gateway.sink.records == []  # refusals are not usage: no ledger record
    got = parse(gateway.app.prometheus.render()[0].decode())
    rejected = {dict(labels)["kind"] + "/" + dict(labels)["status"]: v
                for (name, labels), v in got.items()
                if name == "trioproxy_rejected_requests_total"}  # fmt: skip
    assert rejected == {"invalid_api_key/401": 1, "invalid_json/400": 1, "model_not_found/404": 1,
                        "method_not_allowed/405": 1, "not_found/404": 1}  # fmt: skip
    assert "nope-model-x" not in gateway.app.prometheus.render()[0].decode()


def test_refusal_lines_are_rate_limited_and_the_drops_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from tests.test_metrics import parse
    from trioproxy.edge.metrics import Metrics
    from trioproxy.edge.refusals import Refusals

    caplog.set_level(logging.INFO, logger="trioproxy.access")
    metrics = Metrics()
    refusals = Refusals(metrics, lines_per_s=0.0, burst=2)
    for _ in range(5):
        refusals.record(dialect="openai", method="POST", path=OPENAI, status=401,
                        kind="invalid_api_key")  # fmt: skip
    refusals.lines_per_s = 1e9  # the bucket refills at once
    refusals.record(dialect="openai", method="POST", path=OPENAI, status=401,
                    kind="invalid_api_key")  # fmt: skip
    lines = [r.fields for r in caplog.records if r.name == "trioproxy.access"]  # type: ignore[attr-defined]
    assert [x["dropped_before"] for x in lines] == [0, 0, 3]
    got = parse(metrics.render()[0].decode())
    kind = frozenset({"kind": "invalid_api_key", "status": "401"}.items())
    assert got[("trioproxy_rejected_requests_total", kind)] == 6  # every one counted
    assert got[("trioproxy_rejected_lines_dropped_total", frozenset())] == 3


async def test_the_http_servers_own_refusals_name_a_request_id_like_the_apps(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """What the HTTP server answers before the app runs (a malformed request, a head or a
    body over its cap, a head that never ends) carries an ``x-request-id`` in the app's
    format, its access line names it, and the body is in the dialect its path tells; so do
    the app's refusals by path and method, made before an endpoint names the request."""
    import logging
    import re

    from tests.httpd_helpers import exchange

    caplog.set_level(logging.INFO, logger="trioproxy.access")
    sim = await start_simulator(nursery)
    server = {"max_body_bytes": 1000, "max_head_bytes": 2048, "header_timeout_s": 0.5}
    g = await start_gateway(nursery, chain_settings([sim.url], extra={"server": server}))
    port = int(g.url.rsplit(":", 1)[1])
    auth = f"Authorization: Bearer {KEY}\r\n"
    sent = {  # name: (raw request, status, dialect)
        "malformed": (b"NOT AN HTTP REQUEST\r\n\r\n", 400, "openai"),
        "body over the cap": (f"POST {ANTHROPIC} HTTP/1.1\r\nHost: t\r\n{auth}"
                              "Content-Length: 5000\r\n\r\n".encode(), 413, "anthropic"),
        "head over the cap": (f"POST {OPENAI} HTTP/1.1\r\nHost: t\r\nX-Pad: {'p' * 4000}\r\n"
                              "\r\n".encode(), 431, "openai"),
        "head never ends": (f"POST {OPENAI} HTTP/1.1\r\nHost: t\r\n".encode(), 408, "openai"),
        "unknown path": (b"GET /v1/nowhere HTTP/1.1\r\nHost: t\r\n\r\n", 404, "openai"),
        "wrong method": (f"GET {ANTHROPIC} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), 405,
                         "anthropic"),
    }  # fmt: skip
    ids = []
    for name, (raw, status, dialect) in sent.items():
        head, body = await exchange(port, raw)
        assert head.status_code == status, (name, head, body)
        headers = dict(head.headers)
        rid = headers.get(b"x-request-id", b"").decode()
        assert re.fullmatch(r"req_[0-9a-f]{32}", rid), (name, head.headers)
        ids.append(rid)
        err = orjson.loads(body)
        if dialect == "anthropic":
            assert err["type"] == "error" and err["error"]["message"], (name, err)
        else:
            assert err["error"]["message"] and err["error"]["code"], (name, err)
    assert len(set(ids)) == len(ids)
    lines = [r.fields for r in caplog.records if r.name == "trioproxy.access"]  # type: ignore[attr-defined]
    assert [x["request_id"] for x in lines] == ids
    assert [x["status"] for x in lines] == [s for _raw, s, _d in sent.values()]
    assert [x["method"] for x in lines] == [None, "POST", "POST", "POST", "GET", "GET"]
    assert all(x["outcome"] == "refused" for x in lines)


async def test_a_percent_encoded_path_is_not_routed_to_the_endpoint_it_decodes_to(
    nursery: trio.Nursery,
) -> None:
    """``/v1/chat%2Fcompletions`` is not ``/v1/chat/completions``: a filter in front of the
    gateway (a location rule, an allow-list of paths) saw another path than the one served.
    A 404 in the caller's dialect; a model id keeps its escapes (``/v1/models/{id}``)."""
    from tests.httpd_helpers import exchange

    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, chain_settings([sim.url]))
    port = int(g.url.rsplit(":", 1)[1])
    body = orjson.dumps({"model": "r", "messages": MSGS})
    head = f"Host: t\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n"
    for path, version in (("/v1/chat%2Fcompletions", ""), ("/v1/%63hat/completions", ""),
                          ("/v1/messages%2F", "anthropic-version: 2023-06-01\r\n")):  # fmt: skip
        raw = f"POST {path} HTTP/1.1\r\n{head}{version}\r\n".encode() + body
        got, answer = await exchange(port, raw)
        assert got.status_code == 404, (path, got, answer)
        err = orjson.loads(answer)
        message = err["error"]["message"]
        assert path in message and (err.get("type") == "error") == bool(version), err
    assert sim.sim.stats.requests == 0
    plain = f"POST {OPENAI} HTTP/1.1\r\n{head}\r\n".encode() + body
    got, _ = await exchange(port, plain)
    assert got.status_code == 200
    model = await call(g, "/v1/models/r%3F", method="GET")  # an escaped id: looked up
    openai_envelope(model, 404, "model_not_found")
    assert (await call(g, "/v1/models/%72", method="GET")).status_code == 200  # "r"


async def test_refusals_before_the_head_ends_are_in_the_dialect_its_path_tells(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """A request the HTTP server refuses while its head is still arriving (a bad header, a
    second Content-Length, a head over the cap, a head that never ends, an unknown HTTP
    version) has already named its path on the request line: the Anthropic SDK's caller is
    told in Anthropic's envelope (it was OpenAI's whatever the path), and the access line
    names the method and path."""
    import logging

    from tests.httpd_helpers import exchange

    caplog.set_level(logging.INFO, logger="trioproxy.access")
    sim = await start_simulator(nursery)
    server = {"max_head_bytes": 2048, "header_timeout_s": 0.5}
    g = await start_gateway(nursery, chain_settings([sim.url], extra={"server": server}))
    port = int(g.url.rsplit(":", 1)[1])
    line = f"POST {ANTHROPIC} HTTP/1.1\r\nHost: t\r\n"
    sent = {  # name: (raw request, status)
        "bad header value": (f"{line}X-A: a\x01b\r\n\r\n", 400),
        "two lengths": (f"{line}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400),
        "head over the cap": (f"{line}X-Pad: {'p' * 4000}\r\n\r\n", 431),
        "head never ends": (line, 408),
        "HTTP/2.0": (f"POST {ANTHROPIC} HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    }
    for name, (raw, status) in sent.items():
        head, body = await exchange(port, raw.encode())
        assert head.status_code == status, (name, head, body)
        err = orjson.loads(body)
        assert err["type"] == "error" and err["error"]["message"], (name, err)
    lines = [r.fields for r in caplog.records if r.name == "trioproxy.access"]  # type: ignore[attr-defined]
    assert [x["status"] for x in lines] == [s for _raw, s in sent.values()]
    assert {(x["method"], x["path"], x["dialect"]) for x in lines} == {
        ("POST", ANTHROPIC, "anthropic")
    }


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (OPENAI, {"model": "chat", "messages": MSGS}),
        (ANTHROPIC, {"model": "chat", "max_tokens": 5, "messages": MSGS}),
        ("/v1/embeddings", {"model": "chat", "input": "hi"}),
    ],
)
async def test_a_compressed_body_is_refused_saying_so(
    gateway: Running, path: str, body: dict[str, object]
) -> None:
    """The gateway reads bodies as sent: a ``Content-Encoding`` it would have to undo is a
    415 naming it, in the endpoint's dialect (a gzip body was a 400 about invalid UTF-8 and
    surrogates, and ``br`` over a plain body was served); ``identity`` is no encoding."""
    import gzip

    raw = orjson.dumps(body)
    json_type = {"content-type": "application/json"}
    for encoding, content in [("gzip", gzip.compress(raw)), ("br", raw), ("gzip, identity", raw)]:
        r = await call(
            gateway, path, content=content, headers={**json_type, "content-encoding": encoding}
        )
        assert r.status_code == 415, (encoding, r.text)
        payload = r.json()
        if path == ANTHROPIC:
            assert payload["type"] == "error", payload
        else:
            assert payload["error"]["code"] == "unsupported_media_type", payload
        message = payload["error"]["message"]
        assert f"Content-Encoding {encoding!r}" in message and "uncompressed" in message, message
    r = await call(
        gateway, OPENAI, json={"model": "chat", "messages": MSGS},
        headers={"content-encoding": "Identity"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
