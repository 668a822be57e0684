"""The built-in demo config: every provider is the local provider simulator.

The simulator speaks both wire formats, so one base URL serves the OpenAI and
the Anthropic provider. Prices are real list prices (USD per 1M tokens) so the
dashboard's numbers look plausible; the traffic and the spend are simulated.
The routes mirror seed 002's ``selectModel``: high priority goes premium,
short low-priority requests go cheap, everything else takes the default chain.
"""

from __future__ import annotations

from trioproxy.config.load import hash_key
from trioproxy.config.model import (
    ApiKeyConfig,
    CacheConfig,
    Chain,
    ModelConfig,
    ProviderConfig,
    RouteConfig,
    Secret,
    SelectRule,
    ServerConfig,
    Settings,
    StorageConfig,
    Target,
    Timeouts,
)
from trioproxy.config.resolve import resolve
from trioproxy.config.validate import ConfigError, normalize_base_url, validate_settings

_PRICES = {  # model: (provider, input USD/Mtok, output USD/Mtok)
    "gpt-4o-mini": ("sim-openai", 0.15, 0.60),
    "gpt-4o": ("sim-openai", 2.50, 10.00),
    "claude-haiku": ("sim-anthropic", 0.80, 4.00),
    "claude-sonnet": ("sim-anthropic", 3.00, 15.00),
}
_EMBEDDING_PRICES = {  # embedding model: (provider, input USD/Mtok); no output price
    "text-embedding-3-small": ("sim-openai", 0.02),
    "text-embedding-3-large": ("sim-openai", 0.13),
}


def _chain(name: str, *targets: Target | str) -> Chain:
    return Chain(name, tuple(t if isinstance(t, Target) else Target(t) for t in targets))


DEMO_STATE_DIR = "./var"
"""Where the demo keeps its state (relative to the folder ``serve`` runs in)."""


def demo_settings(sim_base_url: str, demo_key: str, *, state_dir: str = DEMO_STATE_DIR) -> Settings:
    """Settings for the demo: two simulated providers, four chat models and two embedding
    models; routes ``chat``, ``extract`` and ``embed``.

    Raises :class:`ConfigError` if the result breaks a rule a config file must obey.
    """
    base_url = normalize_base_url(sim_base_url)
    providers = {
        "sim-openai": ProviderConfig("sim-openai", "openai", base_url, Secret("sim")),
        "sim-anthropic": ProviderConfig("sim-anthropic", "anthropic", base_url, Secret("sim")),
    }
    models = {
        name: ModelConfig(name, provider, name, input_price, output_price)
        for name, (provider, input_price, output_price) in _PRICES.items()
    }
    for name, (provider, input_price) in _EMBEDDING_PRICES.items():
        models[name] = ModelConfig(name, provider, name, input_price, 0.0, embedding=True)
    fast_start = Target("gpt-4o-mini", Timeouts(first_byte=10.0), hedge_after_ms=1500)
    chat = RouteConfig(
        name="chat",
        chains={
            "default": _chain("default", fast_start, "claude-haiku"),
            "premium": _chain("premium", "gpt-4o", "claude-sonnet", "gpt-4o-mini"),
            "cheap": _chain("cheap", "gpt-4o-mini", "claude-haiku"),
        },
        rules=(
            SelectRule("premium", priority=frozenset({"high"}), reason="high priority"),
            SelectRule(
                "cheap",
                priority=frozenset({"low"}),
                max_prompt_tokens=500,
                max_output_tokens=500,
                reason="short low-priority request",
            ),
        ),
        cache=CacheConfig(exact_ttl_s=3600, semantic_ttl_s=3600, semantic_target_false_hit=0.01),
    )
    extract = RouteConfig(
        name="extract", chains={"default": _chain("default", "claude-sonnet", "gpt-4o")}
    )
    embed = RouteConfig(
        name="embed",
        chains={"default": _chain("default", "text-embedding-3-small", "text-embedding-3-large")},
        cache=CacheConfig(exact_ttl_s=3600),
    )
    key_hash = hash_key(demo_key)
    key = ApiKeyConfig(name="demo", key_hash=key_hash, team="demo", user="demo", admin=True)
    settings = Settings(
        server=ServerConfig(),
        providers=providers,
        models=models,
        routes={"chat": chat, "extract": extract, "embed": embed},
        api_keys={key_hash: key},
        storage=StorageConfig(state_dir=state_dir),
        demo=True,
    )
    problems = validate_settings(settings)
    if problems:
        raise ConfigError(problems)
    return resolve(settings)


__all__ = ["DEMO_STATE_DIR", "demo_settings"]
