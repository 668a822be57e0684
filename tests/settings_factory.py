"""Build test configs over several simulators through the real config parser."""

from __future__ import annotations

import tempfile
from typing import Any

from trioproxy.config import hash_key, parse_settings
from trioproxy.config.model import Settings

KEY = "tp-test-key-0123456789"


def capped_settings(
    sim_url: str,
    state_dir: str,
    kind: str = "openai",
    daily_usd: float = 0.05,
    deployment: str = "m",
) -> Settings:
    """One dear model ($1,000 per 1M tokens each way) in route ``r`` with a $0.01
    reservation cap, and team ``t1`` with a $0.05 daily budget: a stream without
    ``max_tokens`` is admitted under the cap and metered until the budget is full."""
    return parse_settings(
        {
            "storage": {"state_dir": state_dir},
            "providers": {"p": {"kind": kind, "base_url": sim_url, "api_key_env": "K"}},
            "models": {
                "m": {
                    "provider": "p",
                    "deployment": deployment,
                    "input_per_mtok": 1000,
                    "output_per_mtok": 1000,
                }
            },
            "routes": {"r": {"chains": {"default": [{"model": "m"}]}, "reservation_cap_usd": 0.01}},
            "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1"}],
            "budgets": {"teams": {"t1": {"daily_usd": daily_usd}}},
        },
        env={"K": "x"},
    )


def chain_settings(
    urls: list[str],
    *,
    hedge_ms: list[int | None] | None = None,
    kinds: list[str] | None = None,
    first_byte_s: float = 10.0,
    idle_s: float = 10.0,
    extra: dict[str, Any] | None = None,
    breaker: dict[str, Any] | None = None,
    provider_extra: dict[str, Any] | None = None,
) -> Settings:
    """One provider + model per simulator URL (``m0``, ``m1``...), chained in route ``r``."""
    kinds = kinds or ["openai"] * len(urls)
    hedge_ms = hedge_ms or [None] * len(urls)
    providers = {
        f"p{i}": {"kind": k, "base_url": u, "api_key_env": "SIMKEY", **(provider_extra or {})}
        for i, (u, k) in enumerate(zip(urls, kinds, strict=True))
    }
    models = {
        f"m{i}": {
            "provider": f"p{i}",
            "input_per_mtok": 1.0 + i,
            "output_per_mtok": 2.0 + i,
            "max_output_tokens": 4096,
        }
        for i in range(len(urls))
    }
    targets = []
    for i, h in enumerate(hedge_ms):
        t: dict[str, Any] = {
            "model": f"m{i}",
            "first_byte_timeout_s": first_byte_s,
            "idle_timeout_s": idle_s,
            "connect_timeout_s": 2.0,
        }
        if h is not None:
            t["hedge_after_ms"] = h
        targets.append(t)
    data: dict[str, Any] = {
        "storage": {"state_dir": tempfile.mkdtemp(prefix="tp-")},
        "providers": providers,
        "models": models,
        "routes": {"r": {"chains": {"default": targets}}},
        "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1"}],
    }
    if breaker:
        data["breaker"] = breaker
    data.update(extra or {})
    return parse_settings(data, env={"SIMKEY": "sim-key"})
