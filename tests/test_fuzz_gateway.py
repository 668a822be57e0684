"""Property-based fuzz of both endpoints against the real gateway over real sockets.

The gateway (``trioproxy serve``) and the provider simulator run as their own
processes; hypothesis sends structured bodies with random leaves, byte mutations
of valid bodies and raw bytes to ``/v1/chat/completions`` and ``/v1/messages``.
Every answer must be below 500, every 4xx must carry the caller's dialect
envelope, and afterwards the gateway must still serve both endpoints, have
logged no traceback, and have grown its memory by a bounded amount.
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
    OPENAI_TEMPLATE,
    RAW_BYTES,
    byte_mutation,
    dumps,
    structured,
)
from tests.proc import to_toml
from tests.settings_factory import KEY
from trioproxy.config import hash_key

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
TEMPLATES = {"openai": OPENAI_TEMPLATE, "anthropic": ANTHROPIC_TEMPLATE}
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


@dataclass
class Fuzzed:
    url: str
    pid: int
    log: Path
    client: httpx.Client
    rss_before: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)

    def send(self, dialect: str, raw: bytes) -> httpx.Response:
        r = self.client.post(
            self.url + PATHS[dialect],
            content=raw,
            headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
        )
        self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
        check_answer(dialect, r)
        return r


def check_answer(dialect: str, r: httpx.Response) -> None:
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
            for _ in range(30):  # warm up both paths before the memory baseline
                for dialect in PATHS:
                    assert f.send(dialect, dumps(TEMPLATES[dialect])).status_code == 200
            f.rss_before = rss_mb(gw.pid)
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


def test_gateway_alive_quiet_and_bounded_after_fuzz(fuzzed: Fuzzed) -> None:
    """Runs last in this module: the fuzz above left the gateway whole."""
    print("fuzz statuses:", dict(sorted(fuzzed.statuses.items())))
    assert sum(fuzzed.statuses.values()) >= 200, fuzzed.statuses
    assert httpx.get(fuzzed.url + "/healthz", timeout=5).status_code == 200
    for dialect in PATHS:
        assert fuzzed.send(dialect, dumps(TEMPLATES[dialect])).status_code == 200
    log = fuzzed.log.read_text(errors="replace")
    assert not re.search(r"Traceback|ERROR", log), log[-4000:]
    grown = rss_mb(fuzzed.pid) - fuzzed.rss_before
    assert grown < MEMORY_GROWTH_MB, f"gateway RSS grew {grown:.1f} MB"
