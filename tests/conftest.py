"""Shared fixtures: throwaway servers (Redis, PostgreSQL+pgvector) and gateway helpers."""

import pytest

from tests.fixtures_gateway import *  # noqa: F403
from tests.fixtures_servers import *  # noqa: F403
from trioproxy.cache.model_file import quantized_model


@pytest.fixture(scope="session", autouse=True)
def embedding_model_built_once() -> None:
    """The quantized embedding model, built once into the user's cache: every gateway a test
    starts has a state directory of its own, and its embedder takes the model from there
    (``cache/model_file.py``) instead of building it again (~2 s each, more on a busy box)."""
    quantized_model()
