"""The ``[dashboard]`` section: session lifetimes, cookie flags, sign-in limits, users.

```toml
[dashboard]
secure_cookies = true          # behind TLS
session_idle_s = 1800
session_max_s = 43200
login_attempts = 10            # failures per address (admin keys too) or device; a user's free ones
login_window_s = 300           # ... per this many seconds
trusted_proxies = ["127.0.0.1"]   # a reverse proxy in front: the client is in X-Forwarded-For

[dashboard.users.alice]
password_hash = "scrypt$14$8$1$..."   # trioproxy hash-password
role = "admin"                        # or "viewer" (the default)
teams = ["search", "support"]         # optional: only these teams
```
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal, cast

from trioproxy.config.fields import Table, join, list_of
from trioproxy.config.model import DashboardConfig, DashboardUser

_PASSWORD_HASH = re.compile(r"scrypt\$\d{2}\$\d{1,2}\$\d{1,2}\$[0-9a-f]{8,}\$[0-9a-f]{64}")
"""The shape :func:`trioproxy.admin.passwords.hash_password` writes."""


def dashboard_section(t: Table) -> DashboardConfig:
    d = DashboardConfig()
    cfg = DashboardConfig(
        secure_cookies=t.get("secure_cookies", bool, d.secure_cookies),
        session_idle_s=t.get("session_idle_s", float, d.session_idle_s),
        session_max_s=t.get("session_max_s", float, d.session_max_s),
        login_attempts=t.get("login_attempts", int, d.login_attempts),
        login_window_s=t.get("login_window_s", float, d.login_window_s),
        trusted_proxies=_networks(t, "trusted_proxies"),
        users={name: _user(name, ut) for name, ut in t.table("users").items()},
    )
    for field in ("session_idle_s", "session_max_s", "login_attempts", "login_window_s"):
        if getattr(cfg, field) <= 0:
            t.problem(field, "must be > 0")
    t.finish()
    return cfg


def _networks(t: Table, key: str) -> tuple[str, ...]:
    """Addresses or CIDR ranges, each written as its network (``10.0.0.0/8``, ``::1/128``)."""
    out: list[str] = []
    for i, item in enumerate(list_of(t, key, str) or []):
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            t.problems.append(f"{join(t.path, key)}[{i}]: not an address or CIDR range: {item!r}")
    return tuple(out)


def _user(name: str, t: Table) -> DashboardUser:
    password_hash = t.req("password_hash", str, "")
    if password_hash and not _PASSWORD_HASH.fullmatch(password_hash):
        t.problem("password_hash", "must be a hash from 'trioproxy hash-password' (scrypt$...)")
    role = t.get("role", str, "viewer")
    if role not in ("admin", "viewer"):
        t.problem("role", "must be 'admin' or 'viewer'")
        role = "viewer"
    teams = t.opt("teams", list)
    if teams is not None and not all(isinstance(x, str) and x for x in teams):
        t.problem("teams", "must be a list of team names")
        teams = None
    user = DashboardUser(
        name=name,
        password_hash=password_hash,
        role=cast(Literal["admin", "viewer"], role),
        teams=None if teams is None else frozenset(teams),
    )
    t.finish()
    return user


__all__ = ["dashboard_section"]
