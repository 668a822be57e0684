from __future__ import annotations

import numpy as np
import psycopg
import pytest
from psycopg import sql

from trioproxy.cache.flat_index import FLAT_MAX, FlatIndex
from trioproxy.cache.vector_index import HnswCore, HnswIndex, VectorIndex
from trioproxy.cache.vector_pg import PRUNE_EXPIRED, PRUNE_NAMESPACE, PRUNE_TOTAL, PgVectorIndex

DIM = 384


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, seed: int, noise: float = 0.02) -> np.ndarray:
    w = v + noise * np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return (w / np.linalg.norm(w)).astype(np.float32)


async def check_contract(index: VectorIndex) -> None:
    """What every VectorIndex must do: namespaces, top-1, TTL, delete, flush."""
    a, b = unit(1), unit(2)
    await index.add("ns1", "e-a", a, "prompt a", expires_at=100.0, now=0.0)
    await index.add("ns1", "e-b", b, "prompt b", expires_at=50.0, now=0.0)
    await index.add("ns2", "e-a2", a, "other tenant", expires_at=100.0, now=0.0)

    q = near(a, 7)
    hits = await index.search("ns1", q, 1, now=1.0)
    assert [(h.entry_id, h.prompt) for h in hits] == [("e-a", "prompt a")]
    assert abs(hits[0].similarity - float(a @ q)) < 1e-4
    assert (await index.search("ns2", b, 1, now=1.0))[0].entry_id == "e-a2"  # never ns1's b
    assert await index.search("ns3", a, 1, now=1.0) == []

    # b expires at 50: afterwards a query for b gets a (the only live entry), never b
    assert (await index.search("ns1", b, 1, now=49.0))[0].entry_id == "e-b"
    assert [h.entry_id for h in await index.search("ns1", b, 1, now=50.0)] == ["e-a"]

    # re-adding an entry id replaces it
    await index.add("ns1", "e-a", b, "prompt a v2", expires_at=100.0, now=51.0)
    hits = await index.search("ns1", b, 1, now=52.0)
    assert (hits[0].entry_id, hits[0].prompt) == ("e-a", "prompt a v2")

    assert await index.delete("ns1", "e-a") and not await index.delete("ns1", "e-a")
    assert await index.search("ns1", a, 1, now=53.0) == []
    assert await index.flush_namespace("ns2") == 1
    assert await index.search("ns2", a, 1, now=53.0) == []


async def test_hnsw_contract() -> None:
    await check_contract(HnswIndex())


async def test_hnsw_bounds_evict_least_recently_hit() -> None:
    core = HnswCore(max_per_namespace=3, max_total=5)
    idx = HnswIndex(core)
    vecs = {i: unit(100 + i) for i in range(10)}
    for i in range(3):
        await idx.add("n1", f"e{i}", vecs[i], f"p{i}", expires_at=1e9, now=float(i))
    assert (await idx.search("n1", vecs[0], 1, now=5.0))[0].entry_id == "e0"  # touch e0
    await idx.add("n1", "e3", vecs[3], "p3", expires_at=1e9, now=6.0)  # over 3: e1 goes
    live = {h.entry_id for h in await idx.search("n1", vecs[0], 3, now=7.0)}
    assert live == {"e0", "e2", "e3"}
    for i in range(4, 7):  # total bound 5: the least recently hit of all namespaces go
        await idx.add("n2", f"e{i}", vecs[i], f"p{i}", expires_at=1e9, now=float(10 + i))
    stats = core.statistics()
    assert (stats.entries, stats.namespaces) == (5, 2)
    assert stats.evictions == 2
    assert {h.entry_id for h in await idx.search("n1", vecs[0], 3, now=20.0)} == {"e0", "e3"}


async def test_hnsw_grows_and_reuses_deleted_slots() -> None:
    idx = HnswIndex(HnswCore(max_per_namespace=1000))
    vecs = [unit(1000 + i) for i in range(300)]  # past the initial capacity of 64
    await idx.add_many([("n", f"e{i}", v, f"p{i}", 100.0) for i, v in enumerate(vecs)])
    await idx.delete("n", "e5")
    assert idx.core.statistics().entries == 299
    for i in (1, 150, 299):
        assert (await idx.search("n", vecs[i], 1, now=21.0))[0].entry_id == f"e{i}"
    assert (await idx.search("n", vecs[5], 1, now=21.0))[0].entry_id != "e5"
    await idx.add("n", "new", vecs[5], "p", expires_at=100.0, now=21.0)  # reuses a slot
    assert (await idx.search("n", vecs[5], 1, now=22.0))[0].entry_id == "new"


@pytest.mark.parametrize(("per_namespace", "total"), [(1000, 1000), (30, 1000), (1000, 100)])
def test_add_many_leaves_the_index_as_adding_one_by_one(per_namespace: int, total: int) -> None:
    """A worker's start adds the cache file's rows in batches (one hnswlib call per
    namespace); the entries, their recency order, the bounds' evictions and every entry's
    top-1 are those of adding them one by one, in the same order, also when a namespace's
    run or the batch passes a bound (then it is added one by one)."""
    items = [(f"n{i % 3}", f"e{i}", unit(3000 + i), f"p{i}", 100.0 + i) for i in range(150)]
    items.append(("n0", "e3", unit(9999), "p3 again", 500.0))  # an entry stored again
    one, many = (HnswCore(max_per_namespace=per_namespace, max_total=total) for _ in range(2))
    for item in items:
        one.add(*item)
    many.add_many(items)
    assert list(many._lru) == list(one._lru)
    assert many.statistics() == one.statistics()
    for ns, space in one._spaces.items():
        assert many._spaces[ns].by_entry.keys() == space.by_entry.keys()
        for entry_id in space.by_entry:
            vec = unit(9999) if entry_id == "e3" else unit(3000 + int(entry_id[1:]))
            assert many.search(ns, vec, 1, now=0.0)[0].entry_id == entry_id
            assert one.search(ns, vec, 1, now=0.0)[0].entry_id == entry_id


def test_the_flat_index_answers_as_an_exact_search() -> None:
    """Top-k by cosine over the live rows, distances 1 - cos of the normalized vectors (as
    hnswlib's cosine space), labels the caller's, a deleted label's row reused."""
    flat = FlatIndex(DIM, 8)
    vecs = {label: unit(500 + label) * 3.0 for label in range(20, 28)}  # unnormalized
    flat.add_items(np.stack(list(vecs.values())), list(vecs))
    with pytest.raises(RuntimeError):
        flat.add_items(unit(1).reshape(1, -1), [99])  # full: the core resizes first
    q = near(vecs[23] / 3.0, 5)
    labels, dists = flat.knn_query(q, k=3)
    units = {lb: v / np.linalg.norm(v) for lb, v in vecs.items()}
    want = sorted(units, key=lambda lb: -float(units[lb] @ q))[:3]
    assert labels[0].tolist() == want and want[0] == 23
    assert np.allclose(dists[0], [1.0 - float(units[lb] @ q) for lb in want], atol=1e-5)
    flat.mark_deleted(23)
    assert 23 not in flat.knn_query(q, k=7)[0][0].tolist()
    with pytest.raises(RuntimeError):
        flat.knn_query(q, k=8)  # 7 live
    flat.add_items(unit(7).reshape(1, -1), [40])  # takes 23's row
    assert flat.knn_query(unit(7), k=1)[0][0].tolist() == [40]
    flat.resize_index(16)
    flat.add_items(np.stack([unit(600 + i) for i in range(8)]), list(range(50, 58)))
    assert flat.knn_query(unit(603), k=1)[0][0].tolist() == [53]


def test_small_namespaces_are_searched_flat_and_a_large_one_moves_to_hnswlib() -> None:
    """An hnswlib index costs 2.5 MB however small: a namespace gets one only past FLAT_MAX
    entries, its labels and answers unchanged by the move."""
    core = HnswCore(max_per_namespace=FLAT_MAX * 2, max_total=100_000)
    for ns in range(50):  # fifty conversations of two prompts: no hnswlib index at all
        core.add_many([(f"c{ns}", f"e{i}", unit(ns * 10 + i), "p", 1e9) for i in range(2)])
    assert all(isinstance(sp.index, FlatIndex) for sp in core._spaces.values())
    vecs = [unit(20_000 + i) for i in range(FLAT_MAX + 200)]
    for i, v in enumerate(vecs[:FLAT_MAX]):
        core.add("big", f"e{i}", v, f"p{i}", 1e9)
    assert isinstance(core._spaces["big"].index, FlatIndex)
    assert core.delete("big", "e7")
    before = {i: core._spaces["big"].by_entry[f"e{i}"] for i in (0, 500, FLAT_MAX - 1)}
    for i, v in enumerate(vecs[FLAT_MAX:], FLAT_MAX):
        core.add("big", f"e{i}", v, f"p{i}", 1e9)
    space = core._spaces["big"]
    assert not isinstance(space.index, FlatIndex)  # hnswlib now
    assert {i: space.by_entry[f"e{i}"] for i in before} == before
    for i in (0, 500, FLAT_MAX - 1, FLAT_MAX, FLAT_MAX + 199):
        (hit,) = core.search("big", vecs[i], 1, now=0.0)
        assert hit.entry_id == f"e{i}" and hit.similarity > 0.999
    assert core.search("big", vecs[7], 1, now=0.0)[0].entry_id != "e7"
    assert core.statistics().entries == 100 + FLAT_MAX + 199


@pytest.fixture
async def pg_index(pg_url: str) -> PgVectorIndex:
    idx = PgVectorIndex(pg_url, max_per_namespace=3, max_total=5, prune_every=10_000)
    await idx.open()
    return idx


async def test_pgvector_contract(pg_index: PgVectorIndex) -> None:
    try:
        await check_contract(pg_index)
    finally:
        await pg_index.aclose()


async def test_pgvector_small_namespace_found_among_many_rows(pg_index: PgVectorIndex) -> None:
    """The namespace filter must not starve the HNSW scan (iterative scan / btree plan)."""
    try:
        for i in range(400):
            await pg_index.add("big", f"b{i}", unit(5000 + i), "p", expires_at=1e9, now=0.0)
        target = unit(1)
        await pg_index.add("small", "only", target, "mine", expires_at=1e9, now=0.0)
        hits = await pg_index.search("small", near(unit(5003), 1), 1, now=1.0)
        assert [h.entry_id for h in hits] == ["only"]
    finally:
        await pg_index.aclose()


async def test_pgvector_prune_bounds(pg_index: PgVectorIndex) -> None:
    try:
        for i in range(4):  # 4 in n1 (bound 3), last_hit = now at insert
            await pg_index.add("n1", f"a{i}", unit(i), "p", expires_at=1e9, now=float(i))
        for i in range(3):
            await pg_index.add("n2", f"b{i}", unit(10 + i), "p", expires_at=1e9, now=float(10 + i))
        await pg_index.add("n2", "gone", unit(20), "p", expires_at=5.0, now=0.0)
        assert await pg_index.count() == 8
        dropped = await pg_index.prune(now=100.0)
        # expired "gone", then a0 (n1 over 3), then the oldest of the rest (a1) for total 5
        assert dropped == 3 and await pg_index.count() == 5
        n1 = {h.entry_id for h in await pg_index.search("n1", unit(0), 3, now=100.0)}
        assert n1 == {"a2", "a3"}
    finally:
        await pg_index.aclose()


async def test_pgvector_prune_statements_read_index_ranges(pg_index: PgVectorIndex) -> None:
    """Every ``prune_every`` adds, on a connection the lookups share: no delete of the prune
    may read the whole table (1M rows of ~1.7 KB; its count(*) is not checked here). With
    sequential scans priced out, the planner still picks one only where no index serves."""
    try:
        with psycopg.connect(pg_index._url, autocommit=True) as conn:
            conn.execute("SET enable_seqscan = off")
            t = sql.Identifier("semantic_cache")
            for stmt, params in [
                (PRUNE_EXPIRED, (100.0,)),
                (PRUNE_NAMESPACE, ("n1", 3)),
                (PRUNE_TOTAL, (10, 1)),
            ]:
                query = sql.SQL("EXPLAIN ") + stmt.format(t=t)
                plan = " / ".join(r[0] for r in conn.execute(query, params))
                assert "Seq Scan" not in plan, plan
    finally:
        await pg_index.aclose()
