"""TOML tables to config dataclasses, one builder per section.

Each builder reads its table through :class:`~trioproxy.config.fields.Table`
(so wrong types and unknown keys become problems naming their path) and
always returns a value, using defaults or placeholders where the file is
wrong, so that one pass reports every problem. Secrets are read from the
environment here, named by ``*_env`` keys, and wrapped in :class:`Secret`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypeVar

from trioproxy.config.dashboard import dashboard_section
from trioproxy.config.fields import Table, build, join, list_of
from trioproxy.config.model import (
    DEFAULT_FALLBACK_STATUSES,
    ApiKeyConfig,
    BreakerConfig,
    BudgetsConfig,
    CacheConfig,
    Chain,
    EmbedderConfig,
    ModelConfig,
    ProviderConfig,
    RouteConfig,
    Secret,
    SelectRule,
    ServerConfig,
    Settings,
    StorageConfig,
    Target,
    TeamBudget,
    TelemetryConfig,
    Timeouts,
    UserWindow,
)
from trioproxy.config.validate import normalize_base_url
from trioproxy.core.proxy import DIRECT, FROM_ENV, parse_proxy_url
from trioproxy.providers.registry import KINDS

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
T = TypeVar("T")


def hash_key(key: str) -> str:
    """The sha256 hex digest under which an API key is stored and looked up."""
    import hashlib  # (with OpenSSL's libcrypto, ~3.6 MB of RSS: not for a config without one)

    return hashlib.sha256(key.encode()).hexdigest()


def build_settings(root: Table, env: Mapping[str, str], key_paths: dict[str, str]) -> Settings:
    """Settings from the top-level table; ``key_paths`` gets each key hash's ``api_keys[i]``."""
    return Settings(  # keyword order = file order, so problems come out in reading order
        server=_plain(root.table("server"), ServerConfig),
        storage=build_storage(root.table("storage"), env),
        breaker=_plain(root.table("breaker"), BreakerConfig),
        providers={name: _provider(name, t, env) for name, t in root.table("providers").items()},
        models={name: _model(name, t) for name, t in root.table("models").items()},
        routes={name: _route(name, t) for name, t in root.table("routes").items()},
        api_keys=_api_keys(root.tables("api_keys"), env, key_paths),
        budgets=_budgets(root.table("budgets")),
        embedder=_embedder(root.table("embedder"), env),
        dashboard=dashboard_section(root.table("dashboard")),
        telemetry=_plain(root.table("telemetry"), TelemetryConfig),
    )


def _plain(t: Table, cls: type[T], /, **given: Any) -> T:
    """A section with nothing but plain keys (and ``given``), every key read."""
    value = build(t, cls, **given)
    t.finish()
    return value


def _embedder(t: Table, env: Mapping[str, str]) -> EmbedderConfig:
    embedder = _plain(t, EmbedderConfig, api_key=_from_env(t, "api_key_env", env))
    return replace(embedder, base_url=embedder.base_url.rstrip("/"))


def _from_env(t: Table, key: str, env: Mapping[str, str]) -> Secret | None:
    """The secret in the env var named by ``t[key]``; unset or empty is a problem."""
    var = t.opt(key, str)
    if var is None:
        return None
    value = env.get(var)
    if not value:
        t.problem(key, f"environment variable {var} is not set")
        return None
    return Secret(value)


def _secret(t: Table, key: str, env: Mapping[str, str]) -> Secret | None:
    """``key`` written inline, or ``key_env`` naming an env var; not both."""
    inline = t.opt(key, str)
    from_env = _from_env(t, f"{key}_env", env)
    if inline is not None and t.has(f"{key}_env"):
        t.problem(key, f"set either {key} or {key}_env, not both")
    return Secret(inline) if inline is not None else from_env


def build_storage(t: Table, env: Mapping[str, str]) -> StorageConfig:
    redis_url, database_url = _secret(t, "redis_url", env), _secret(t, "database_url", env)
    return _plain(t, StorageConfig, redis_url=redis_url, database_url=database_url)


def _provider(name: str, t: Table, env: Mapping[str, str]) -> ProviderConfig:
    provider = build(t, ProviderConfig, name=name, api_key=_from_env(t, "api_key_env", env))
    if provider.pool_idle_s <= 0:
        t.problem("pool_idle_s", "must be > 0")
    if provider.ca_file is not None and not os.path.isfile(provider.ca_file):
        t.problem("ca_file", f"no such file: {provider.ca_file!r}")
    if provider.proxy not in (DIRECT, FROM_ENV):
        try:
            parse_proxy_url(provider.proxy)
        except ValueError as exc:
            t.problem("proxy", f"{exc} (or 'env' / 'none')")
    t.finish()
    if provider.kind not in KINDS:  # a missing kind is already a problem ("required")
        if t.has("kind"):
            t.problem("kind", f"must be one of {', '.join(KINDS)}, got {provider.kind!r}")
        provider = replace(provider, kind="openai_compatible")
    return replace(provider, base_url=normalize_base_url(provider.base_url))


def _model(name: str, t: Table) -> ModelConfig:
    output_price = t.opt("output_per_mtok", float)
    return _plain(
        t, ModelConfig, name=name, deployment=t.get("deployment", str, name),
        output_per_mtok=0.0 if output_price is None else output_price,
        embedding=output_price is None,
    )  # fmt: skip


def _route(name: str, t: Table) -> RouteConfig:
    chains_t = t.table("chains")
    chains = {
        name: Chain(name, tuple(_target(tt) for tt in chains_t.tables(name)))
        for name in list(chains_t.data)
    }
    chains_t.finish()
    statuses = list_of(t, "fallback_statuses", int)
    return _plain(
        t,
        RouteConfig,
        name=name,
        chains=chains,
        rules=tuple(_plain(rt, SelectRule) for rt in t.tables("rules")),
        fallback_statuses=DEFAULT_FALLBACK_STATUSES if statuses is None else frozenset(statuses),
        cache=_cache(t.table("cache")),
    )


def _cache(t: Table) -> CacheConfig:
    return _plain(t, CacheConfig, semantic_band=_band(t))


def _band(t: Table) -> tuple[float, float] | None:
    items = list_of(t, "semantic_band", float)
    if items is None:
        return None
    if len(items) != 2:
        t.problems.append(f"{join(t.path, 'semantic_band')}: must be [floor, ceiling]")
        return None
    return items[0], items[1]


def _target(t: Table) -> Target:
    return _plain(t, Target, timeouts=build(t, Timeouts))


def _api_keys(
    tables: list[Table], env: Mapping[str, str], key_paths: dict[str, str]
) -> dict[str, ApiKeyConfig]:
    """Keys by hash; ``key_paths`` gets each hash's ``api_keys[i]`` for later problems."""
    keys: dict[str, ApiKeyConfig] = {}
    for t in tables:
        name = t.req("name", str, "")
        key_hash, source = _key_hash(t, env)
        key = build(t, ApiKeyConfig, key_hash=key_hash or "", user=t.get("user", str, name),
                    rpm=_positive(t, "rpm"), tpm=_positive(t, "tpm"))  # fmt: skip
        t.finish()
        if key_hash in keys:
            t.problem(source, f"duplicate key: the same key as {key_paths[key_hash]}")
            continue
        # An unusable key (already a problem) is kept under its path, with an empty
        # hash, so that checks on its name, team and routes still run.
        slot = t.path if key_hash is None else key_hash
        keys[slot] = key
        key_paths[slot] = t.path
    return keys


def _key_hash(t: Table, env: Mapping[str, str]) -> tuple[str | None, str]:
    """The key's sha256 from ``key_sha256`` or from the env var ``key_env``, and which was used."""
    digest = t.opt("key_sha256", str)
    var = t.opt("key_env", str)
    if (digest is None) == (var is None):
        if not (t.has("key_sha256") or t.has("key_env")):
            t.problems.append(f"{t.path}: needs key_sha256 or key_env")
        elif digest is not None:
            t.problem("key_sha256", "set either key_sha256 or key_env, not both")
        return None, "key_sha256"
    if digest is not None:
        if not _SHA256_HEX.fullmatch(digest):
            t.problem("key_sha256", "must be 64 hex digits (sha256 of the key)")
            return None, "key_sha256"
        return digest.lower(), "key_sha256"
    raw = env.get(var or "")
    if not raw:
        t.problem("key_env", f"environment variable {var} is not set")
        return None, "key_env"
    return hash_key(raw), "key_env"


def _positive(t: Table, key: str) -> int | None:
    value = t.opt(key, int)
    if value is not None and value <= 0:
        t.problem(key, "must be > 0")
    return value


def _budgets(t: Table) -> BudgetsConfig:
    teams = {team: _plain(tt, TeamBudget, team=team) for team, tt in t.table("teams").items()}
    users = {user: _plain(ut, UserWindow, user=user) for user, ut in t.table("users").items()}
    return _plain(t, BudgetsConfig, teams=teams, users=users)


__all__ = ["build_settings", "hash_key"]
