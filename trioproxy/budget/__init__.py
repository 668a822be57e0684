"""Exact budgets: reservations against team USD periods and user token windows."""
