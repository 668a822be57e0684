"""Property-based fuzz of every /v1 endpoint against the real gateway over real sockets.

The gateway (``trioproxy serve``) and the provider simulator run as their own
processes; hypothesis sends structured bodies with random leaves, byte mutations
of valid bodies and raw bytes to ``/v1/chat/completions`` and ``/v1/messages``
(the most), and to ``/v1/responses``, ``/v1/embeddings`` and
``/v1/messages/count_tokens`` with random ``Content-Type`` headers too; a table
sends each endpoint the HTTP-level hostile inputs (empty, not JSON, invalid UTF-8,
a BOM, huge numbers, deep nesting, a wrong ``Content-Type``, an oversized body, a
wrong method). Every answer must be below 500, every 4xx must carry the caller's
dialect envelope, and afterwards the gateway must still serve, have logged no
traceback, and have grown its memory by a bounded amount.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures_servers import free_port
from tests.fuzz_bodies import (
    ANTHROPIC_TEMPLATE,
    COUNT_TOKENS_TEMPLATE,
    EMBEDDINGS_TEMPLATE,
    OPENAI_TEMPLATE,
    RAW_BYTES,
    RESPONSES_TEMPLATE,
    byte_mutation,
    dumps,
    structured,
)
from tests.proc import to_toml, workers_of
from tests.settings_factory import KEY
from trioproxy.config import hash_key

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
TEMPLATES = {"openai": OPENAI_TEMPLATE, "anthropic": ANTHROPIC_TEMPLATE}
ENDPOINTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "/v1/chat/completions": ("openai", "openai", OPENAI_TEMPLATE),
    "/chat/completions": ("openai", "openai", OPENAI_TEMPLATE),
    "/v1/messages": ("anthropic", "anthropic", ANTHROPIC_TEMPLATE),
    "/v1/responses": ("openai", "responses", RESPONSES_TEMPLATE),
    "/v1/embeddings": ("openai", "embeddings", EMBEDDINGS_TEMPLATE),
    "/v1/messages/count_tokens": ("anthropic", "count_tokens", COUNT_TOKENS_TEMPLATE),
}
"""Every POST endpoint: its error envelope (OpenAI's or Anthropic's), a name, a valid body."""
MAX_BODY = 256 * 1024
"""The fuzzed gateway's ``server.max_body_bytes``."""
JSON_TYPES = [None, "application/json", "application/json; charset=utf-8",
              "application/JSON;charset=UTF-8", "application/vnd.api+json"]  # fmt: skip
OTHER_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x",
               "application/json; charset=latin-1", "application/xml", "*/*"]  # fmt: skip
"""Declared types the gateway refuses (415) before reading the body."""
MEMORY_GROWTH_MB = 96
"""Bound on the gateway's resident-memory growth over the whole fuzz run."""
EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "350"))
"""Examples per (family, dialect): 3 families x 2 dialects x 350 = 2,100 requests."""


def fuzz_settings(n: int = EXAMPLES) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready; log:\n{log.read_text()}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def worker_rss_mb(serve_pid: int) -> float:
    """The data-plane worker's RSS: what a request can grow (``serve`` itself is a ~17 MB
    supervisor that sees no request, so measuring it could never fail)."""
    (worker,) = workers_of(serve_pid)
    return rss_mb(worker)


@dataclass
class Fuzzed:
    url: str
    pid: int
    log: Path
    client: httpx.Client
    rss_before: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    warm_up: int = 0
    """Requests the fixture sent before the tests' own (``statuses`` counts them too)."""

    def send(
        self, dialect: str, raw: bytes, *, path: str | None = None,
        content_type: str | None = "application/json",
    ) -> httpx.Response:  # fmt: skip
        headers = {"authorization": f"Bearer {KEY}"}
        if content_type is not None:
            headers["content-type"] = content_type
        r = self.client.post(self.url + (path or PATHS[dialect]), content=raw, headers=headers)
        self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
        check_answer(dialect, r)
        return r


def check_answer(dialect: str, r: httpx.Response) -> None:
    """Below 500; a 4xx in the dialect's envelope, naming its request id (every refusal has
    one: by the endpoint, by path or method, or by the HTTP server, as over the cap)."""
    assert r.status_code < 500, f"{r.status_code}: {r.text[:500]}"
    if r.status_code < 400:
        return
    body = r.json()
    assert r.headers.get("x-request-id", "").startswith("req_")
    if dialect == "openai":
        err = body["error"]
        assert isinstance(err["message"], str) and err["message"], body
        assert isinstance(err["type"], str) and isinstance(err["code"], str), body
    else:
        assert body["type"] == "error", body
        assert isinstance(body["error"]["type"], str) and body["error"]["message"], body


def gateway_config(sim_url: str, state_dir: Path) -> dict[str, Any]:
    provider = {"base_url": sim_url, "api_key_env": "SIMKEY"}
    price = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
    return {
        "storage": {"state_dir": str(state_dir)},
        "providers.oa": {"kind": "openai", **provider},
        "providers.an": {"kind": "anthropic", **provider},
        "models.gpt-4o-mini": {"provider": "oa", **price},
        "models.claude-haiku": {"provider": "an", **price},
        "models.emb-small": {"provider": "oa", "input_per_mtok": 0.02},
        "routes.embed": {"chains": {"default": [{"model": "emb-small"}]}},
        "server": {"max_body_bytes": MAX_BODY, "admin_port": free_port()},  # 8081 may be taken
        "routes.chat": {
            "chains": {"default": [{"model": "gpt-4o-mini"}, {"model": "claude-haiku"}]},
            "cache": {"exact_ttl_s": 60},
        },
        "routes.extract": {
            "chains": {"default": [{"model": "claude-haiku"}, {"model": "gpt-4o-mini"}]}
        },
        "budgets": {"teams": {"t1": {"daily_usd": 1000.0}}, "users": {"*": {"tokens": 10**9}}},
        "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1"}],
    }


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    work = tmp_path_factory.mktemp("fuzz")
    sim_port, gw_port = free_port(), free_port()
    py = [sys.executable, "-m", "trioproxy"]
    sim = _spawn([*py, "simulate", "--port", str(sim_port)], work / "sim.log")
    sim_url = f"http://127.0.0.1:{sim_port}"
    cfg = work / "trioproxy.toml"
    cfg.write_text(to_toml(gateway_config(sim_url, work / "state")))
    os.environ.setdefault("SIMKEY", "sim-key")
    gw_log = work / "gateway.log"
    gw = _spawn([*py, "serve", "--config", str(cfg), "--port", str(gw_port)], gw_log)
    url = f"http://127.0.0.1:{gw_port}"
    try:
        _wait_ready(sim_url + "/v1/models", sim, work / "sim.log")
        _wait_ready(url + "/readyz", gw, gw_log)
        with httpx.Client(timeout=30) as client:
            f = Fuzzed(url, gw.pid, gw_log, client)
            for _ in range(30):  # warm up every path before the memory baseline
                for path, (dialect, _name, template) in ENDPOINTS.items():
                    assert f.send(dialect, dumps(template), path=path).status_code == 200
            f.warm_up = sum(f.statuses.values())
            f.rss_before = worker_rss_mb(gw.pid)
            yield f
    finally:
        _stop(gw)
        _stop(sim)


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_structured_bodies(fuzzed: Fuzzed, dialect: str) -> None:
    @fuzz_settings()
    @given(structured(TEMPLATES[dialect]))
    def one(body: dict[str, Any]) -> None:
        fuzzed.send(dialect, dumps(body))

    one()


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_byte_mutations(fuzzed: Fuzzed, dialect: str) -> None:
    @fuzz_settings()
    @given(byte_mutation(dumps(TEMPLATES[dialect])))
    def one(raw: bytes) -> None:
        fuzzed.send(dialect, raw)

    one()


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_raw_bytes(fuzzed: Fuzzed, dialect: str) -> None:
    @fuzz_settings()
    @given(RAW_BYTES | st.binary(max_size=64).map(lambda b: b"{" + b))
    def one(raw: bytes) -> None:
        fuzzed.send(dialect, raw)

    one()


OTHER = [p for p in ENDPOINTS if p not in ("/v1/chat/completions", "/chat/completions",
                                             "/v1/messages")]  # fmt: skip


@pytest.mark.parametrize("path", OTHER, ids=[ENDPOINTS[p][1] for p in OTHER])
def test_other_endpoints_fuzzed_with_any_content_type(fuzzed: Fuzzed, path: str) -> None:
    """Responses, embeddings and count_tokens: the three families of bodies at once, each
    under a JSON or a foreign ``Content-Type`` (refused: 415 in the dialect)."""
    dialect, _name, template = ENDPOINTS[path]
    raw = dumps(template)
    bodies = (
        structured(template).map(dumps) | byte_mutation(raw) | RAW_BYTES
        | st.binary(max_size=64).map(lambda b: b"{" + b)
    )  # fmt: skip

    @fuzz_settings(max(EXAMPLES // 2, 50))
    @given(bodies, st.sampled_from(JSON_TYPES + OTHER_TYPES))
    def one(body: bytes, content_type: str | None) -> None:
        r = fuzzed.send(dialect, body, path=path, content_type=content_type)
        if content_type in OTHER_TYPES:
            assert r.status_code == 415, (content_type, r.text[:300])
            assert "application/json" in (r.json()["error"]["message"])

    one()


def nested(depth: int) -> bytes:
    return b'{"model": "chat", "x": ' + b"[" * depth + b"]" * depth + b"}"


def hostile_inputs(template: dict[str, Any]) -> list[tuple[str, bytes, str | None, int]]:
    """(name, body, Content-Type, the status the provider's API answers) per input."""
    raw = dumps(template)
    big = raw[:-1] + b', "pad": "' + b"x" * MAX_BODY + b'"}'
    return [
        ("empty", b"", "application/json", 400),
        ("whitespace", b" \r\n ", "application/json", 400),
        ("not-json", b"model=chat&messages=hi", "application/json", 400),
        ("truncated", raw[: len(raw) // 2], "application/json", 400),
        ("trailing-garbage", raw + b"}", "application/json", 400),
        ("array", b"[" + raw + b"]", "application/json", 400),
        ("null", b"null", "application/json", 400),
        ("invalid-utf8", raw.replace(b'"model"', b'"mod\xffel"'), "application/json", 400),
        ("invalid-utf8-value", raw.replace(b'"chat"', b'"\xc3\x28"', 1)
         if b'"chat"' in raw else raw.replace(b'"embed"', b'"\xc3\x28"'), "application/json", 400),
        ("lone-surrogate", raw.replace(b'"model"', b'"\\ud800"'), "application/json", 400),
        ("bom", b"\xef\xbb\xbf" + raw, "application/json", 400),
        ("nan", raw[:-1] + b', "temperature": NaN}', "application/json", 400),
        ("huge-number", raw[:-1] + b', "max_tokens": 1' + b"0" * 400 + b"}",
         "application/json", 400),
        ("huge-int-model", raw.replace(b'"model":', b'"model": 18446744073709551616, "m":'),
         "application/json", 400),
        ("deep-nesting", nested(5000), "application/json", 400),
        ("oversized", big, "application/json", 413),
        ("text-plain", raw, "text/plain", 415),
        ("form", raw, "application/x-www-form-urlencoded", 415),
        ("not-utf8-charset", raw, "application/json; charset=utf-16", 415),
    ]  # fmt: skip


@pytest.mark.parametrize("path", list(ENDPOINTS), ids=[e[1] for e in ENDPOINTS.values()])
def test_every_endpoint_answers_hostile_input_in_its_dialect(fuzzed: Fuzzed, path: str) -> None:
    """Each input once, on every POST endpoint: the status a provider's API would answer,
    in the endpoint's error envelope (and the endpoint still serves afterwards)."""
    dialect, _name, template = ENDPOINTS[path]
    wrong = []
    for name, body, content_type, status in hostile_inputs(template):
        r = fuzzed.send(dialect, body, path=path, content_type=content_type)
        if r.status_code != status:
            wrong.append((name, r.status_code, r.text[:200]))
    r = fuzzed.client.get(fuzzed.url + path, headers={"authorization": f"Bearer {KEY}"})
    if r.status_code != 405:
        wrong.append(("GET", r.status_code, r.text[:200]))
    check_answer(dialect, r)
    assert not wrong, wrong
    assert fuzzed.send(dialect, dumps(template), path=path).status_code == 200


def test_models_endpoint_refuses_what_it_does_not_serve(fuzzed: Fuzzed) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    for method, path, status in [("GET", "/v1/models", 200), ("GET", "/v1/models/chat", 200),
                                 ("GET", "/v1/models/%ff%fe%00", 404),
                                 ("GET", "/v1/models/" + "x" * 5000, 404),
                                 ("POST", "/v1/models", 404), ("DELETE", "/v1/models/chat", 404),
                                 ("GET", "/v1/responses/resp_1", 404)]:  # fmt: skip
        r = fuzzed.client.request(method, fuzzed.url + path, headers=auth)
        assert r.status_code == status, (method, path, r.status_code, r.text[:200])
        check_answer("openai", r)


def test_gateway_alive_quiet_and_bounded_after_fuzz(fuzzed: Fuzzed) -> None:
    """Runs last in this module: the fuzz above left the gateway whole."""
    print("fuzz statuses:", dict(sorted(fuzzed.statuses.items())))
    assert sum(fuzzed.statuses.values()) >= fuzzed.warm_up, fuzzed.statuses
    assert httpx.get(fuzzed.url + "/healthz", timeout=5).status_code == 200
    for path, (dialect, _name, template) in ENDPOINTS.items():
        assert fuzzed.send(dialect, dumps(template), path=path).status_code == 200
    log = fuzzed.log.read_text(errors="replace")
    assert not re.search(r"Traceback|ERROR", log), log[-4000:]
    grown = worker_rss_mb(fuzzed.pid) - fuzzed.rss_before
    assert grown < MEMORY_GROWTH_MB, f"gateway RSS grew {grown:.1f} MB"
