"""Configuration: the frozen typed model, the TOML loader and the demo config.

``load_settings`` is the one place that reads the config file and the
environment; everything after start-up receives a :class:`Settings`.
"""

from __future__ import annotations

from trioproxy.config.demo import demo_settings
from trioproxy.config.load import check_config, hash_key, load_settings, parse_settings
from trioproxy.config.model import Secret, Settings
from trioproxy.config.validate import ConfigError, validate_settings

__all__ = [
    "ConfigError",
    "Secret",
    "Settings",
    "check_config",
    "demo_settings",
    "hash_key",
    "load_settings",
    "parse_settings",
    "validate_settings",
]
