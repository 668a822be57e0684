"""The systemd units pass ``systemd-analyze verify`` (Debian's ``systemd`` package; CI installs
it). The units name ``/opt/trioproxy/bin/trioproxy``, as README's deploy steps install it; the
test points them at this environment's ``trioproxy`` so that verify can check the commands.
``tests/test_systemd_boot.py`` runs them under a real systemd, after README's deploy steps."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = sorted((REPO / "systemd").glob("*.service"))
INSTALLED = "/opt/trioproxy/bin/trioproxy"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    here = Path(sys.executable).parent / "trioproxy"
    assert here.exists()
    units = []
    for unit in UNITS:
        text = unit.read_text()
        assert INSTALLED in text
        copy = tmp_path / unit.name
        copy.write_text(text.replace(INSTALLED, str(here)))
        units.append(str(copy))
    assert len(units) == 2
    done = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_reload_sends_sighup_and_stop_drains() -> None:
    text = (REPO / "systemd" / "trioproxy.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert "KillSignal=SIGTERM" in text and "Restart=on-failure" in text
