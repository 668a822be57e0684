"""Wiring: builds the app from settings (stores, caches, ledger, dashboard)."""
