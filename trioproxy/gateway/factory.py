"""Build the app of one server worker from what ``trioproxy serve`` decided.

``trioproxy serve`` resolves the config once, then hands the workers three
environment variables (set by the CLI, read here at worker start-up only):
``TRIOPROXY_CONFIG`` (a TOML path) or, for the demo, ``TRIOPROXY_DEMO_SIM_URL``
and ``TRIOPROXY_DEMO_KEY``.
"""

from __future__ import annotations

import os
from typing import Any

from trioproxy.config import demo_settings, load_settings
from trioproxy.config.model import Settings
from trioproxy.gateway.app import Gateway, create_app

ENV_CONFIG = "TRIOPROXY_CONFIG"
ENV_SIM_URL = "TRIOPROXY_DEMO_SIM_URL"
ENV_DEMO_KEY = "TRIOPROXY_DEMO_KEY"


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    path = env.get(ENV_CONFIG)
    if path:
        return load_settings(path, env=env)
    return demo_settings(env[ENV_SIM_URL], env[ENV_DEMO_KEY])


def build_gateway(settings: Settings, **kwargs: Any) -> Gateway:
    """The production wiring of a Gateway for ``settings``."""
    return create_app(settings, **kwargs)


def from_env() -> Gateway:
    """Hypercorn entry point: ``trioproxy.gateway.factory:from_env()``."""
    return build_gateway(settings_from_env())


__all__ = [
    "ENV_CONFIG",
    "ENV_DEMO_KEY",
    "ENV_SIM_URL",
    "build_gateway",
    "from_env",
    "settings_from_env",
]
