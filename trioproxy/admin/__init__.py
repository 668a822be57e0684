"""Dashboard accounts and their state: users, sessions, sign-in throttling, the audit log.

Pure rules live in :mod:`.passwords` and :mod:`.sessions`; :mod:`.store` keeps the state
that every worker process must share: in PostgreSQL when ``storage.database_url`` is set (every
instance), else SQLite under ``storage.state_dir`` (one host's workers).
"""
