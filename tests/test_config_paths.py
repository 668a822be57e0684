"""Relative paths in a config file are in the config file's directory, whatever directory
``trioproxy`` runs in (config/load.py, ``PATH_KEYS``).

``state_dir = "state"`` in /etc/x/cfg.toml was ./state of the working directory: check-config
run from /tmp validated /tmp/state, then ``report --config`` from elsewhere found no ledger
(review).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trioproxy.config.load import load_settings, load_storage
from trioproxy.server.config_snapshot import ConfigFile, take
from trioproxy.server.environ import ENV_CONFIG, settings_from_env
from trioproxy.server.ready_files import ENV_RUN_DIR

CONFIG = """
[server]
tls_cert_file = "tls/cert.pem"
tls_key_file = "{absolute_key}"

[storage]
state_dir = "state"

[providers.openai]
kind = "openai"
base_url = "https://api.openai.com/v1/"
api_key_env = "OPENAI_API_KEY"
ca_file = "../ca/roots.pem"

[models.gpt]
provider = "openai"
input_per_mtok = 0.15
output_per_mtok = 0.60
max_output_tokens = 100

[[routes.chat.chains.default]]
model = "gpt"

[[api_keys]]
name = "app"
key_env = "APP_KEY"
team = "t1"

[embedder]
kind = "local"
model_path = "models/minilm.onnx"
"""
ENV = {"OPENAI_API_KEY": "sk-openai", "APP_KEY": "sk-app-key"}


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The config in tmp/etc/cfg.toml; the process runs in tmp/elsewhere."""
    etc, elsewhere, ca = tmp_path / "etc", tmp_path / "elsewhere", tmp_path / "ca"
    for d in (etc, elsewhere, ca):
        d.mkdir()
    (ca / "roots.pem").write_text("")
    (etc / "models").mkdir()
    (etc / "models" / "minilm.onnx").write_text("")
    cfg = etc / "cfg.toml"
    cfg.write_text(CONFIG.format(absolute_key=tmp_path / "key.pem"))
    monkeypatch.chdir(elsewhere)
    return cfg, tmp_path


def test_every_path_key_of_a_config_file_is_in_its_directory(layout: tuple[Path, Path]) -> None:
    from trioproxy.config.load import PATH_KEYS

    cfg, tmp = layout
    etc = tmp / "etc"
    for settings in (load_settings(cfg, env=ENV), ConfigFile(cfg, None, ENV).load(),
                     load_settings(Path("..") / "etc" / "cfg.toml", env=ENV)):  # fmt: skip
        assert settings.storage.state_dir == str(etc / "state")
        assert settings.server.tls_cert_file == str(etc / "tls" / "cert.pem")
        assert settings.server.tls_key_file == str(tmp / "key.pem")  # absolute: as written
        assert settings.providers["openai"].ca_file == str(tmp / "ca" / "roots.pem")
        assert settings.embedder.model_path == str(etc / "models" / "minilm.onnx")
    assert load_storage(cfg, env=ENV).state_dir == str(etc / "state")  # `report --config`
    assert {key for _, key in PATH_KEYS} == {
        "tls_cert_file", "tls_key_file", "state_dir", "ca_file", "model_path",
    }  # fmt: skip


def test_serves_processes_take_paths_in_the_operators_config_directory(
    layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker reads a copy of the config in the run directory: its paths are still in the
    operator's file's directory, not the run directory's."""
    cfg, tmp = layout
    run = tmp / "run"
    run.mkdir()
    take(cfg, run)
    env = {**ENV, ENV_CONFIG: str(cfg), ENV_RUN_DIR: str(run)}
    settings = settings_from_env(env)
    assert settings.storage.state_dir == str(tmp / "etc" / "state")
    assert settings.providers["openai"].ca_file == str(tmp / "ca" / "roots.pem")


def test_check_config_checks_the_state_dir_beside_the_config(
    layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config run from another directory checks (and names) the config's state_dir."""
    from trioproxy.cli import main

    cfg, tmp = layout
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    cfg.write_text(cfg.read_text().replace('"state"', '"blocker/state"'))
    (tmp / "etc" / "blocker").write_text("")  # a file: the state_dir cannot be made in it
    assert main(["check-config", str(cfg)]) == 1
    err = capsys.readouterr().err.splitlines()
    etc = tmp / "etc"
    assert err == [
        f"server.tls_cert_file, server.tls_key_file: cannot load {etc / 'tls' / 'cert.pem'} "
        f"with {tmp / 'key.pem'}: [Errno 2] No such file or directory",
        f"storage.state_dir: {etc / 'blocker' / 'state'} is not a directory this service can "
        f"write to: Not a directory",
    ], err


def test_a_path_from_the_home_is_the_homes(
    layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``state_dir = "~/trioproxy"`` was taken as ``<config dir>/~/trioproxy``: a folder
    named ``~`` beside the config. It is the home's, as a shell reads it."""
    cfg, tmp = layout
    monkeypatch.setenv("HOME", str(tmp / "home"))
    cfg.write_text(cfg.read_text().replace('state_dir = "state"', 'state_dir = "~/trioproxy"'))
    assert load_settings(cfg, env=ENV).storage.state_dir == str(tmp / "home" / "trioproxy")
