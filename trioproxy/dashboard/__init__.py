"""The dashboard and the JSON admin API: a Quart-Trio app for every non-/v1 path.

``mount_dashboard(gateway)`` (that is, ``gateway.inner = create_dashboard(gateway)``). Admin API keys only; see
:mod:`trioproxy.dashboard.access` for login, sessions and CSRF (enforced by
:mod:`trioproxy.dashboard.guard`). Imported on first use, so a data-plane worker that only
needs :mod:`trioproxy.dashboard.wiring` loads no Quart.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_dashboard", "mount_dashboard"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from trioproxy.dashboard import app

        return getattr(app, name)
    raise AttributeError(name)
