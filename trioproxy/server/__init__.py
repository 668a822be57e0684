"""Wiring: builds the app from settings (stores, caches, ledger, dashboard)."""

from trioproxy.server.early_signals import hold_reloads

hold_reloads()  # before the imports of a starting process: a reload must not kill it
