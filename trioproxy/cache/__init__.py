"""Response caching: exact and semantic.

* :mod:`.keys` (pure): exact keys, semantic namespaces, what may be shared.
* :mod:`.entry`: the stored, dialect-free completion.
* :mod:`.exact`: ``ExactCache`` (in-process LRU, Redis).
* :mod:`.embedder`: ``Embedder`` (local MiniLM ONNX, OpenAI-compatible endpoint).
* :mod:`.guard` (pure): the near-miss check applied before a semantic hit.
* :mod:`.vector_index` / :mod:`.vector_pg`: ``VectorIndex`` (hnswlib, PostgreSQL+pgvector).
* :mod:`.semantic`: ``SemanticCache``; :mod:`.writer`: the bounded write path.

Nothing is imported here, so that ``trioproxy.cache.keys`` stays cheap to import.
"""
