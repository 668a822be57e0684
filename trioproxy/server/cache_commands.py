"""Cache actions across the process boundary: the dashboard (control-plane process) asks,
every data-plane worker applies.

A worker's semantic index (hnswlib) lives in that worker's memory, and the control plane
loads no cache at all, so it cannot drop their entries itself. It writes the command to
the admin store (:mod:`trioproxy.admin.commands_table`, shared by the host's processes, or
every instance's with PostgreSQL); each worker polls for new commands every :data:`POLL_S`
and applies them to its own cache: the shared stores (``cache.sqlite3``, Redis, pgvector)
are emptied by the first worker (the others find nothing left there) and every worker drops
its own index's entries. The control plane
therefore answers "sent", not a count: the counts are in each worker's log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from trioproxy.admin.commands_table import CacheCommand
from trioproxy.admin.store import AdminStore, StoreError
from trioproxy.cache.keys import tenant_scope
from trioproxy.config.model import RouteConfig, Settings
from trioproxy.edge.services import Service

if TYPE_CHECKING:
    from trioproxy.pipeline.caching import ResponseCache

log = logging.getLogger(__name__)
POLL_S = 1.0
"""How often a worker looks for new cache commands (one small read of the admin store)."""


class RelayedCache:
    """The control plane's ``gateway.cache``: actions become commands for the workers; it
    holds no entries and loads no embedder or index."""

    relayed = True
    semantic = None
    exact = None
    writer = None

    def __init__(self, store: AdminStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def flush(self, team: str, route: RouteConfig) -> tuple[str, int, int | None]:
        await self.store.post_cache_command(self.clock(), "flush", team=team, route=route.name)
        return tenant_scope(team, route.cache), 0, None

    async def delete(self, entry_ref: str) -> bool:
        await self.store.post_cache_command(self.clock(), "delete", entry=entry_ref)
        return True


def applier(cache: ResponseCache, store: AdminStore, settings: Callable[[], Settings]) -> Service:
    """A worker's service: apply every cache command posted after it started, in order. A
    command the cache store cannot take now (Redis or PostgreSQL down) is tried again at
    the next poll, and the ones after it wait; one that fails otherwise (a bug) is logged
    and passed. Where it got to outlives a restart of the service (kept here, not in it)."""
    # here: the control plane imports this module (RelayedCache) and loads no cache code
    from trioproxy.pipeline.caching import store_errors

    seq: int | None = None

    async def start() -> int | None:
        """Where to start: commands posted before this worker are done."""
        try:
            return (await store.cache_commands_after(-1))[0].seq
        except (StoreError, trio.TooSlowError) as exc:
            log.warning("cache commands unreadable: %s", exc)
            return None

    async def apply(cmd: CacheCommand) -> None:
        if cmd.kind == "flush":
            route = settings().routes.get(cmd.route)
            if route is not None:
                scope, exact, semantic = await cache.flush(cmd.team, route)
                log.info("cache flush %s/%s: %d exact, %s semantic entries dropped",
                         scope, cmd.route, exact, semantic)  # fmt: skip
        elif cmd.kind == "delete":
            deleted = await cache.delete(cmd.entry)
            log.info("cache delete %s: %s", cmd.entry, "dropped" if deleted else "not here")

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal seq
        if seq is None:
            seq = await start()
        task_status.started()
        while True:
            if seq is None:
                seq = await start()
                await trio.sleep(POLL_S)
                continue
            try:
                for cmd in await store.cache_commands_after(seq):
                    try:
                        await apply(cmd)
                    except store_errors() as exc:
                        log.warning("cache command %d (%s) not applied yet, the cache store "
                                    "is down: %r", cmd.seq, cmd.kind, exc)  # fmt: skip
                        break
                    except Exception:
                        log.exception("cache command %d (%s) failed; passed", cmd.seq, cmd.kind)
                    seq = cmd.seq
            except (StoreError, trio.TooSlowError) as exc:
                log.warning("cache commands unreadable: %s", exc)
            await trio.sleep(POLL_S)

    return run


__all__ = ["POLL_S", "RelayedCache", "applier"]
