"""The config a service's processes run on: the file as ``serve`` accepted it, not as it is.

``trioproxy serve --config FILE`` copies FILE into its run directory at start
(``config.start.toml``, which it then validates, and ``config.accepted.toml``). Each process
reads its config from there, and each reload a process accepts replaces
``config.accepted.toml`` with the bytes it applied (:class:`ConfigFile`). A worker the
supervisor starts again therefore runs the config its siblings run: the sections a reload
does not apply (``RESTART_ONLY``: sockets, stores) from the start, the rest as last accepted.
It used to read FILE as it was then: an edit the reload had refused made every restart fail
until the supervisor gave up and stopped the service, and a ``[storage]`` edit waiting for
the next restart moved that one worker alone to another state directory.

Blocking (file I/O): call it in a thread from Trio, or before Trio starts.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (imported where used: ``serve``'s supervisor loads no config package)
    from trioproxy.config.model import Settings

START_NAME = "config.start.toml"
ACCEPTED_NAME = "config.accepted.toml"


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` at once (a reader sees the old file or the new one)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def take(live: str | Path, run_dir: str | Path) -> Path:
    """Copy the operator's file into ``run_dir`` (start and accepted); the start copy's path."""
    data = Path(live).read_bytes()
    start = Path(run_dir) / START_NAME
    _write(start, data)
    _write(Path(run_dir) / ACCEPTED_NAME, data)
    return start


def _parse(data: bytes, origin: str | Path, env: Mapping[str, str]) -> Settings:
    from trioproxy.config import parse_settings
    from trioproxy.config.validate import ConfigError

    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{origin}: invalid TOML: {exc}"]) from None
    return parse_settings(raw, env=env)


def settings_at_start(run_dir: str | Path, env: Mapping[str, str]) -> Settings:
    """What a process of the service starts on: the last accepted config, with the start's
    restart-only sections."""
    from trioproxy.edge.reload import RESTART_ONLY

    start = _parse((Path(run_dir) / START_NAME).read_bytes(), START_NAME, env)
    accepted = _parse((Path(run_dir) / ACCEPTED_NAME).read_bytes(), ACCEPTED_NAME, env)
    return dataclasses.replace(accepted, **{s: getattr(start, s) for s in RESTART_ONLY})


def has_snapshot(run_dir: str | Path | None) -> bool:
    return run_dir is not None and (Path(run_dir) / START_NAME).exists()


class ConfigFile:
    """A process's reload source: :meth:`load` reads and validates the operator's file;
    :meth:`keep` (after the reload applied it) makes those bytes the accepted config."""

    def __init__(
        self, live: str | Path, run_dir: str | Path | None, env: Mapping[str, str] | None = None
    ) -> None:
        self.live = Path(live)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.env = env
        self._loaded: bytes | None = None

    def load(self) -> Settings:
        from trioproxy.config.validate import ConfigError

        try:
            data = self.live.read_bytes()
        except OSError as exc:
            raise ConfigError([f"{self.live}: cannot read config: {exc.strerror or exc}"]) from None
        settings = _parse(data, self.live, os.environ if self.env is None else self.env)
        self._loaded = data
        return settings

    def keep(self) -> None:
        if self.run_dir is not None and self._loaded is not None and has_snapshot(self.run_dir):
            _write(self.run_dir / ACCEPTED_NAME, self._loaded)


__all__ = [
    "ACCEPTED_NAME",
    "START_NAME",
    "ConfigFile",
    "has_snapshot",
    "settings_at_start",
    "take",
]
