"""Where the dashboard's templates and static files live, and its session secret.

``templates/`` and ``static/`` sit at the top of the repository; the wheel installs them
inside the package (``trioproxy/templates``, ``trioproxy/static``; see ``setup.py``). So
they are found inside the package (an installed wheel) or next to it (a checkout or an
editable install), never through the working directory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_FILE = "dashboard-session.key"
SECRET_BYTES = 32
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def asset_dir(name: str, *, package_dir: Path | None = None) -> Path:
    """The ``name`` directory (``templates``, ``static`` or ``examples``); raises if none.

    Looked up inside the package (a wheel install), then beside it (a checkout).
    """
    package_dir = package_dir or PACKAGE_DIR
    candidates = [package_dir / name, package_dir.parent / name]
    for path in candidates:
        if path.is_dir():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"dashboard {name}/ directory not found (tried {tried})")


def session_secret(state_dir: str | Path) -> bytes:
    """The key that signs session cookies: random, made once per state directory.

    Every worker process of a host reads the same file, so a browser session
    stays valid whichever worker answers, and across restarts. Created with
    mode 0600 and published with ``os.link`` (atomic, never half-written).
    """
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SECRET_FILE
    if not path.exists():
        tmp = directory / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(SECRET_BYTES))
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another worker published first; use its key
        finally:
            tmp.unlink()
    secret = path.read_bytes()
    if len(secret) < SECRET_BYTES:
        raise ValueError(f"{path}: session key shorter than {SECRET_BYTES} bytes")
    return secret


__all__ = ["asset_dir", "session_secret"]
