"""The config a service's processes run on: the file as ``serve`` accepted it, not as it is.

``trioproxy serve --config FILE`` checks FILE, then copies it into its run directory
(``config.start.toml`` and ``config.accepted.toml``). Each process
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


def take(live: str | Path, run_dir: str | Path) -> None:
    """Copy the operator's file into ``run_dir`` (start and accepted)."""
    data = Path(live).read_bytes()
    _write(Path(run_dir) / START_NAME, data)
    _write(Path(run_dir) / ACCEPTED_NAME, data)


def settings_at_start(
    run_dir: str | Path, env: Mapping[str, str], live: str | Path | None = None
) -> Settings:
    """What a process of the service starts on: the last accepted config, with the start's
    restart-only sections; relative paths in the operator's file ``live``'s directory (the
    copies' directory, the run directory, is none of the operator's)."""
    from trioproxy.config.load import config_dir, load_settings
    from trioproxy.edge.reload import RESTART_ONLY

    base = None if live is None else config_dir(live)
    start = load_settings(Path(run_dir) / START_NAME, env=env, base=base)
    accepted = load_settings(Path(run_dir) / ACCEPTED_NAME, env=env, base=base)
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
        from trioproxy.config.load import read_config, settings_of

        data = read_config(self.live)
        settings = settings_of(data, self.live, env=self.env)
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
