"""Replay savings: a workload of repeats and paraphrases through the cache (issue 4).

Workload (built at run time from gptcache_pairs.json, ``--seed`` fixed): for each of the
999 pairs, the ``origin`` is asked once, then repeated exactly ``--repeats`` times, and
its ``similar`` (a paraphrase) is asked once; the requests of all pairs are shuffled
together with each pair's first ask kept first. With the defaults that is 999 x 4 =
3,996 requests, of which at most 3 in 4 can be cache hits (2 exact + 1 semantic per pair).

They go through ``trioproxy serve -w 1`` (route ``chat``: exact + semantic cache,
band floor ``--floor``, temperature 0) to one simulator, ``--conns`` at a time, on a
fresh state dir per row. Reported: upstream calls (the simulator's own request count)
vs requests sent, hits by kind from the ``x-trioproxy-cache`` header, the paraphrase hit
rate, semantic hits served *another prompt's* answer (not the answer to the pair's own
origin; the simulator's answer is a function of the prompt), cache writes dropped,
answered requests missing from the ledger, and dollars from the ledger
(``state_dir/ledger.sqlite3``, ``ledger_raw`` kind='request': ``sum(saved_micros)`` of
hits vs ``sum(cost_micros)`` spent) at the config's prices (0.15 / 0.60 USD per Mtok).
The gateway is stopped by SIGTERM to its master (see ``cache_latency.stop_gateway``).

With ``--users N`` every request is sent with the key of one of N users of one team
(chosen by the seed) and each row is run for every ``--confirm`` value: 1 is the shared
cache, K > 1 serves an entry to the other users only once K distinct users asked for it
(and keeps exact entries per user), so the rows give the savings cost of that protection.

    .venv/bin/python loadtest/replay_savings.py [--conns 1 8] [--repeats 2] [--users 3]
        [--confirm 1 2]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import cache_latency as cl
import common
from common import Server

Job = tuple[str, int, str]  # kind (origin | repeat | similar), pair index, text


def workload(pairs: list[dict[str, str]], repeats: int, seed: int) -> list[Job]:
    rng = random.Random(seed)
    jobs: list[Job] = []
    for i, p in enumerate(pairs):
        jobs.append(("origin", i, p["origin"]))
        jobs += [("repeat", i, p["origin"])] * repeats
        jobs.append(("similar", i, p["similar"]))
    rng.shuffle(jobs)
    first: dict[int, int] = {}  # pair -> position of its first request in the shuffle
    for pos, (_, i, _) in enumerate(jobs):
        first.setdefault(i, pos)
    origin = {i: pos for pos, (kind, i, _) in enumerate(jobs) if kind == "origin"}
    for i in range(len(pairs)):  # swap the origin to where the pair starts
        a, b = first[i], origin[i]
        jobs[a], jobs[b] = jobs[b], jobs[a]
    return jobs


def sim_requests(sim: Server) -> int:
    with urllib.request.urlopen(sim.url + "/_sim/stats", timeout=5) as r:
        return int(json.loads(r.read())["requests"])


def content(body: bytes) -> str:
    return str(json.loads(body)["choices"][0]["message"]["content"])


def missing_records(state: Path, samples: list[cl.Sample]) -> list[tuple[int, str, str]]:
    """Answered requests without a request record in the ledger: (position, tag, cache)."""
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        ids = {r for (r,) in db.execute("SELECT request_id FROM ledger_raw WHERE kind='request'")}
    return [(n, s.tag, s.cache) for n, s in enumerate(samples) if s.request_id not in ids]


def ledger_dollars(state: Path) -> dict[str, float]:
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        rows = db.execute(
            "SELECT cache, count(*), sum(cost_micros) / 1e6, sum(saved_micros) / 1e6 FROM ledger_raw "
            "WHERE kind = 'request' GROUP BY cache"
        ).fetchall()
    out = {"spent": 0.0, "saved": 0.0, "records": 0.0}
    for _cache, n, cost, saved in rows:
        out["spent"] += cost or 0.0
        out["saved"] += saved or 0.0
        out["records"] += n
    return out


def sim_answer(sim: Server, text: str) -> str:
    """What the simulator answers to ``text`` (a function of the prompt), asked directly."""
    req = urllib.request.Request(
        sim.url + "/v1/chat/completions",
        data=cl.chat_body(text).replace(b'"chat"', json.dumps(cl.MODEL).encode(), 1),
        headers={"content-type": "application/json", "authorization": "Bearer sim"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return content(r.read())


def foreign_answers(sim: Server, jobs: list[Job], samples: list[cl.Sample]) -> list[str]:
    """Semantic hits whose answer is not the answer to their pair's origin: for each, the
    paraphrase and the cached prompt whose answer it got (asked of the simulator after the
    run, so that the upstream count is not touched)."""
    texts = {i: text for kind, i, text in jobs if kind == "origin"}
    truth = {i: sim_answer(sim, t) for i, t in texts.items()}
    by_answer = {a: texts[i] for i, a in truth.items()}
    similar = {i: text for kind, i, text in jobs if kind == "similar"}
    out = []
    for s in samples:
        kind, i = s.tag.split(":")
        if s.cache != "semantic" or content(s.body) == truth[int(i)]:
            continue
        asked = similar[int(i)] if kind == "similar" else texts[int(i)]
        out.append(f"{asked!r} got the answer to {by_answer.get(content(s.body), '?')!r}")
    return out


def run_row(
    sim: Server, root: Path, jobs: list[Job], conns: int, floor: float, users: int,
    confirm: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    wd = root / f"c{conns}-k{confirm}"
    wd.mkdir()
    names = [str(u) for u in range(users)]
    config = cl.cache_config(wd, sim.url, band=(floor, 1.0), users=names, confirm_users=confirm)
    gw = common.start_gateway(wd, config, 1)
    rng = random.Random(seed)
    keyed = [
        (f"{kind}:{i}", cl.chat_body(text), cl.user_key(rng.choice(names)))
        for kind, i, text in jobs
    ]
    try:
        before = sim_requests(sim)
        common.wait_quiet()
        with common.Meter({"gateway": gw.pgid, "sim": sim.pgid}) as m:
            res = cl.run_load(gw.url, keyed, conns=conns, max_seconds=600)
        upstream = sim_requests(sim) - before
        gauges = cl.metrics(gw)
    finally:
        cl.stop_gateway(gw)
    by = Counter((s.tag.split(":")[0], s.cache) for s in res.samples)
    sent = len(res.samples)
    hits = sum(n for (_, c), n in by.items() if c in ("exact", "semantic"))
    return {
        "conns": conns,
        "confirm": confirm,
        "unconfirmed": gauges.get("trioproxy_semantic_unconfirmed_total", 0.0),
        "sent": sent,
        "errors": res.errors + sum(1 for s in res.samples if s.status != 200),
        "upstream": upstream,
        "hits": hits,
        "by": by,
        "skipped": gauges.get("trioproxy_semantic_embed_skipped_total", 0.0),
        "below": gauges.get("trioproxy_semantic_below_threshold_total", 0.0),
        "dropped": gauges.get("trioproxy_cache_writes_dropped_total", 0.0),
        "foreign_answers": foreign_answers(sim, jobs, res.samples),
        "dollars": ledger_dollars(wd / "state"),
        "missing": missing_records(wd / "state", res.samples),
        "seconds": res.seconds,
        "busy": m.busy_pct,
        "foreign": m.foreign_pct,
    }


def report(r: dict[str, Any], repeats: int, pairs: int) -> None:
    by: Counter[tuple[str, str]] = r["by"]
    sent, d = r["sent"], r["dollars"]
    n_sim = sum(n for (k, _), n in by.items() if k == "similar")
    n_rep = sum(n for (k, _), n in by.items() if k == "repeat")
    sem = by[("similar", "semantic")]
    print(f"\n### conns {r['conns']}, confirm_users {r['confirm']}: {sent} requests in {r['seconds']:.1f} s (busy "
          f"{r['busy']:.0f} %, foreign {r['foreign']:.0f} %), errors {r['errors']}")  # fmt: skip
    print(f"- upstream calls: {r['upstream']} of {sent} sent: {sent - r['upstream']} avoided "
          f"({100 * (sent - r['upstream']) / sent:.1f} %); ideal {3 * pairs} (75.0 %)")  # fmt: skip
    print(f"- overall hit rate {100 * r['hits'] / sent:.1f} %")
    print(f"- exact repeats: {by[('repeat', 'exact')]} / {n_rep} hit exact "
          f"({100 * by[('repeat', 'exact')] / max(1, n_rep):.1f} %)")  # fmt: skip
    print(f"- paraphrases: {sem} / {n_sim} semantic ({100 * sem / max(1, n_sim):.1f} %), "
          f"exact {by[('similar', 'exact')]}, miss {by[('similar', 'miss')]}; embed skipped "
          f"{r['skipped']:.0f}, below threshold {r['below']:.0f} (all lookups)")  # fmt: skip
    for kind in ("origin", "repeat"):
        print(f"- {kind}s by path: {dict((c, n) for (k, c), n in by.items() if k == kind)}")
    print(f"- cache writes dropped (writer queue full): {r['dropped']:.0f}; semantic matches "
          f"held back for confirmation: {r['unconfirmed']:.0f}")  # fmt: skip
    foreign = r["foreign_answers"]
    print(f"- semantic hits answered with another prompt's answer: {len(foreign)}; e.g.")
    for line in foreign[:3]:
        print(f"  - {line}")
    total = d["spent"] + d["saved"]
    print(f"- ledger: {d['records']:.0f} request records, spent ${d['spent']:.6f}, "
          f"saved ${d['saved']:.6f} ({100 * d['saved'] / max(total, 1e-12):.1f} % "
          f"of the no-cache bill ${total:.6f})")  # fmt: skip
    missing = r["missing"]
    print(f"- answered requests with no ledger request record: {len(missing)}: {missing[:8]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--floor", type=float, default=0.8)
    p.add_argument("--users", type=int, default=3)
    p.add_argument("--confirm", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    pairs = json.loads(cl.PAIRS.read_text())
    jobs = workload(pairs, args.repeats, args.seed)
    print(f"workload: {len(jobs)} requests, {len(pairs)} pairs x (1 origin + {args.repeats} "
          f"repeats + 1 paraphrase), floor {args.floor}, {args.users} users of one team")  # fmt: skip
    root = common.workdir()
    sim = common.start_simulator(root)
    try:
        for conns in args.conns:
            for k in args.confirm:
                row = run_row(sim, root, jobs, conns, args.floor, args.users, k, args.seed)
                report(row, args.repeats, len(pairs))
    finally:
        sim.stop()
    print(f"\nworkdir {root}")


if __name__ == "__main__":
    main()
