"""Semantic checks on a built :class:`~trioproxy.config.model.Settings`.

The TOML loader and :func:`~trioproxy.config.demo.demo_settings` both end
here, so a hand-built config is held to exactly the rules a file is. Every
problem names its key path as it would be written in ``trioproxy.toml``.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from trioproxy.config.budgets import limit_problem
from trioproxy.config.fields import join
from trioproxy.config.model import (
    ApiKeyConfig,
    BudgetsConfig,
    CacheConfig,
    EmbedderConfig,
    ModelConfig,
    ProviderConfig,
    RouteConfig,
    Settings,
    StorageConfig,
    Target,
)
from trioproxy.providers.registry import KINDS, needs_key, serves_embeddings

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PRIORITIES = ("low", "medium", "high")


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every reason, each naming its key path."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{count} config problem{'s' if count != 1 else ''}:\n{lines}")


def normalize_base_url(url: str) -> str:
    """Strip a trailing ``/`` and ``/v1``: adapters append ``/v1/...`` themselves."""
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")].rstrip("/")
    return url


def url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"must be an http:// or https:// URL, got {url!r}"
    return None


def _known(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def validate_settings(
    settings: Settings, *, key_paths: Mapping[str, str] | None = None
) -> list[str]:
    """Every problem in ``settings``; ``key_paths`` maps a key hash to its ``api_keys[i]``."""
    out: list[str] = []
    s = settings.server
    _positive(out, "server.max_body_bytes", s.max_body_bytes)
    _positive(out, "server.max_in_flight", s.max_in_flight)
    _at_least_zero(out, "server.stream_buffer", s.stream_buffer)
    _at_least_zero(out, "server.shutdown_grace_s", s.shutdown_grace_s)
    _at_least_zero(out, "server.queue_max", s.queue_max)
    _at_least_zero(out, "server.queue_timeout_s", s.queue_timeout_s)
    _at_least_zero(out, "server.key_cache_ttl_s", s.key_cache_ttl_s)
    _positive(out, "server.retry_after_max_s", s.retry_after_max_s)
    _at_least_zero(out, "server.max_in_flight_per_key", s.max_in_flight_per_key)
    for name in ("header_timeout_s", "keep_alive_s", "send_timeout_s", "body_timeout_s",
                 "body_min_rate", "max_head_bytes"):  # fmt: skip
        _positive(out, f"server.{name}", getattr(s, name))
    _at_least_zero(out, "server.body_grace_s", s.body_grace_s)
    if (s.tls_cert_file is None) != (s.tls_key_file is None):
        out.append("server.tls_cert_file: set both tls_cert_file and tls_key_file, or neither")
    if not 0 <= s.admin_port <= 65535:
        out.append(f"server.admin_port: must be a TCP port (0-65535), got {s.admin_port}")
    _positive(out, "breaker.failure_threshold", settings.breaker.failure_threshold)
    _positive(out, "breaker.cooldown_s", settings.breaker.cooldown_s)
    _check_storage(out, settings.storage)
    endpoint = settings.telemetry.otlp_endpoint
    if endpoint is not None and (problem := url_problem(endpoint)) is not None:
        out.append(f"telemetry.otlp_endpoint: {problem}")
    _positive(out, "telemetry.export_timeout_s", settings.telemetry.export_timeout_s)
    _positive(out, "telemetry.queue_size", settings.telemetry.queue_size)
    for name, provider in settings.providers.items():
        _check_provider(out, join("providers", name), provider)
    if not settings.models:
        out.append("models: at least one model is required")
    for name, model in settings.models.items():
        _check_model(out, join("models", name), model, settings.providers)
    for name, route in settings.routes.items():
        path = join("routes", name)
        if name in settings.models:
            out.append(
                f"{path}: route name collides with model {name!r} (a request's model names either)"
            )
        _check_route(out, path, route, settings.models)
    _check_keys(out, settings, key_paths or {})
    teams = {key.team for key in settings.api_keys.values()}
    _check_budgets(out, settings.budgets, None if "" in teams or not teams else teams)
    _check_lease(out, settings)
    _check_embedder(out, settings.embedder)
    return out


def _check_lease(out: list[str], settings: Settings) -> None:
    """A reservation's lease must outlive one upstream call: a request still running when its
    lease ended was settled at its worst case, silently (the ledger said its real cost)."""
    lease = settings.budgets.reservation_lease_s
    for name, route in settings.routes.items():
        for chain_name, chain in route.chains.items():
            for i, target in enumerate(chain.targets):
                if target.timeouts.total >= lease:
                    path = f"{join(f'routes.{name}.chains', chain_name)}[{i}].total_timeout_s"
                    out.append(f"{path}: {target.timeouts.total:g} s is not shorter than "
                               f"budgets.reservation_lease_s ({lease:g} s)")  # fmt: skip


def _one_of(out: list[str], path: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        shown = " or ".join(repr(c) for c in choices)
        out.append(f"{path}: must be {shown}, got {value!r}")


def _check_embedder(out: list[str], embedder: EmbedderConfig) -> None:
    _one_of(out, "embedder.kind", embedder.kind, ("local", "openai"))
    _positive(out, "embedder.dim", embedder.dim)
    if embedder.model_path is not None:
        if embedder.kind != "local":
            out.append('embedder.model_path: only with kind = "local"')
        elif not os.path.isfile(embedder.model_path):
            out.append(f"embedder.model_path: no such file: {embedder.model_path}")


def _positive(out: list[str], path: str, value: float) -> None:
    if not value > 0:
        out.append(f"{path}: must be > 0, got {value!r}")


def _at_least_zero(out: list[str], path: str, value: float) -> None:
    if not value >= 0:
        out.append(f"{path}: must be >= 0, got {value!r}")


def _check_storage(out: list[str], storage: StorageConfig) -> None:
    if not storage.state_dir:
        out.append("storage.state_dir: must not be empty")
    if storage.ledger_retention_days is not None and storage.ledger_retention_days < 1:
        out.append("storage.ledger_retention_days: must be >= 1")
    if not 0 < storage.ledger_fsync_interval_s <= 60:
        out.append("storage.ledger_fsync_interval_s: must be > 0 and <= 60")
    for name in ("cache_max_entries", "cache_max_mb", "semantic_max_prompts",
                 "semantic_max_per_namespace"):  # fmt: skip
        value = getattr(storage, name)
        if value is not None and value < 1:
            out.append(f"storage.{name}: must be >= 1")
    # Never echo these URLs: they carry passwords.
    for key, secret, schemes in (
        ("redis_url", storage.redis_url, ("redis", "rediss", "unix")),
        ("database_url", storage.database_url, ("postgresql", "postgres")),
    ):
        if secret is not None and urlsplit(secret.reveal()).scheme not in schemes:
            out.append(f"storage.{key}: must be a {' or '.join(s + '://' for s in schemes)} URL")


def _check_provider(out: list[str], path: str, provider: ProviderConfig) -> None:
    if (problem := url_problem(provider.base_url)) is not None:
        out.append(f"{path}.base_url: {problem}")
    if provider.api_key is None and needs_key(provider.kind):
        out.append(f"{path}.api_key_env: required for kind {provider.kind!r}")
    _positive(out, f"{path}.max_connections", provider.max_connections)
    if provider.image_tokens < 0:
        out.append(f"{path}.image_tokens: must be >= 0")


def _check_model(
    out: list[str], path: str, model: ModelConfig, providers: Mapping[str, ProviderConfig]
) -> None:
    if model.provider not in providers:
        out.append(
            f"{path}.provider: unknown provider {model.provider!r} (known: {_known(providers)})"
        )
    if not model.deployment:
        out.append(f"{path}.deployment: must not be empty")
    _at_least_zero(out, f"{path}.input_per_mtok", model.input_per_mtok)
    _at_least_zero(out, f"{path}.output_per_mtok", model.output_per_mtok)
    for bucket in ("cache_read", "cache_write_5m", "cache_write_1h"):
        price = getattr(model, f"{bucket}_per_mtok")
        if price is not None:
            _at_least_zero(out, f"{path}.{bucket}_per_mtok", price)
    _positive(out, f"{path}.context_limit", model.context_limit)
    _positive(out, f"{path}.max_output_tokens", model.max_output_tokens)
    _positive(out, f"{path}.max_dimensions", model.max_dimensions)
    if model.max_output_tokens > model.context_limit > 0:
        out.append(f"{path}.max_output_tokens: must be <= context_limit ({model.context_limit})")
    provider = providers.get(model.provider)
    if model.embedding and provider is not None and not serves_embeddings(provider.kind):
        kinds = " / ".join(k for k in KINDS if serves_embeddings(k))
        out.append(
            f"{path}.output_per_mtok: required on a provider of kind {provider.kind!r} (a model "
            f"without an output price is an embedding model, served by {kinds} providers)"
        )


def _check_route(
    out: list[str], path: str, route: RouteConfig, models: Mapping[str, ModelConfig]
) -> None:
    if "default" not in route.chains:
        out.append(f"{path}.chains: a route needs a chain named 'default'")
    every = {
        models[t.model].embedding
        for chain in route.chains.values()
        for t in chain.targets
        if t.model in models
    }
    if len(every) > 1:  # a route serves chat or embeddings: the endpoint refuses the other
        out.append(f"{path}.chains: mix embedding models (no output price) with chat models "
                   "(in one chain or across chains)")  # fmt: skip
    for chain_name, chain in route.chains.items():
        chain_path = join(f"{path}.chains", chain_name)
        if not chain.targets:
            out.append(f"{chain_path}: a chain needs at least one target")
        for i, target in enumerate(chain.targets):
            last = i == len(chain.targets) - 1
            _check_target(out, f"{chain_path}[{i}]", target, models, last=last)
    for i, rule in enumerate(route.rules):
        rule_path = f"{path}.rules[{i}]"
        if rule.chain not in route.chains:
            out.append(
                f"{rule_path}.chain: unknown chain {rule.chain!r} (known: {_known(route.chains)})"
            )
        if rule.priority is not None:
            if not rule.priority:
                out.append(f"{rule_path}.priority: must not be empty (omit it to match any)")
            for bad in sorted(set(rule.priority) - set(_PRIORITIES)):
                out.append(
                    f"{rule_path}.priority: unknown priority {bad!r} (known: low, medium, high)"
                )
        for field in ("max_prompt_tokens", "min_prompt_tokens", "max_output_tokens"):
            value = getattr(rule, field)
            if value is not None:
                _positive(out, f"{rule_path}.{field}", value)
        lo, hi = rule.min_prompt_tokens, rule.max_prompt_tokens
        if lo is not None and hi is not None and lo > hi:
            out.append(f"{rule_path}.min_prompt_tokens: must be <= max_prompt_tokens ({hi})")
    for status in sorted(route.fallback_statuses):
        if not 400 <= status <= 599:
            out.append(f"{path}.fallback_statuses: {status} is not an HTTP error status (400-599)")
    if route.reservation_cap_usd is not None:
        _positive(out, f"{path}.reservation_cap_usd", route.reservation_cap_usd)
    _check_cache(out, f"{path}.cache", route.cache)


def _check_target(
    out: list[str], path: str, target: Target, models: Mapping[str, ModelConfig], *, last: bool
) -> None:
    if target.model not in models:
        out.append(f"{path}.model: unknown model {target.model!r} (known: {_known(models)})")
    t = target.timeouts
    for key, value in (
        ("connect_timeout_s", t.connect),
        ("first_byte_timeout_s", t.first_byte),
        ("idle_timeout_s", t.idle),
        ("total_timeout_s", t.total),
    ):
        _positive(out, f"{path}.{key}", value)
    if t.first_byte > t.total:
        out.append(f"{path}.first_byte_timeout_s: must be <= total_timeout_s ({t.total})")
    if target.hedge_after_ms is not None:
        _at_least_zero(out, f"{path}.hedge_after_ms", target.hedge_after_ms)
        if last:
            out.append(f"{path}.hedge_after_ms: the last target has no next target to start")


def _check_cache(out: list[str], path: str, cache: CacheConfig) -> None:
    _at_least_zero(out, f"{path}.exact_ttl_s", cache.exact_ttl_s)
    _at_least_zero(out, f"{path}.semantic_ttl_s", cache.semantic_ttl_s)
    if cache.semantic_threshold is not None and not 0 < cache.semantic_threshold <= 1:
        out.append(f"{path}.semantic_threshold: must be in (0, 1], got {cache.semantic_threshold}")
    if not 0 < cache.semantic_target_false_hit < 1:
        out.append(
            f"{path}.semantic_target_false_hit: must be in (0, 1), "
            f"got {cache.semantic_target_false_hit}"
        )
    if cache.semantic_band is not None:
        floor, ceiling = cache.semantic_band
        if not 0 < floor <= ceiling <= 1:
            out.append(
                f"{path}.semantic_band: need 0 < floor <= ceiling <= 1, got {[floor, ceiling]}"
            )
    if cache.confirm_users < 1:
        out.append(f"{path}.confirm_users: must be >= 1, got {cache.confirm_users}")
    if cache.scope not in ("team", "global"):
        out.append(f"{path}.scope: must be 'team' or 'global', got {cache.scope!r}")
    _at_least_zero(out, f"{path}.max_temperature", cache.max_temperature)


def _check_keys(out: list[str], settings: Settings, key_paths: Mapping[str, str]) -> None:
    if not settings.api_keys:
        out.append("api_keys: at least one API key is required")
    targets = set(settings.routes) | set(settings.models)
    names: dict[str, str] = {}
    for i, (key_hash, key) in enumerate(settings.api_keys.items()):
        path = key_paths.get(key_hash, f"api_keys[{i}]")
        if key.key_hash or key_hash not in key_paths:  # empty: the loader reported why
            _check_hash(out, path, key, key_hash)
        _check_key(out, path, key, targets)
        if key.name in names:
            out.append(f"{path}.name: duplicate key name {key.name!r} (also {names[key.name]})")
        names.setdefault(key.name, path)


def _check_hash(out: list[str], path: str, key: ApiKeyConfig, key_hash: str) -> None:
    if not _SHA256_HEX.fullmatch(key.key_hash):
        out.append(f"{path}.key_sha256: must be 64 lowercase hex digits (sha256)")
    elif key_hash != key.key_hash:
        out.append(f"{path}.key_sha256: api_keys must be indexed by their own hash")


def _check_key(out: list[str], path: str, key: ApiKeyConfig, targets: set[str]) -> None:
    if not key.name:
        out.append(f"{path}.name: must not be empty")
    for field in ("team", "user", "feature"):
        if not getattr(key, field):
            out.append(f"{path}.{field}: must not be empty")
    if key.priority not in _PRIORITIES:
        out.append(f"{path}.priority: must be one of low, medium, high, got {key.priority!r}")
    if key.routes is not None and not key.routes:
        out.append(f"{path}.routes: must not be empty (omit it to allow every route and model)")
    for name in sorted(key.routes or ()):
        if name not in targets:
            out.append(f"{path}.routes: unknown route or model {name!r} (known: {_known(targets)})")


def _check_budgets(out: list[str], budgets: BudgetsConfig, teams: set[str] | None) -> None:
    """``teams``: the keys' teams, None when a key is missing (already a problem)."""
    try:
        zoneinfo.ZoneInfo(budgets.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        out.append(f"budgets.timezone: unknown time zone {budgets.timezone!r}")
    if budgets.webhook_url is not None and (problem := url_problem(budgets.webhook_url)):
        out.append(f"budgets.webhook_url: {problem}")
    _one_of(out, "budgets.on_store_outage", budgets.on_store_outage, ("fail_closed", "fail_open"))
    _positive(out, "budgets.reservation_lease_s", budgets.reservation_lease_s)
    _positive(out, "budgets.store_timeout_s", budgets.store_timeout_s)
    for team, budget in budgets.teams.items():
        path = join("budgets.teams", team)
        if teams is not None and team not in teams:
            out.append(f"{path}: no API key has team {team!r} (teams: {_known(teams)})")
        if budget.daily_usd is None and budget.monthly_usd is None:
            out.append(f"{path}: set daily_usd, monthly_usd or both")
        for field in ("daily_usd", "monthly_usd"):
            value = getattr(budget, field)
            if value is not None and (problem := limit_problem(value)) is not None:
                out.append(f"{path}.{field}: {problem}, got {value!r}")
        if not 0 < budget.alert_threshold <= 1:
            out.append(f"{path}.alert_threshold: must be in (0, 1], got {budget.alert_threshold}")
    for user, window in budgets.users.items():
        path = join("budgets.users", user)
        _positive(out, f"{path}.tokens", window.tokens)
        _positive(out, f"{path}.window_s", window.window_s)


__all__ = ["ConfigError", "normalize_base_url", "url_problem", "validate_settings"]
