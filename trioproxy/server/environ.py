"""What ``trioproxy serve`` hands its processes in the environment, and the settings they
read from it: the config is resolved once by the supervisor, then by each worker and the
control plane at start-up (``factory.from_env``).

``TRIOPROXY_CONFIG`` (a TOML path) or, for the demo, ``TRIOPROXY_DEMO_SIM_URL`` and
``TRIOPROXY_DEMO_KEY``; the log level and format the supervisor was given. This module
imports the config package only (no gateway): the supervisor loads it too (``cli.py``,
``runner.py``).
"""

from __future__ import annotations

import os

from trioproxy.config import demo_settings, load_settings
from trioproxy.config.model import Settings

ENV_CONFIG = "TRIOPROXY_CONFIG"
ENV_SIM_URL = "TRIOPROXY_DEMO_SIM_URL"
ENV_DEMO_KEY = "TRIOPROXY_DEMO_KEY"
ENV_LOG_LEVEL = "TRIOPROXY_LOG_LEVEL"
ENV_LOG_FORMAT = "TRIOPROXY_LOG_FORMAT"


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    path = env.get(ENV_CONFIG)
    if path:
        return load_settings(path, env=env)
    return demo_settings(env[ENV_SIM_URL], env[ENV_DEMO_KEY])


__all__ = [
    "ENV_CONFIG", "ENV_DEMO_KEY", "ENV_LOG_FORMAT", "ENV_LOG_LEVEL", "ENV_SIM_URL",
    "settings_from_env",
]  # fmt: skip
