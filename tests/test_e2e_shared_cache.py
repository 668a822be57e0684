"""The embedded response cache under ``trioproxy serve --workers 2`` without Redis: one SQLite
file in ``state_dir`` that the host's workers share and that outlives a restart. Real
processes; each request on a new connection (the kernel spreads those over both workers);
which worker answered is read from the access log (its ``pid``). Observed state with
deadlines, no fixed sleeps."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio

from tests.fixtures_gateway import start_simulator
from tests.proc import GatewayProcess, workers_of
from tests.rawhttp import RawResponse, post
from tests.settings_factory import KEY
from tests.test_e2e_processes import config

AUTH = {"authorization": f"Bearer {KEY}"}
DEADLINE_S = 30.0
"""For what a loaded 2-core box may take (a store, a worker's poll of the shared rows)."""
DEBUG = ("--log-level", "debug")
"""A worker logs (debug) when it reads the rows another worker added to its index."""


PROMPT, PARAPHRASE = "How do I reset my password?", "How can I reset my password?"


def cached_config(url: str, state_dir: Path, **cache: Any) -> dict[str, Any]:
    cfg = config({"p": url}, state_dir)
    cfg["routes.p.cache"] = {"exact_ttl_s": 600, **cache}
    cfg["api_keys"] = [{**cfg["api_keys"][0], "admin": True}]
    return cfg


def semantic_config(url: str, state_dir: Path) -> dict[str, Any]:
    return cached_config(url, state_dir, semantic_ttl_s=600, semantic_threshold=0.9)


def rows(state_dir: Path, table: str) -> int:
    path = state_dir / "cache.sqlite3"
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.OperationalError:  # not made yet
        return 0
    finally:
        db.close()


async def wait_rows(state_dir: Path, table: str, n: int = 1) -> None:
    with trio.fail_after(DEADLINE_S):
        while rows(state_dir, table) < n:
            await trio.sleep(0.05)


def log_lines(gw: GatewayProcess) -> list[dict[str, Any]]:
    """The log's JSON lines, whole ones only: a worker may be writing the last one as it is
    read (a CI run under two CPU burners read a line cut at its 190th byte)."""
    out = []
    text = gw.log.read_text()
    for line in text[: text.rfind("\n") + 1].splitlines():
        if line.startswith("{"):
            out.append(orjson.loads(line))
    return out


async def wait_logged(gw: GatewayProcess, text: str, pids: set[int]) -> None:
    """Until each of ``pids`` has logged a line containing ``text``."""
    with trio.fail_after(DEADLINE_S):
        while not pids <= {r["pid"] for r in log_lines(gw) if text in r["msg"]}:
            await trio.sleep(0.05)


def store_errors(metrics: httpx.Response) -> float:
    assert metrics.status_code == 200, metrics.text
    for line in metrics.text.splitlines():
        if line.startswith("trioproxy_cache_store_errors_total "):
            return float(line.split()[1])
    return 0.0


async def wait_store_errors(gw: GatewayProcess, n: int) -> None:
    """Until /metrics counts ``n`` failed cache-file calls (workers sample every second)."""
    async with httpx.AsyncClient(timeout=30) as c:
        with trio.fail_after(DEADLINE_S):
            while store_errors(await c.get(gw.admin_url + "/metrics", headers=AUTH)) < n:
                await trio.sleep(0.1)


async def first_server(gw: GatewayProcess) -> int:
    """The worker that answered the first request (its access line comes after the answer)."""
    with trio.fail_after(DEADLINE_S):
        while not served(gw):
            await trio.sleep(0.05)
    return served(gw)[0][0]


def worker_pids(gw: GatewayProcess) -> set[int]:
    assert gw.proc is not None
    pids = workers_of(gw.proc.pid)
    assert len(pids) == 2
    return pids


async def ask(gw: GatewayProcess, content: str) -> RawResponse:
    body = {"model": "p", "temperature": 0, "messages": [{"role": "user", "content": content}]}
    r = await post(gw.url, "/v1/chat/completions", body, AUTH)
    assert r.status == 200, r.body
    return r


def two_workers(cfg: dict[str, Any], state_dir: Path, *args: str) -> GatewayProcess:
    """``serve --workers 2`` on ``cfg`` (``async with``: started, then killed)."""
    return GatewayProcess(cfg, state_dir, {"SIMKEY": "x"}, workers=2, args=args)


def served(gw: GatewayProcess) -> list[tuple[int, str]]:
    """(worker pid, cache result) of every request so far, from the access log."""
    return [(int(r["pid"]), str(r["cache"])) for r in log_lines(gw)
            if r["logger"] == "trioproxy.access"]  # fmt: skip


async def hits_on_every_worker(gw: GatewayProcess, content: str, kind: str = "exact") -> None:
    """Ask ``content`` on fresh connections until each worker has answered it from the cache
    (``kind``) at least twice; every answer is a hit."""
    pids = worker_pids(gw)
    start = len(served(gw))
    with trio.fail_after(DEADLINE_S):
        while True:
            r = await ask(gw, content)
            assert r.headers["x-trioproxy-cache"] == kind, served(gw)[start:]
            hits = Counter(pid for pid, cache in served(gw)[start:] if cache == kind)
            if all(hits[p] >= 2 for p in pids):
                return


async def test_an_answer_stored_by_one_worker_is_a_hit_on_both(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    sim = await start_simulator(nursery)
    async with two_workers(cached_config(sim.url, tmp_path), tmp_path) as gw:
        assert (await ask(gw, "What is a nursery?")).headers["x-trioproxy-cache"] == "miss"
        await wait_rows(tmp_path, "entries")
        await hits_on_every_worker(gw, "What is a nursery?")
        assert sim.sim.stats.requests == 1


async def test_a_near_duplicate_stored_on_one_worker_hits_on_the_other(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    sim = await start_simulator(nursery)
    cfg = semantic_config(sim.url, tmp_path)
    async with two_workers(cfg, tmp_path, *DEBUG) as gw:
        assert (await ask(gw, PROMPT)).headers["x-trioproxy-cache"] == "miss"
        writer = await first_server(gw)
        await wait_rows(tmp_path, "vectors")
        await wait_logged(gw, "entries read from cache.sqlite3", worker_pids(gw) - {writer})
        await hits_on_every_worker(gw, PARAPHRASE, "semantic")
        assert sim.sim.stats.requests == 1


async def test_a_restart_keeps_both_caches(nursery: trio.Nursery, tmp_path: Path) -> None:
    sim = await start_simulator(nursery)
    cfg = semantic_config(sim.url, tmp_path)
    gw = two_workers(cfg, tmp_path)
    await gw.start()
    try:
        await ask(gw, PROMPT)
        await wait_rows(tmp_path, "entries", 2)  # the exact entry and the semantic record
        await wait_rows(tmp_path, "vectors")
    finally:
        gw.signal()
        assert await gw.wait() == 0
    async with two_workers(cfg, tmp_path) as again:
        await wait_logged(again, "semantic index built from cache.sqlite3: 1 entries",
                          worker_pids(again))  # fmt: skip
        await hits_on_every_worker(again, PROMPT)
        await hits_on_every_worker(again, PARAPHRASE, "semantic")
        assert sim.sim.stats.requests == 1


async def test_an_admin_flush_empties_every_worker(nursery: trio.Nursery, tmp_path: Path) -> None:
    sim = await start_simulator(nursery)
    cfg = semantic_config(sim.url, tmp_path)
    async with two_workers(cfg, tmp_path, *DEBUG) as gw:
        await ask(gw, PROMPT)
        writer = await first_server(gw)
        await wait_rows(tmp_path, "vectors")
        await wait_logged(gw, "entries read from cache.sqlite3", worker_pids(gw) - {writer})
        await hits_on_every_worker(gw, PARAPHRASE, "semantic")
        stored = (await ask(gw, PARAPHRASE)).headers["x-trioproxy-cache-entry"]
        async with httpx.AsyncClient(timeout=30) as c:
            r = await c.post(gw.admin_url + "/admin/api/cache/flush",
                             json={"team": "t1", "route": "p"}, headers=AUTH)  # fmt: skip
        assert r.status_code == 200, r.text
        pids = worker_pids(gw)
        await wait_logged(gw, "cache flush", pids)
        flushes = [r["msg"] for r in log_lines(gw) if "cache flush" in r["msg"]]
        assert len(flushes) == 2 and all("1 semantic entries dropped" in m for m in flushes)
        assert rows(tmp_path, "entries") == rows(tmp_path, "vectors") == 0
        # each worker answers the paraphrase again: never from the flushed entry (a
        # worker's first miss stores it anew, which the other may then serve)
        start = len(served(gw))
        with trio.fail_after(DEADLINE_S):
            while {pid for pid, _ in served(gw)[start:]} != pids:
                r = await ask(gw, PARAPHRASE)
                assert r.headers.get("x-trioproxy-cache-entry") != stored
        assert served(gw)[start][1] == "miss"


TTL_S = 8
"""Long enough for one hit after the store on a loaded box; the test waits it out."""


async def test_an_entry_expires_at_its_ttl(nursery: trio.Nursery, tmp_path: Path) -> None:
    sim = await start_simulator(nursery)
    async with two_workers(cached_config(sim.url, tmp_path, exact_ttl_s=TTL_S), tmp_path) as gw:
        await ask(gw, "Short-lived?")
        await wait_rows(tmp_path, "entries")
        db = sqlite3.connect(tmp_path / "cache.sqlite3")
        (expires_at,) = db.execute("SELECT expires_at FROM entries").fetchone()
        db.close()
        assert (await ask(gw, "Short-lived?")).headers["x-trioproxy-cache"] == "exact"
        with trio.fail_after(DEADLINE_S):
            while time.time() <= expires_at:  # the entry's own deadline, on the wall clock
                await trio.sleep(0.05)
        assert (await ask(gw, "Short-lived?")).headers["x-trioproxy-cache"] == "miss"
        assert sim.sim.stats.requests == 2


async def test_a_corrupt_or_locked_file_is_misses_not_errors(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    sim = await start_simulator(nursery)
    (tmp_path / "cache.sqlite3").write_bytes(b"not a database at all " * 200)
    async with two_workers(cached_config(sim.url, tmp_path), tmp_path) as gw:
        for i in range(10):  # new prompts (a put in flight is a hit: the same one would be)
            assert (await ask(gw, f"Answered {i}?")).headers["x-trioproxy-cache"] == "miss"
        await wait_store_errors(gw, 10)
    (tmp_path / "cache.sqlite3").unlink()
    async with two_workers(cached_config(sim.url, tmp_path), tmp_path) as gw:
        await ask(gw, "Held file?")
        await wait_rows(tmp_path, "entries")
        holder = sqlite3.connect(tmp_path / "cache.sqlite3", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
        try:
            for i in range(10):  # new prompts: misses whose writes are skipped
                assert (await ask(gw, f"Held {i}?")).headers["x-trioproxy-cache"] == "miss"
            await wait_store_errors(gw, 10)  # skipped, counted: not waited for
            await hits_on_every_worker(gw, "Held file?")  # WAL: reads go on
        finally:
            holder.execute("ROLLBACK")
            holder.close()
