"""Load ``trioproxy.toml`` into a frozen :class:`~trioproxy.config.model.Settings`.

The file is read once at start-up. Secrets never live in the file: it names
environment variables (``api_key_env``, ``key_env``, ``redis_url_env``...),
which are read at load time and only then. Parsing (:mod:`.sections`)
collects every problem of form (wrong type, unknown key, missing env var),
then :mod:`.validate` checks the meaning (references, ranges); both lists are
raised together as one :class:`ConfigError`. ``examples/trioproxy.toml``
documents the schema.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trioproxy.config.budgets import budget_warnings
from trioproxy.config.catalog import DEFAULT_MAX_OUTPUT_TOKENS
from trioproxy.config.fields import Table
from trioproxy.config.model import Settings, StorageConfig
from trioproxy.config.resolve import resolve
from trioproxy.config.sections import build_settings, build_storage, hash_key
from trioproxy.config.validate import ConfigError, validate_settings


def load_settings(
    path: str | Path, *, env: Mapping[str, str] | None = None, base: str | Path | None = None
) -> Settings:
    """Read and validate the TOML file at ``path``; ``env`` defaults to ``os.environ``;
    ``base``: the directory its relative paths are in (default: ``path``'s own)."""
    return settings_of(read_config(path), path, env=env, base=base)


def settings_of(
    data: bytes, origin: str | Path, *, env: Mapping[str, str] | None = None,
    base: str | Path | None = None,
) -> Settings:  # fmt: skip
    """Validate a config file's bytes (read from ``origin``, which problems name; its
    relative paths are in ``base``, by default ``origin``'s directory)."""
    return parse_settings(_toml(data, origin), env=os.environ if env is None else env,
                          base=config_dir(origin) if base is None else base)  # fmt: skip


def config_dir(origin: str | Path) -> Path:
    """The directory of the config file ``origin``: its relative paths are in it."""
    return Path(os.path.abspath(origin)).parent


PATH_KEYS: tuple[tuple[str, str], ...] = (
    ("server", "tls_cert_file"),
    ("server", "tls_key_file"),
    ("storage", "state_dir"),
    ("providers.*", "ca_file"),
    ("embedder", "model_path"),
)
"""Every path-valued key of the file (``section.*``: each table of the section). A relative
one is taken in the config file's directory, not the directory ``trioproxy`` runs in:
``check-config`` run from /tmp validated /tmp/state for ``state_dir = "state"``, then
``report --config`` looked for the ledger elsewhere (review). An unset ``state_dir`` stays
``./var`` of the working directory (the unit's ``WorkingDirectory``, the demo's)."""


def anchor_paths(data: Mapping[str, Any], base: str | Path) -> dict[str, Any]:
    """``data`` with each relative path of :data:`PATH_KEYS` made absolute in ``base`` (the
    tables it changes are copies)."""
    out = dict(data)
    for section, key in PATH_KEYS:
        name, _, each = section.partition(".")
        table = out.get(name)
        if not isinstance(table, dict):
            continue
        table = out[name] = dict(table)
        if not each:
            _anchor(table, key, base)
            continue
        for sub, owner in list(table.items()):
            if isinstance(owner, dict):
                table[sub] = dict(owner)
                _anchor(table[sub], key, base)
    return out


def _anchor(table: dict[str, Any], key: str, base: str | Path) -> None:
    value = table.get(key)
    if isinstance(value, str) and value:
        value = os.path.expanduser(value)  # "~/x": the home's, as a shell reads it
        table[key] = value if os.path.isabs(value) else os.path.normpath(os.path.join(base, value))


def load_storage(path: str | Path, *, env: Mapping[str, str] | None = None) -> StorageConfig:
    """Only the ``[storage]`` section of the file at ``path`` (what ``trioproxy report``
    needs): the other sections, and the secrets they name, are not read."""
    problems: list[str] = []
    data = anchor_paths(_toml(read_config(path), path), config_dir(path))
    root = Table.of(data, "", problems)
    storage = build_storage(root.table("storage"), os.environ if env is None else env)
    if problems:
        raise ConfigError(problems)
    return storage


def read_config(path: str | Path) -> bytes:
    """The config file's bytes; :class:`ConfigError` naming it when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from None


def _toml(data: bytes, origin: str | Path) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{origin}: invalid TOML: {exc}"]) from None


def check_config(path: str, also: Callable[[Settings], list[str]] | None = None) -> int:
    """``trioproxy check-config FILE``: print a summary or every problem; the exit code.
    ``also``: what this machine cannot give the config (``serve``'s start-up checks: the
    state directory writable, TLS files loadable), each a problem too."""
    try:
        data = read_config(path)
        s = settings_of(data, path)
        if also is not None and (problems := also(s)):
            raise ConfigError(problems)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    for warning in [*config_warnings(_toml(data, path), os.environ), *budget_warnings(s.budgets)]:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"ok: {len(s.providers)} providers, {len(s.models)} models, "
        f"{len(s.routes)} routes, {len(s.api_keys)} keys; state in {s.storage.state_dir}"
    )
    return 0


MIN_ADMIN_KEY_CHARS = 32
"""An admin key shorter than this is a warning of ``check-config``: it opens the admin port
(dashboard, admin API, ``/metrics``), where only the per-address throttle slows guessing."""


def config_warnings(data: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """What a valid config had better not do: an admin key given in the environment
    (``key_env``) shorter than :data:`MIN_ADMIN_KEY_CHARS` (a ``key_sha256`` key's length
    cannot be seen); a chat model (one with an output price) with no ``max_output_tokens``
    (every request to it is then capped at :data:`DEFAULT_MAX_OUTPUT_TOKENS`)."""
    out: list[str] = []
    models = data.get("models")
    for name, entry in (models if isinstance(models, dict) else {}).items():
        if isinstance(entry, dict) and "output_per_mtok" in entry:
            if "max_output_tokens" not in entry:
                out.append(
                    f"models.{name}.max_output_tokens: not set, so every request to {name} is "
                    f"capped at {DEFAULT_MAX_OUTPUT_TOKENS} output tokens; set it to what the "
                    "model allows"
                )
    keys = data.get("api_keys")
    for i, entry in enumerate(keys if isinstance(keys, list) else []):
        if not isinstance(entry, dict) or entry.get("admin") is not True:
            continue
        var = entry.get("key_env")
        key = env.get(var, "") if isinstance(var, str) else ""
        if 0 < len(key) < MIN_ADMIN_KEY_CHARS:
            out.append(
                f"api_keys[{i}].key_env: the admin key in {var} is {len(key)} characters; an "
                f"admin key opens the admin port: use at least {MIN_ADMIN_KEY_CHARS} random "
                "ones (openssl rand -hex 24)"
            )
    return out


def parse_settings(
    data: Mapping[str, Any], *, env: Mapping[str, str], base: str | Path | None = None
) -> Settings:
    """Build and validate Settings from parsed TOML; raise :class:`ConfigError` listing all
    problems. ``base``: the directory relative paths are in (:data:`PATH_KEYS`); None leaves
    them as written."""
    if base is not None:
        data = anchor_paths(data, base)
    problems: list[str] = []
    root = Table.of(data, "", problems)
    key_paths: dict[str, str] = {}
    settings = build_settings(root, env, key_paths)
    root.finish()
    # A value that failed to parse reads as a placeholder: report its path (and
    # everything under it) once.
    reported = tuple(p.partition(": ")[0] for p in problems)
    for problem in validate_settings(settings, key_paths=key_paths):
        if not _under(problem.partition(": ")[0], reported):
            problems.append(problem)
    if problems:
        raise ConfigError(problems)
    return resolve(settings)


def _under(path: str, reported: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith((f"{r}.", f"{r}[")) for r in reported)


__all__ = [
    "MIN_ADMIN_KEY_CHARS",
    "PATH_KEYS",
    "ConfigError",
    "anchor_paths",
    "check_config",
    "config_dir",
    "config_warnings",
    "hash_key",
    "load_settings",
    "load_storage",
    "parse_settings",
    "read_config",
    "settings_of",
]
