"""The dashboard and the JSON admin API: a Quart-Trio app for every non-/v1 path.

``mount_dashboard(gateway)`` (that is, ``gateway.inner = create_dashboard(gateway)``). Admin API keys only; see
:mod:`trioproxy.dashboard.access` for login, sessions and CSRF.
"""

from trioproxy.dashboard.app import create_dashboard, mount_dashboard

__all__ = ["create_dashboard", "mount_dashboard"]
