"""The small CLI commands an operator runs by hand: hash-password, example-config."""

from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path

import pytest

from trioproxy import cli
from trioproxy.admin.passwords import MIN_PASSWORD, verify_password


def test_hash_password_refuses_what_the_users_page_refuses(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A password shorter than the Users page accepts gets no hash (exit 2, the reason);
    one long enough gets a hash that verifies."""
    monkeypatch.setattr("sys.stdin", io.StringIO("hunter2\n"))
    assert cli.main(["hash-password"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and f"at least {MIN_PASSWORD} characters" in out.err
    long_enough = "correct horse battery"
    monkeypatch.setattr("sys.stdin", io.StringIO(long_enough + "\n"))
    assert cli.main(["hash-password"]) == 0
    assert verify_password(long_enough, capsys.readouterr().out.strip())


def test_the_configs_hints_for_hash_password_work() -> None:
    """The example config's hint was `echo 'pw' | trioproxy hash-password`, which refuses
    'pw' (a password needs 12 characters): each hint that pipes a password pipes one long
    enough, and each says how long a password must be."""
    root = Path(__file__).resolve().parents[1]
    texts = [(root / "examples" / "trioproxy.toml").read_text(), (root / "README.md").read_text()]
    hints = [line for text in texts for line in text.splitlines()
             if "password_hash" in line and "hash-password" in line]  # fmt: skip
    assert hints
    for hint in hints:
        for piped in re.findall(r"echo '([^']*)' \| trioproxy hash-password", hint):
            assert len(piped) >= MIN_PASSWORD, hint
    example = [h for h in hints if h.startswith("# password_hash")]
    assert len(example) == 1 and f"{MIN_PASSWORD}+ characters" in example[0]


@pytest.mark.parametrize(("unit", "says"), [([], "trioproxy serve"), (["simulator"], "simulate")])
def test_example_config_prints_either_systemd_unit(
    unit: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["example-config", "--systemd", *unit]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("#") and "[Service]" in printed and says in printed


def test_the_demo_key_stays_the_same_across_restarts_from_one_folder(tmp_path: Path) -> None:
    """An app's .env keeps working: the first run makes the key (a file only its owner
    reads), the next run from the same state folder finds it; another folder gets another."""
    first = cli.demo_key(tmp_path / "var")
    assert first.startswith("tp-demo-") and len(first) > 20
    assert cli.demo_key(tmp_path / "var") == first
    assert stat.S_IMODE((tmp_path / "var" / "demo-key").stat().st_mode) == 0o600
    assert cli.demo_key(tmp_path / "elsewhere") != first


def test_a_demo_key_file_anyone_else_could_have_written_is_not_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo key is an admin key: a kept file readable or writable by others, or a link
    (another user's choice in a shared folder), is not used; a key for this run alone is,
    with a warning. A folder it cannot write still runs."""
    var = tmp_path / "var"
    var.mkdir()
    (var / "demo-key").write_text("tp-demo-chosen-by-someone-else\n")
    (var / "demo-key").chmod(0o644)
    assert cli.demo_key(var) != "tp-demo-chosen-by-someone-else"
    assert "not this user's private key file" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "demo-key").symlink_to(var / "demo-key")
    assert cli.demo_key(other) != "tp-demo-chosen-by-someone-else"
    assert "not used" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert cli.demo_key(tmp_path / "a-file" / "var").startswith("tp-demo-")  # no folder there
    assert "a key for this run only" in capsys.readouterr().err
    blocked = tmp_path / "blocked"
    (blocked / f".demo-key.{os.getpid()}").mkdir(parents=True)  # the file cannot be written
    assert cli.demo_key(blocked).startswith("tp-demo-")
    assert "not written" in capsys.readouterr().err and not (blocked / "demo-key").exists()


@pytest.mark.parametrize(
    "args",
    [["serve", "--port", "99999"], ["serve", "--admin-port", "70000"], ["serve", "--port", "-1"],
     ["simulate", "--port", "65536"], ["serve", "--port", "http"]],
)  # fmt: skip
def test_a_port_that_is_no_tcp_port_is_refused(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``serve --port 99999`` listened on 34463 (the number modulo 65536) while its banner
    named 99999, ``--admin-port 70000`` put the dashboard on 4464, ``--port -1`` ended in a
    traceback: each is now one line and exit 2, before anything starts."""
    with pytest.raises(SystemExit) as exit_:
        cli.parser().parse_args(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(f"got {args[-1]}") or err.endswith(f"not a whole number: '{args[-1]}'")
    assert "must be a TCP port (0-65535)" in err or "http" in err
