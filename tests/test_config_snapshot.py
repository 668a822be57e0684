"""The config a service's processes run on (server/config_snapshot.py): real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.proc import to_toml
from tests.test_e2e_processes import config
from trioproxy.config.validate import ConfigError
from trioproxy.server.config_snapshot import ConfigFile, settings_at_start, take

ENV = {"SIMKEY": "x"}


def test_a_restarted_process_runs_the_accepted_config_with_the_starts_stores(
    tmp_path: Path,
) -> None:
    live, run = tmp_path / "trioproxy.toml", tmp_path / "run"
    run.mkdir()
    live.write_text(to_toml(config({"a": "http://127.0.0.1:9"}, tmp_path / "state")))
    take(live, run)
    # an accepted reload: a second provider, and a state_dir that waits for the restart
    live.write_text(to_toml(config({"a": "http://127.0.0.1:9", "b": "http://127.0.0.1:8"},
                                   tmp_path / "state2")))  # fmt: skip
    source = ConfigFile(live, run, ENV)
    assert source.load().storage.state_dir == str(tmp_path / "state2")
    source.keep()
    # then an edit the reload refuses
    live.write_text("[routes.broken\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        ConfigFile(live, run, ENV).load()
    restarted = settings_at_start(run, ENV)
    assert set(restarted.providers) == {"a", "b"}  # the accepted reload's
    assert restarted.storage.state_dir == str(tmp_path / "state")  # the service's, as started


def test_keep_writes_nothing_without_a_snapshot(tmp_path: Path) -> None:
    """A gateway started without `serve` (tests, `trioproxy report`) reloads its file alone."""
    live = tmp_path / "trioproxy.toml"
    live.write_text(to_toml(config({"a": "http://127.0.0.1:9"}, tmp_path)))
    source = ConfigFile(live, tmp_path / "run-not-made", ENV)
    source.load()
    source.keep()
    assert not (tmp_path / "run-not-made").exists()
