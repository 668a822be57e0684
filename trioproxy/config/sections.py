"""TOML tables to config dataclasses, one builder per section.

Each builder reads its table through :class:`~trioproxy.config.fields.Table`
(so wrong types and unknown keys become problems naming their path) and
always returns a value, using defaults or placeholders where the file is
wrong, so that one pass reports every problem. Secrets are read from the
environment here, named by ``*_env`` keys, and wrapped in :class:`Secret`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypeVar, cast

from trioproxy.config.dashboard import dashboard_section
from trioproxy.config.fields import Table, check_type, join
from trioproxy.config.model import (
    DEFAULT_FALLBACK_STATUSES,
    ApiKeyConfig,
    BreakerConfig,
    BudgetsConfig,
    CacheConfig,
    Chain,
    EmbedderConfig,
    ModelConfig,
    Priority,
    ProviderConfig,
    RouteConfig,
    Secret,
    SelectRule,
    ServerConfig,
    Settings,
    StorageConfig,
    Target,
    TeamBudget,
    Timeouts,
    UserWindow,
)
from trioproxy.config.validate import normalize_base_url
from trioproxy.providers.registry import KINDS

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
T = TypeVar("T")


def hash_key(key: str) -> str:
    """The sha256 hex digest under which an API key is stored and looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


def build_settings(root: Table, env: Mapping[str, str], key_paths: dict[str, str]) -> Settings:
    """Settings from the top-level table; ``key_paths`` gets each key hash's ``api_keys[i]``."""
    return Settings(  # keyword order = file order, so problems come out in reading order
        server=_server(root.table("server")),
        storage=_storage(root.table("storage"), env),
        breaker=_breaker(root.table("breaker")),
        providers={name: _provider(name, t, env) for name, t in root.table("providers").items()},
        models={name: _model(name, t) for name, t in root.table("models").items()},
        routes={name: _route(name, t) for name, t in root.table("routes").items()},
        api_keys=_api_keys(root.tables("api_keys"), env, key_paths),
        budgets=_budgets(root.table("budgets")),
        embedder=_embedder(root.table("embedder"), env),
        dashboard=dashboard_section(root.table("dashboard")),
    )


def _embedder(t: Table, env: Mapping[str, str]) -> EmbedderConfig:
    d = EmbedderConfig()
    kind = t.get("kind", str, d.kind)
    if kind not in ("local", "openai"):
        t.problem("kind", f"must be 'local' or 'openai', got {kind!r}")
        kind = "local"
    embedder = EmbedderConfig(
        kind="openai" if kind == "openai" else "local",
        base_url=t.get("base_url", str, d.base_url).rstrip("/"),
        model=t.get("model", str, d.model),
        dim=t.get("dim", int, d.dim),
        api_key=_from_env(t, "api_key_env", env),
    )
    if embedder.dim <= 0:
        t.problem("dim", "must be > 0")
    t.finish()
    return embedder


def _server(t: Table) -> ServerConfig:
    d = ServerConfig()
    server = ServerConfig(
        max_body_bytes=t.get("max_body_bytes", int, d.max_body_bytes),
        max_in_flight=t.get("max_in_flight", int, d.max_in_flight),
        stream_buffer=t.get("stream_buffer", int, d.stream_buffer),
        shutdown_grace_s=t.get("shutdown_grace_s", float, d.shutdown_grace_s),
    )
    t.finish()
    return server


def _breaker(t: Table) -> BreakerConfig:
    d = BreakerConfig()
    breaker = BreakerConfig(
        failure_threshold=t.get("failure_threshold", int, d.failure_threshold),
        cooldown_s=t.get("cooldown_s", float, d.cooldown_s),
    )
    t.finish()
    return breaker


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


def _storage(t: Table, env: Mapping[str, str]) -> StorageConfig:
    storage = StorageConfig(
        state_dir=t.get("state_dir", str, StorageConfig().state_dir),
        redis_url=_secret(t, "redis_url", env),
        database_url=_secret(t, "database_url", env),
        ledger_retention_days=t.opt("ledger_retention_days", int),
    )
    if storage.ledger_retention_days is not None and storage.ledger_retention_days < 1:
        t.problem("ledger_retention_days", "must be >= 1")
    t.finish()
    return storage


def _provider(name: str, t: Table, env: Mapping[str, str]) -> ProviderConfig:
    kind = t.req("kind", str, "openai_compatible")
    if kind not in KINDS:
        t.problem("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
        kind = "openai_compatible"
    provider = ProviderConfig(
        name=name,
        kind=kind,
        base_url=normalize_base_url(t.req("base_url", str, "")),
        api_key=_from_env(t, "api_key_env", env),
        max_connections=t.get("max_connections", int, _default(ProviderConfig, "max_connections")),
    )
    t.finish()
    return provider


def _model(name: str, t: Table) -> ModelConfig:
    output_price = t.opt("output_per_mtok", float)
    model = ModelConfig(
        name=name,
        provider=t.req("provider", str, ""),
        deployment=t.get("deployment", str, name),
        input_per_mtok=t.req("input_per_mtok", float, 0.0),
        output_per_mtok=0.0 if output_price is None else output_price,
        context_limit=t.get("context_limit", int, _default(ModelConfig, "context_limit")),
        max_output_tokens=t.get(
            "max_output_tokens", int, _default(ModelConfig, "max_output_tokens")
        ),
        embedding=output_price is None,
    )
    t.finish()
    return model


def _route(name: str, t: Table) -> RouteConfig:
    chains_t = t.table("chains")
    chains = {
        name: Chain(name, tuple(_target(tt) for tt in chains_t.tables(name)))
        for name in list(chains_t.data)
    }
    chains_t.finish()
    statuses = _list_of(t, "fallback_statuses", int)
    route = RouteConfig(
        name=name,
        chains=chains,
        rules=tuple(_rule(rt) for rt in t.tables("rules")),
        fallback_statuses=DEFAULT_FALLBACK_STATUSES if statuses is None else frozenset(statuses),
        reservation_cap_usd=t.opt("reservation_cap_usd", float),
        cache=_cache(t.table("cache")),
    )
    t.finish()
    return route


def _target(t: Table) -> Target:
    d = Timeouts()
    target = Target(
        model=t.req("model", str, ""),
        timeouts=Timeouts(
            connect=t.get("connect_timeout_s", float, d.connect),
            first_byte=t.get("first_byte_timeout_s", float, d.first_byte),
            idle=t.get("idle_timeout_s", float, d.idle),
            total=t.get("total_timeout_s", float, d.total),
        ),
        hedge_after_ms=t.opt("hedge_after_ms", int),
    )
    t.finish()
    return target


def _rule(t: Table) -> SelectRule:
    priority = _list_of(t, "priority", str)
    rule = SelectRule(
        chain=t.req("chain", str, ""),
        priority=None if priority is None else cast(frozenset[Priority], frozenset(priority)),
        max_prompt_tokens=t.opt("max_prompt_tokens", int),
        min_prompt_tokens=t.opt("min_prompt_tokens", int),
        max_output_tokens=t.opt("max_output_tokens", int),
        reason=t.get("reason", str, ""),
    )
    t.finish()
    return rule


def _cache(t: Table) -> CacheConfig:
    d = CacheConfig()
    cache = CacheConfig(
        exact_ttl_s=t.get("exact_ttl_s", int, d.exact_ttl_s),
        semantic_ttl_s=t.get("semantic_ttl_s", int, d.semantic_ttl_s),
        semantic_threshold=t.get("semantic_threshold", float, d.semantic_threshold),
        scope=cast(Any, t.get("scope", str, d.scope)),
        max_temperature=t.get("max_temperature", float, d.max_temperature),
        allow_tools=t.get("allow_tools", bool, d.allow_tools),
    )
    t.finish()
    return cache


def _list_of(t: Table, key: str, kind: type[T]) -> list[T] | None:
    items = t.opt(key, list)
    if items is None:
        return None
    out: list[T] = []
    for i, item in enumerate(items):
        value = check_type(item, kind)
        if value is None:
            t.problems.append(f"{join(t.path, key)}[{i}]: must be {kind.__name__}, got {item!r}")
        else:
            out.append(value)
    return out


def _api_keys(
    tables: list[Table], env: Mapping[str, str], key_paths: dict[str, str]
) -> dict[str, ApiKeyConfig]:
    """Keys by hash; ``key_paths`` gets each hash's ``api_keys[i]`` for later problems."""
    keys: dict[str, ApiKeyConfig] = {}
    for t in tables:
        name = t.req("name", str, "")
        key_hash, source = _key_hash(t, env)
        routes = _list_of(t, "routes", str)
        key = ApiKeyConfig(
            name=name,
            key_hash=key_hash or "",
            team=t.req("team", str, ""),
            user=t.get("user", str, name),
            feature=t.get("feature", str, "default"),
            routes=None if routes is None else frozenset(routes),
            priority=cast(Priority, t.get("priority", str, "medium")),
            end_user_budgets=t.get("end_user_budgets", bool, False),
            admin=t.get("admin", bool, False),
            rpm=_positive(t, "rpm"),
            tpm=_positive(t, "tpm"),
        )
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
    d = BudgetsConfig()
    budgets = BudgetsConfig(
        teams={team: _team(team, tt) for team, tt in t.table("teams").items()},
        users={user: _user(user, ut) for user, ut in t.table("users").items()},
        timezone=t.get("timezone", str, d.timezone),
        webhook_url=t.opt("webhook_url", str),
        reservation_lease_s=t.get("reservation_lease_s", float, d.reservation_lease_s),
        store_timeout_s=t.get("store_timeout_s", float, d.store_timeout_s),
    )
    outage = t.get("on_store_outage", str, d.on_store_outage)
    if outage not in ("fail_closed", "fail_open"):
        t.problem("on_store_outage", "must be 'fail_closed' or 'fail_open'")
    elif outage == "fail_open":
        budgets = replace(budgets, on_store_outage="fail_open")
    if budgets.reservation_lease_s <= 0:
        t.problem("reservation_lease_s", "must be > 0")
    if budgets.store_timeout_s <= 0:
        t.problem("store_timeout_s", "must be > 0")
    t.finish()
    return budgets


def _team(team: str, t: Table) -> TeamBudget:
    budget = TeamBudget(
        team=team,
        daily_usd=t.opt("daily_usd", float),
        monthly_usd=t.opt("monthly_usd", float),
        alert_threshold=t.get("alert_threshold", float, _default(TeamBudget, "alert_threshold")),
    )
    t.finish()
    return budget


def _user(user: str, t: Table) -> UserWindow:
    window = UserWindow(
        user=user,
        tokens=t.req("tokens", int, 0),
        window_s=t.get("window_s", int, _default(UserWindow, "window_s")),
    )
    t.finish()
    return window


def _default(cls: type, name: str) -> Any:
    """A dataclass field's default (slotted classes do not keep it as a class attribute)."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


__all__ = ["build_settings", "hash_key"]
