"""Run-time API keys (the dashboard's admin store) as the key ring resolves them: the store's
answer "no such key" is a 401, but a store that fails or does not answer is a 503 the caller
may retry, never a 401 that tells it its key is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from trioproxy.admin.keys import StoredKey
from trioproxy.admin.store import AdminStore
from trioproxy.config import hash_key
from trioproxy.edge.auth import KeyRing
from trioproxy.errors import CallerError, ErrorKind, PolicyError

KEY = "tp-made-in-the-dashboard-0123456789"
HEADERS = {b"authorization": f"Bearer {KEY}".encode()}


async def test_a_stored_key_resolves_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    store = AdminStore.open_sync(tmp_path)
    try:
        ring = KeyRing({}, store)
        with pytest.raises(CallerError) as refused:
            await ring.resolve(HEADERS)
        assert refused.value.kind is ErrorKind.INVALID_API_KEY and refused.value.status == 401
        assert await store.add_key(StoredKey(hash_key(KEY), "bot", "ops", "ann"))
        found = await ring.resolve(HEADERS)
        assert found.name == "bot" and found.team == "ops"
    finally:
        store.close()


async def test_a_failing_key_store_is_a_503_not_a_401(tmp_path: Path) -> None:
    store = AdminStore.open_sync(tmp_path)
    assert await store.add_key(StoredKey(hash_key(KEY), "bot", "ops", "ann"))
    store.close()  # every call now fails (as with its database down): StoreError
    with pytest.raises(PolicyError) as refused:
        await KeyRing({}, store).resolve(HEADERS)
    assert refused.value.kind is ErrorKind.OVERLOADED and refused.value.status == 503
    assert refused.value.retry_after is not None
