"""SIGKILL of the gateway under load loses no ledger record: after a restart, the ledger holds
one attempt row per upstream call the simulator saw, and one request row per request."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import orjson
import trio

from tests.fixtures_gateway import start_simulator
from tests.proc import GatewayProcess
from tests.rawhttp import RawResponse, post
from tests.test_e2e_processes import AUTH, MSGS, config
from trioproxy.ledger.factory import SQLITE_NAME
from trioproxy.ledger.journal import JOURNAL_DIR
from trioproxy.simulator.faults import Fault

QUICK, STREAMS = 400, 150


def budget_state(state_dir: Path) -> tuple[int, int]:
    """Open reservations in the embedded budget store, and the teams' spend by day."""
    conn = sqlite3.connect(str(state_dir / "budgets.sqlite3"))
    try:
        ((held,),) = conn.execute("SELECT COUNT(*) FROM reservations WHERE closed = 0")
        ((spent,),) = conn.execute(
            "SELECT COALESCE(SUM(total), 0) FROM buckets WHERE bucket LIKE 'team:%:day:%'"
        )
    finally:
        conn.close()
    return held, spent


def ledger_counts(state_dir: Path) -> dict[str, tuple[int, int]]:
    """kind -> (rows, distinct request ids)."""
    conn = sqlite3.connect(str(state_dir / SQLITE_NAME))
    try:
        rows = conn.execute(
            "SELECT kind, count(*), count(DISTINCT request_id) FROM ledger_raw GROUP BY kind"
        ).fetchall()
    finally:
        conn.close()
    return {kind: (n, distinct) for kind, n, distinct in rows}


def journaled_progress(state_dir: Path) -> dict[str, int]:
    """request id -> the output tokens of its latest intent that bills output (a running
    stream's progress, pipeline/progress.py), read from the live journal."""
    out: dict[str, int] = {}
    for path in sorted((state_dir / JOURNAL_DIR).glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line being written
            if data.get("_intent") and data["output_tokens"] > 0:
                out[data["request_id"]] = max(out.get(data["request_id"], 0), data["output_tokens"])
    return out


async def test_sigkill_under_load_then_restart_records_every_upstream_call(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    quick = await start_simulator(nursery, Fault(tokens=5))
    slow = await start_simulator(nursery, Fault(tokens=2000, chunk_ms=20))  # ~40 s: killed mid-way
    cfg = config({"quick": quick.url, "slow": slow.url}, tmp_path)
    gw = GatewayProcess(cfg, tmp_path, {"SIMKEY": "x"})
    await gw.start()
    answers: dict[str, list[RawResponse]] = {"quick": [], "slow": []}
    try:

        async def one(route: str, stream: bool) -> None:
            body = {"model": route, "messages": MSGS, "stream": stream}
            answers[route].append(await post(gw.url, "/v1/chat/completions", body, AUTH))

        async def quick_load() -> None:
            limit = trio.CapacityLimiter(50)

            async def limited() -> None:
                async with limit:
                    await one("quick", False)

            async with trio.open_nursery() as n:
                for _ in range(QUICK):
                    n.start_soon(limited)

        async with trio.open_nursery() as clients:
            clients.start_soon(quick_load)
            for _ in range(STREAMS):
                clients.start_soon(one, "slow", True)
            with trio.fail_after(60):  # every quick call answered, every stream upstream
                while len(answers["quick"]) < QUICK or slow.sim.stats.requests < STREAMS:
                    await trio.sleep(0.01)
            with trio.fail_after(60):  # every stream's progress journaled at least once
                while len(progress := journaled_progress(tmp_path)) < STREAMS:
                    await trio.sleep(0.05)
            gw.signal(signal.SIGKILL, group=True)
            assert await gw.wait() == -signal.SIGKILL
    finally:
        gw.kill()
    calls = quick.sim.stats.requests + slow.sim.stats.requests
    assert calls == QUICK + STREAMS
    for r in answers["quick"]:  # each one a whole answer, before the kill
        assert r.status == 200 and r.complete, r
        assert orjson.loads(r.body)["choices"][0]["message"]["content"]
    assert len(answers["slow"]) == STREAMS
    for r in answers["slow"]:  # each one cut by the kill (before its first event, or after)
        assert not r.complete and r.status in (0, 200), r
    assert any((tmp_path / JOURNAL_DIR).glob("*.jsonl"))  # the streams' intents, at least

    again = GatewayProcess(cfg, tmp_path, {"SIMKEY": "x"})
    await again.start()  # start-up recovers the dead process's journal
    try:
        with trio.fail_after(30):
            while ledger_counts(tmp_path).get("attempt", (0, 0))[0] < calls:
                await trio.sleep(0.05)
        with trio.fail_after(30):  # the dead process's reservations, settled at its records
            while budget_state(tmp_path)[0]:
                await trio.sleep(0.05)
        again.signal(signal.SIGTERM)
        assert await again.wait() == 0
    finally:
        again.kill()
    counts = ledger_counts(tmp_path)
    assert counts["attempt"] == (calls, calls), (counts, calls)
    assert counts["request"] == (calls, calls), (counts, calls)
    conn = sqlite3.connect(str(tmp_path / SQLITE_NAME))
    try:
        outcomes = dict(
            conn.execute("SELECT request_id, outcome FROM ledger_raw WHERE kind = 'request'")
        )
    finally:
        conn.close()
    for r in answers["slow"]:  # recovered from the journal: interrupted, billed the prompt
        if r.status:
            assert outcomes[r.headers["x-request-id"]] == "interrupted"
    # and the output it had streamed by its last progress update (it was billed 0 output)
    conn = sqlite3.connect(str(tmp_path / SQLITE_NAME))
    try:
        streamed = dict(
            conn.execute("SELECT request_id, output_tokens FROM ledger_raw WHERE kind = 'attempt'")
        )
        costs = {rid: (cost, tokens) for rid, cost, tokens in conn.execute(
            "SELECT request_id, cost_micros, input_tokens + output_tokens FROM ledger_raw "
            "WHERE kind = 'attempt'"
        )}  # fmt: skip
    finally:
        conn.close()
    assert len(progress) == STREAMS
    for rid, seen in progress.items():
        assert streamed[rid] >= seen > 0, (rid, streamed[rid], seen)
        assert streamed[rid] <= 2000
    for rid in progress:  # the output is billed: $1,000 per 1M tokens each way
        assert costs[rid] == (1000 * costs[rid][1], costs[rid][1]), costs[rid]
    # a quick call whose answer went out is recorded; it is "interrupted" only if the kill
    # fell between its last byte and the journal append of its final records
    quick_outcomes = [outcomes[r.headers["x-request-id"]] for r in answers["quick"]]
    assert set(quick_outcomes) <= {"served", "interrupted"}
    interrupted = list(outcomes.values()).count("interrupted")
    assert interrupted == STREAMS + quick_outcomes.count("interrupted")
    assert list((tmp_path / JOURNAL_DIR).glob("*.jsonl")) == []
    # the team's spend in the budget store is the ledger's, not the killed streams' worst case
    conn = sqlite3.connect(str(tmp_path / SQLITE_NAME))
    try:
        ((billed,),) = conn.execute(
            "SELECT SUM(cost_micros) FROM ledger_raw WHERE kind = 'request'"
        )
    finally:
        conn.close()
    assert budget_state(tmp_path) == (0, billed)
    print(f"\nSIGKILL: {calls} upstream calls, {counts['attempt'][0]} attempt records, "
          f"{counts['request'][0]} request records ({interrupted} interrupted)")  # fmt: skip
