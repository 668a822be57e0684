"""Instructions one code path of a request executes, counted by callgrind (deterministic).

    .venv/bin/python loadtest/path_cost.py CASE [--source DIR] [--n 200 1200]

The whole-request counts of ``request_cost.py --instr`` move by a few per cent with the box's
load (group-commit batch sizes, timers per request under valgrind's slowdown), more than a
small cut changes. This runs one path alone, in a loop, under ``valgrind --tool=callgrind``
twice (``--n N1 N2`` iterations) and prints (Ir(N2) - Ir(N1)) / (N2 - N1): the same figure
on a busy or a quiet box (string hashing seeded the same in every run, ``PYTHONHASHSEED=0``:
with random seeds a dict-heavy path moved by ~2 % between runs of one commit). ``--source DIR``: a ``git archive`` snapshot of another commit.
Cases (each is once per non-stream request unless said):

* ``fetch``: ``exchange.fetch_whole`` on the in-memory transport (``common.InstantTransport``);
* ``records``: the intent record and the final records of a one-attempt request;
* ``op``: one SQLite budget store operation's bookkeeping object (two per request);
* ``http``: one ``HttpTransport`` exchange, keep-alive, against a minimal server in the
  process (its own instructions, the same for every commit, are counted too);
* ``bill``: one ``bill_for`` on a model resolved by the config loader (4 per request: the
  intent, the attempt record, the settle; the admission's worst case reads the prices too).
* ``budget``: one admission and its settle on the SQLite budget store as a worker wires them
  (``BudgetGate`` under the outage policy, a team day limit as ``request_cost.py``'s bench
  team has, the alert sink's task running and reading what the settles queue), ``--conc``
  tasks at once (default 1: every operation its own transaction and thread hop; under load
  ~45 operations share one, so the per-operation part is what a cut changes). The worker
  thread's instructions count too (callgrind counts every thread).
* ``account``: ``Endpoint.account`` after a one-attempt request: its final records to a list
  sink and the settle through ``Admission`` and the gate on the in-memory budget store (no
  thread, no SQL: the gate's and the endpoint's own work), with the alert sink attached as a
  worker has it (its task not running: what the settle queues stays queued).
* ``intake``: the intake of one request (``Intake``: the key, its slot, the body, a worker
  slot, given back) with the server's hooks as ``httpd`` offers them for a small body that
  came with its head.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ap = argparse.ArgumentParser()
ap.add_argument(
    "case", choices=["fetch", "records", "op", "http", "bill", "budget", "account", "intake"]
)
ap.add_argument("--source", type=Path, default=None)
ap.add_argument("--n", type=int, nargs=2, default=[200, 1200], metavar=("N1", "N2"))
ap.add_argument("--conc", type=int, default=1, help="budget: concurrent tasks")
ap.add_argument("--run", type=int, default=None, help=argparse.SUPPRESS)  # one count, in valgrind
args = ap.parse_args()
if args.source is not None:
    sys.path.insert(0, str(args.source))

import common  # noqa: E402
import trio  # noqa: E402

SETTINGS = {
    "providers": {"a": {"kind": "openai", "base_url": "http://127.0.0.1:9", "api_key_env": "K"}},
    "models": {"m": {"provider": "a", "input_per_mtok": 0.15, "output_per_mtok": 0.6}},
    "routes": {"r": {"chains": {"default": [{"model": "m"}]}}},
    "api_keys": [{"name": "k", "key_sha256": "0" * 64, "team": "t"}],
}


def resolved() -> Any:
    from trioproxy.config.load import parse_settings

    return parse_settings(SETTINGS, env={"K": "x"})


async def fetch(n: int) -> None:
    from trioproxy.config.model import Timeouts
    from trioproxy.providers.base import UpstreamRequest
    from trioproxy.upstream.exchange import Deadlines, fetch_whole

    transport, req = common.InstantTransport(), UpstreamRequest("/x", (), b"{}")
    for _ in range(n):
        deadlines = Deadlines(Timeouts())
        with deadlines.scope:
            await fetch_whole(transport, None, req, deadlines, frozenset(), lambda s, b: "",
                              1 << 20)  # fmt: skip


async def records(n: int) -> None:
    from trioproxy.config.model import ApiKeyConfig
    from trioproxy.core.types import Usage
    from trioproxy.dialects import DIALECTS
    from trioproxy.pipeline.accounting import intent_record, usage_records
    from trioproxy.pipeline.context import RequestContext
    from trioproxy.pipeline.routing import RoutePlan
    from trioproxy.upstream.race import Attempt, Race

    settings = resolved()
    route = settings.routes["r"]
    plan = RoutePlan(route, route.chains["default"], "default")
    req = DIALECTS["openai"].parse_request(common.CHAT_BODY % b"r")
    key = ApiKeyConfig("k", "0" * 64, "t", "u")
    where = {"endpoint": "/v1/chat/completions"} if "endpoint" in RequestContext._fields else {}
    ctx = RequestContext("rid", "openai", key, "f", req, plan, 12, 1.0, 2.0, **where)
    target = plan.chain.targets[0]
    for _ in range(n):
        race = Race(plan.chain.targets, None, None)  # type: ignore[arg-type]
        a = Attempt(0, 0, target, "primary", started_at=1.0, wall_started_at=2.0,
                    first_byte_at=1.5, ended_at=1.7, outcome="won")  # fmt: skip
        race.attempts.append(a)
        race.winner = a
        intent_record(ctx, a)
        list(usage_records(ctx, race, [(a, target.spec, Usage(12, 3))], status=200, error=None,
                           client_gone=False))  # fmt: skip


async def op(n: int) -> None:
    try:
        from trioproxy.budget.group_commit import Op
    except ImportError:  # a commit before the group commit had its own module
        from trioproxy.budget.sqlite_store import _Op as Op

    for _ in range(n):
        Op(lambda db: None)


async def http(n: int) -> None:
    from trioproxy.config.catalog import ProviderConfig
    from trioproxy.providers.base import UpstreamRequest
    from trioproxy.upstream.transport import HttpTransport

    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        % len(common.COMPLETION)
        + common.COMPLETION
    )

    async def serve(stream: trio.SocketStream) -> None:
        buf = b""
        while data := await stream.receive_some(65536):
            buf += data
            while (end := buf.find(b"\r\n\r\n")) >= 0:
                length = re.search(rb"(?i)content-length: *(\d+)", buf[:end])
                size = end + 4 + (int(length.group(1)) if length else 0)
                if len(buf) < size:
                    break
                buf = buf[size:]
                await stream.send_all(answer)

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        port = listeners[0].socket.getsockname()[1]
        provider = ProviderConfig("sim", "openai", f"http://127.0.0.1:{port}")
        transport = HttpTransport({"sim": provider}, env={})
        req = UpstreamRequest("/chat/completions", (("content-type", "application/json"),), b"{}")
        for _ in range(n):
            async with transport.open(provider, req, connect_timeout=2) as resp:
                await resp.read(1 << 20)
        nursery.cancel_scope.cancel()


async def bill(n: int) -> None:
    from trioproxy.core.types import Usage
    from trioproxy.pipeline.accounting import bill_for

    model = resolved().routes["r"].chains["default"].targets[0].spec
    usage = Usage(12, 3)
    for _ in range(n):
        bill_for(model, usage)


async def budget(n: int) -> None:
    from trioproxy.budget.alerts import AlertSink
    from trioproxy.budget.gate import BudgetGate, KeyRate, OutagePolicy
    from trioproxy.budget.sqlite_store import SqliteStore
    from trioproxy.config.model import BudgetsConfig, TeamBudget

    store = SqliteStore(str(Path(tempfile.mkdtemp(prefix="tp-path-budget-")) / "b.sqlite3"))
    budgets = BudgetsConfig(teams={"bench": TeamBudget("bench", daily_usd=1000000.0)})
    alerts = AlertSink(store)
    outage = OutagePolicy(call_timeout_s=600.0)  # valgrind: ~50x slower
    gate = BudgetGate(budgets, store, alerts=alerts, outage=outage)
    rate = KeyRate("bench")
    conc = args.conc

    async def one(i: int) -> None:
        ticket = await gate.admit(request_id=f"r{i}", team="bench", user="u", end_user=None,
                                  worst_case_usd_micros=1200, worst_case_tokens=4100,
                                  rate=rate)  # fmt: skip
        await gate.settle(ticket, 90, 120)

    async def loop(k: int) -> None:
        for i in range(k, n, conc):
            await one(i)

    async with trio.open_nursery() as nursery:
        await nursery.start(alerts.run)
        await one(-1)  # first reads (limits, policy) out of the count
        async with trio.open_nursery() as tasks:
            for k in range(conc):
                tasks.start_soon(loop, k)
        nursery.cancel_scope.cancel()
    store.close()


async def account(n: int) -> None:
    from trioproxy.budget.alerts import AlertSink
    from trioproxy.budget.gate import BudgetGate, KeyRate
    from trioproxy.budget.memory_store import MemoryStore
    from trioproxy.config.model import ApiKeyConfig, BudgetsConfig, TeamBudget
    from trioproxy.core.types import Usage
    from trioproxy.dialects import DIALECTS
    from trioproxy.edge.auth import KeyRing
    from trioproxy.edge.endpoint import Endpoint
    from trioproxy.ledger.sinks import ListSink
    from trioproxy.pipeline.admission import Admission
    from trioproxy.pipeline.context import RequestContext
    from trioproxy.pipeline.routing import RoutePlan
    from trioproxy.upstream.race import Attempt, Race

    settings = resolved()
    route = settings.routes["r"]
    plan = RoutePlan(route, route.chains["default"], "default")
    req = DIALECTS["openai"].parse_request(common.CHAT_BODY % b"r")
    key = ApiKeyConfig("k", "0" * 64, "bench", "u")
    store = MemoryStore()
    budgets = BudgetsConfig(teams={"bench": TeamBudget("bench", daily_usd=1000000.0)})
    gate = BudgetGate(budgets, store, alerts=AlertSink(store))
    sink = ListSink()
    endpoint = Endpoint(settings, KeyRing({}), None, None, sink, Admission(gate))  # type: ignore[arg-type]
    target = plan.chain.targets[0]
    usage = Usage(12, 3)
    for i in range(n + 1):
        if i == 1:  # the first settle's reads (limits, policy) out of the count
            sink.records.clear()
        ticket = await gate.admit(request_id=f"r{i}", team="bench", user="u", end_user=None,
                                  worst_case_usd_micros=1200, worst_case_tokens=4100,
                                  rate=KeyRate("k"))  # fmt: skip
        ctx = RequestContext(f"r{i}", "openai", key, "f", req, plan, 12, 1.0, 2.0,
                             endpoint="/v1/chat/completions").with_ticket(ticket, 12)  # fmt: skip
        race = Race(plan.chain.targets, None, None)  # type: ignore[arg-type]
        a = Attempt(0, 0, target, "primary", started_at=1.0, wall_started_at=2.0,
                    first_byte_at=1.5, ended_at=1.7, outcome="won")  # fmt: skip
        race.attempts.append(a)
        race.winner = a
        await endpoint.account(ctx, race, [(a, target.spec, usage)], [], status=200,
                               error=None, client_gone=False)  # fmt: skip
        sink.records.clear()


async def intake(n: int) -> None:
    import hashlib

    from trioproxy.config.model import ApiKeyConfig
    from trioproxy.edge.auth import KeyRing
    from trioproxy.edge.intake import Intake
    from trioproxy.edge.respond import ResponseGuard
    from trioproxy.pipeline.slots import Slots

    digest = hashlib.sha256(b"k-secret").hexdigest()
    keys = KeyRing({digest: ApiKeyConfig("k", digest, "t", "u")})
    taker = Intake(keys, Slots(4096, 0, 1.0, 0, 60), 1 << 20)
    body = common.CHAT_BODY % b"r"
    headers = {b"authorization": b"Bearer k-secret", b"content-type": b"application/json",
               b"content-length": str(len(body)).encode()}  # fmt: skip
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {"trioproxy.on_disconnect": lambda gone: None, "trioproxy.body_ready": lambda: True}
    for _ in range(n):
        guard = ResponseGuard(send, scope)
        async with taker("openai", headers, receive, guard, ()) as got:
            assert got is not None


def count() -> None:
    out = Path(tempfile.mkdtemp(prefix="tp-path-cg-"))
    argv = [a for a in sys.argv[1:]]
    procs = []
    # one string hash for every run: dict and set layouts (and so their probes) repeat
    env = {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
    for n in args.n:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.{n}",
               sys.executable, __file__, *argv, "--run", str(n)]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=env))  # fmt: skip
    totals = []
    for n, proc in zip(args.n, procs, strict=True):
        text, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"callgrind run of {n} failed:\n{text[-3000:]}")
        got = re.search(r"^totals: (\d+)", (out / f"cg.{n}").read_text(), re.M)
        assert got is not None
        totals.append(int(got.group(1)))
    per = (totals[1] - totals[0]) / (args.n[1] - args.n[0])
    print(f"{args.case}: {per:,.0f} Ir per call ({totals[0]:,} -> {totals[1]:,} Ir)")


if args.run is not None:
    case = {"fetch": fetch, "records": records, "op": op, "http": http, "bill": bill,
            "budget": budget, "account": account, "intake": intake}[args.case]  # fmt: skip
    trio.run(case, args.run)
else:
    count()
