"""Session-scoped throwaway Redis and PostgreSQL+pgvector servers."""
