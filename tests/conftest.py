"""Shared fixtures: throwaway servers (Redis, PostgreSQL+pgvector) and gateway helpers."""

from tests.fixtures_gateway import *  # noqa: F403
from tests.fixtures_servers import *  # noqa: F403
