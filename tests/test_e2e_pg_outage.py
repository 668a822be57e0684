"""PostgreSQL down at start-up: the gateway starts, semantic lookups are misses, the
ledger spools; once PostgreSQL is back the semantic cache answers and the ledger fills."""

from __future__ import annotations

import contextlib

import httpx
import psycopg
import trio

from tests.chat_client import chat_body, post_chat
from tests.fixtures_gateway import start_gateway, start_simulator
from tests.fixtures_servers import PgServer
from tests.settings_factory import KEY
from trioproxy.config import hash_key, parse_settings
from trioproxy.ledger.service import LedgerService


async def ask(url: str, content: str) -> httpx.Response:
    return await post_chat(url, KEY, chat_body(content, model="r", temperature=0))


async def test_gateway_starts_without_postgres_and_recovers(
    nursery: trio.Nursery,
    pg_server: PgServer,
    pg_url: str,
    tmp_path: object,
) -> None:
    sim = await start_simulator(nursery)
    settings = parse_settings(
        {
            "storage": {"state_dir": str(tmp_path), "database_url": pg_url},
            "providers": {"p": {"kind": "openai", "base_url": sim.url, "api_key_env": "K"}},
            "models": {"m": {"provider": "p", "input_per_mtok": 1, "output_per_mtok": 1}},
            "routes": {
                "r": {
                    "chains": {"default": [{"model": "m"}]},
                    "cache": {"semantic_ttl_s": 600, "semantic_threshold": 0.9},
                }
            },
            "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t1", "user": "u1"}],
        },
        env={"K": "x"},
    )
    await trio.to_thread.run_sync(pg_server.stop)
    try:
        ledger = LedgerService(settings.storage)
        g = await start_gateway(nursery, settings, sink=ledger, services=[ledger.run])  # type: ignore[arg-type]
        r = await ask(g.url, "How do I reset my password?")
        assert r.status_code == 200 and r.headers["x-trioproxy-cache"] == "miss"
    finally:
        await trio.to_thread.run_sync(pg_server.start)
    with trio.fail_after(30):  # the index opens by itself; then a paraphrase hits
        while True:
            await ask(g.url, "How do I reset my password?")
            await trio.sleep(0.3)
            if (await ask(g.url, "How can I reset my password?")).headers[
                "x-trioproxy-cache"
            ] == "semantic":
                break
    with trio.fail_after(30):  # and the spooled ledger records reach PostgreSQL
        while True:
            n = 0  # the ledger makes its tables with its first batch after the outage
            with (
                psycopg.connect(pg_url, autocommit=True) as conn,
                contextlib.suppress(psycopg.errors.UndefinedTable),
            ):
                row = conn.execute("SELECT count(*) FROM ledger_raw WHERE kind = 'request'")
                n = (row.fetchone() or (0,))[0]
            if n >= 2:
                break
            await trio.sleep(0.5)
