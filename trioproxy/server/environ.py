"""What ``trioproxy serve`` hands its processes in the environment, and the settings they
read from it: the config is checked once for the supervisor (``plan.py``), then loaded by each
worker and the control plane at start-up (``factory.from_env``).

``TRIOPROXY_CONFIG`` (a TOML path) or, for the demo, ``TRIOPROXY_DEMO_SIM_URL`` and
``TRIOPROXY_DEMO_KEY``; the log level and format the supervisor was given. This module
imports the config package only when settings are read (the supervisor reads the names).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trioproxy.config.model import Settings

ENV_CONFIG = "TRIOPROXY_CONFIG"
ENV_SIM_URL = "TRIOPROXY_DEMO_SIM_URL"
ENV_DEMO_KEY = "TRIOPROXY_DEMO_KEY"
ENV_LOG_LEVEL = "TRIOPROXY_LOG_LEVEL"
ENV_LOG_FORMAT = "TRIOPROXY_LOG_FORMAT"


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    from trioproxy.config import demo_settings, load_settings
    from trioproxy.server.config_snapshot import has_snapshot, settings_at_start
    from trioproxy.server.ready_files import ENV_RUN_DIR

    env = dict(os.environ) if env is None else env
    path = env.get(ENV_CONFIG)
    if path:
        run_dir = env.get(ENV_RUN_DIR)
        if has_snapshot(run_dir):  # a process of `serve`: the config the service runs
            assert run_dir is not None
            return settings_at_start(run_dir, env, path)
        return load_settings(path, env=env)
    return demo_settings(env[ENV_SIM_URL], env[ENV_DEMO_KEY])


__all__ = [
    "ENV_CONFIG", "ENV_DEMO_KEY", "ENV_LOG_FORMAT", "ENV_LOG_LEVEL", "ENV_SIM_URL",
    "settings_from_env",
]  # fmt: skip
