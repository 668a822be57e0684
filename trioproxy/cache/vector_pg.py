"""The semantic-cache :class:`~trioproxy.cache.vector_index.VectorIndex` on PostgreSQL +
pgvector (0.8+).

One table, ``namespace`` on every row, an HNSW cosine index on ``embedding`` and the
``(namespace, entry_id)`` unique btree. Queries filter by namespace; with
``hnsw.iterative_scan = relaxed_order`` the HNSW scan keeps going until it finds rows of
that namespace instead of returning nothing, and a small namespace is answered from the
btree when the planner prefers it. The materialised CTE restores exact order.

The table is bounded: :meth:`PgVectorIndex.prune` (run every ``prune_every`` adds, and by
the caller at will) deletes expired rows, then the least recently hit rows of a namespace
it added to over ``max_per_namespace``, then rows over ``max_total`` (the least recently hit
of the oldest), each statement an index range. Bounding rows keeps the
HNSW graph (and its build/vacuum time, which grows past ~2M rows) in check.

psycopg's sync pool runs in worker threads (measured 2x the throughput of the async pool
under trio-asyncio); connections are autocommit (measured 40-60 % faster than a
transaction per block). ``last_hit`` is not indexed so that touching it is a HOT update.

**Bounded waits.** Whatever state PostgreSQL is in, no caller waits longer than its own
deadline: a worker thread cannot be cancelled, so calls *abandon* their thread when
cancelled (``abandon_on_cancel``; the thread keeps its limiter slot until it ends), and
every thread ends within bounds of its own: ``pool_timeout_s`` for a connection from the
pool, ``connect_timeout_s`` to open one, ``statement_timeout_s`` per statement.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
import trio
from pgvector.psycopg import register_vector  # type: ignore[import-untyped]
from psycopg import sql
from psycopg_pool import ConnectionPool

from trioproxy.cache.vector_index import Hit

TOUCH_INTERVAL_S = 60.0
"""A hit refreshes ``last_hit`` only when it is older than this (saves writes)."""
POOL_TIMEOUT_S = 1.0
"""Longest a call waits for a pooled connection (PostgreSQL down: the pool has none)."""
CONNECT_TIMEOUT_S = 2
"""Longest to open one connection (libpq ``connect_timeout``, whole seconds)."""
STATEMENT_TIMEOUT_S = 10.0
"""Longest one statement may run on the server before it is cancelled."""
PRUNE_EXPIRED = sql.SQL("DELETE FROM {t} WHERE expires_at <= %s")
PRUNE_NAMESPACE = sql.SQL(
    "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE namespace = %s"
    " ORDER BY last_hit DESC OFFSET %s)"
)
PRUNE_TOTAL = sql.SQL(
    "DELETE FROM {t} WHERE id IN (SELECT id FROM (SELECT id, last_hit"
    " FROM {t} ORDER BY id LIMIT %s) oldest ORDER BY last_hit LIMIT %s)"
)
"""The prune's deletes (:meth:`PgVectorIndex.prune`): each an index range."""
TOTAL_SAMPLE = 10
"""Over ``max_total``, the least recently hit of this many times the excess oldest rows go
(an approximate LRU, as Redis samples: an exact one sorts the whole table)."""
MAX_TOTAL = 1_000_000
"""Rows the table keeps unless ``storage.semantic_max_prompts`` says otherwise."""


class PgVectorIndex:
    def __init__(
        self,
        url: str,
        *,
        table: str = "semantic_cache",
        dim: int = 384,
        pool_size: int = 4,
        ef_search: int = 40,
        max_per_namespace: int = 10_000,
        max_total: int = MAX_TOTAL,
        prune_every: int = 1_000,
        pool_timeout_s: float = POOL_TIMEOUT_S,
        connect_timeout_s: int = CONNECT_TIMEOUT_S,
        statement_timeout_s: float = STATEMENT_TIMEOUT_S,
    ) -> None:
        self._url = url
        self._t = sql.Identifier(table)
        self._index = sql.Identifier(table + "_hnsw")
        self._expiry = sql.Identifier(table + "_expiry")
        self.dim = dim
        self._ef_search = ef_search
        self.max_per_namespace = max_per_namespace
        self.max_total = max_total
        self._prune_every = prune_every
        self._adds = 0
        self._touched: set[str] = set()
        """Namespaces this process added to since its last prune (only those can have grown
        past ``max_per_namespace`` through it)."""
        self._limiter = trio.CapacityLimiter(pool_size)
        self._statement_ms = max(1, round(statement_timeout_s * 1000))
        self._connect_s = connect_timeout_s
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=pool_timeout_s,
            kwargs={"autocommit": True, "connect_timeout": connect_timeout_s},
            configure=self._configure,
            open=False,
        )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        register_vector(conn)
        conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(self._ef_search)))
        conn.execute("SET hnsw.iterative_scan = relaxed_order")
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(self._statement_ms)))

    async def open(self) -> None:
        """Create the extension, table and indexes if missing, then open the pool."""
        await trio.to_thread.run_sync(self._open_sync)

    def _open_sync(self) -> None:
        with psycopg.connect(self._url, autocommit=True, connect_timeout=self._connect_s) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " id bigserial PRIMARY KEY,"
                    " namespace text NOT NULL,"
                    " entry_id text NOT NULL,"
                    " prompt text NOT NULL,"
                    " embedding vector({}) NOT NULL,"
                    " expires_at double precision NOT NULL,"
                    " last_hit double precision NOT NULL,"
                    " UNIQUE (namespace, entry_id)"
                    ") WITH (fillfactor = 80)"
                ).format(self._t, sql.Literal(self.dim))
            )
            conn.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops)"
                    " WITH (m = 16, ef_construction = 64)"
                ).format(self._index, self._t)
            )
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (expires_at)").format(
                    self._expiry, self._t
                )
            )
        self._pool.open(wait=True, timeout=30.0)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._pool.close)

    async def _run(self, fn: Any, *args: Any) -> Any:
        """``fn`` in a worker thread; a cancelled caller returns at once (the thread ends
        within the pool, connect and statement timeouts)."""
        return await trio.to_thread.run_sync(
            fn, *args, limiter=self._limiter, abandon_on_cancel=True
        )

    # --- VectorIndex ---------------------------------------------------------------------

    async def search(self, namespace: str, vec: np.ndarray, k: int = 1, *, now: float) -> list[Hit]:
        return await self._run(self._search, namespace, vec, k, now)  # type: ignore[no-any-return]

    def _search(self, namespace: str, vec: np.ndarray, k: int, now: float) -> list[Hit]:
        query = sql.SQL(
            "WITH c AS MATERIALIZED ("
            " SELECT entry_id, prompt, last_hit, embedding <=> %(v)s AS d FROM {}"
            " WHERE namespace = %(ns)s AND expires_at > %(now)s"
            " ORDER BY embedding <=> %(v)s LIMIT %(lim)s"
            ") SELECT entry_id, prompt, last_hit, d FROM c ORDER BY d LIMIT %(k)s"
        ).format(self._t)
        params = {"v": vec.astype(np.float32), "ns": namespace, "now": now, "lim": k + 4, "k": k}
        with self._pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
            if rows and now - rows[0][2] > TOUCH_INTERVAL_S:
                conn.execute(
                    sql.SQL(
                        "UPDATE {} SET last_hit = %s WHERE namespace = %s AND entry_id = %s"
                    ).format(self._t),
                    (now, namespace, rows[0][0]),
                )
        return [Hit(entry_id, 1.0 - float(d), prompt) for entry_id, prompt, _, d in rows]

    async def add(
        self,
        namespace: str,
        entry_id: str,
        vec: np.ndarray,
        prompt: str,
        *,
        expires_at: float,
        now: float,
    ) -> None:
        await self._run(self._add, namespace, entry_id, vec, prompt, expires_at, now)
        self._touched.add(namespace)
        self._adds += 1
        if self._adds % self._prune_every == 0:
            await self.prune(now=now)

    def _add(
        self,
        namespace: str,
        entry_id: str,
        vec: np.ndarray,
        prompt: str,
        expires_at: float,
        now: float,
    ) -> None:
        query = sql.SQL(
            "INSERT INTO {} (namespace, entry_id, prompt, embedding, expires_at, last_hit)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (namespace, entry_id) DO UPDATE SET prompt = EXCLUDED.prompt,"
            " embedding = EXCLUDED.embedding, expires_at = EXCLUDED.expires_at,"
            " last_hit = EXCLUDED.last_hit"
        ).format(self._t)
        with self._pool.connection() as conn:
            conn.execute(
                query, (namespace, entry_id, prompt, vec.astype(np.float32), expires_at, now)
            )

    async def delete(self, namespace: str, entry_id: str) -> bool:
        q = sql.SQL("DELETE FROM {} WHERE namespace = %s AND entry_id = %s").format(self._t)
        return bool(await self._run(self._execute, q, (namespace, entry_id)))

    async def flush_namespace(self, namespace: str) -> int:
        q = sql.SQL("DELETE FROM {} WHERE namespace = %s").format(self._t)
        return int(await self._run(self._execute, q, (namespace,)))

    async def flush_prefix(self, prefix: str) -> int:
        q = sql.SQL("DELETE FROM {} WHERE namespace LIKE %s").format(self._t)
        return int(await self._run(self._execute, q, (prefix + "%",)))

    def _execute(self, query: sql.Composed, params: tuple[Any, ...]) -> int:
        with self._pool.connection() as conn:
            return conn.execute(query, params).rowcount

    # --- bounds --------------------------------------------------------------------------

    async def prune(self, *, now: float) -> int:
        """Drop expired rows (the ``expires_at`` index range), then the least recently hit
        rows of each namespace this process added to over ``max_per_namespace`` (that
        namespace's rows, by the unique index), then, over ``max_total``, the least recently
        hit among the oldest :data:`TOTAL_SAMPLE` times the excess (by id: ``last_hit`` is
        not indexed). No delete reads the whole table: at 1M rows of ~1.7 KB each, the window
        function and the ``ORDER BY last_hit`` over all rows were scans of ~1.7 GB every
        ``prune_every`` adds, on a connection the lookups share. The ``count(*)`` for the
        total bound still counts every row (an index-only scan at best)."""
        touched, self._touched = self._touched, set()
        try:
            return int(await self._run(self._prune, now, sorted(touched)))
        except BaseException:  # not pruned: the next prune looks at them again
            self._touched |= touched
            raise

    def _prune(self, now: float, touched: list[str]) -> int:
        t = self._t
        dropped = 0
        with self._pool.connection() as conn:
            dropped += conn.execute(PRUNE_EXPIRED.format(t=t), (now,)).rowcount
            for namespace in touched:
                dropped += conn.execute(
                    PRUNE_NAMESPACE.format(t=t), (namespace, self.max_per_namespace)
                ).rowcount
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t)).fetchone()
            excess = (row[0] if row else 0) - self.max_total
            if excess > 0:
                dropped += conn.execute(
                    PRUNE_TOTAL.format(t=t), (excess * TOTAL_SAMPLE, excess)
                ).rowcount
        return dropped

    async def count(self) -> int:
        q = sql.SQL("SELECT count(*) FROM {}").format(self._t)
        return int(await self._run(self._scalar, q))

    def _scalar(self, query: sql.Composed) -> Any:
        with self._pool.connection() as conn:
            row = conn.execute(query).fetchone()
        return row[0] if row else None


__all__ = ["MAX_TOTAL", "TOTAL_SAMPLE", "TOUCH_INTERVAL_S", "PgVectorIndex"]
