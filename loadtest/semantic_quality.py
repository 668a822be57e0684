"""Semantic-cache quality and embedder speed.

    .venv/bin/python loadtest/semantic_quality.py [--pairs PATH] [--near PATH] [--speed]

Positives: the 999 GPTCache paraphrase pairs (origin vs similar). Negatives: each origin
against another pair's ``similar`` (random derangement, seed 0), and the hand-written near
misses in ``loadtest/data/near_misses.json`` (even indices = dev set used while tuning the
guard, odd = held-out). A pair "hits" when cosine >= threshold (and, with the guard, when
``near_miss(new, cached)`` is None). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import trio

from trioproxy.cache.embedder import LocalEmbedder, OnnxMiniLM
from trioproxy.cache.guard import RULES, near_miss

HERE = Path(__file__).parent
DEFAULT = 0.85
THRESHOLDS = (0.80, 0.83, 0.85, 0.87, 0.90, 0.92, 0.95, 0.97)


_MEMO: dict[str, np.ndarray] = {}


def cosines(model: OnnxMiniLM, a: list[str], b: list[str]) -> np.ndarray:
    todo = sorted({t for t in a + b if t not in _MEMO})
    if todo:
        for t, v in zip(todo, embed_all(model, todo), strict=True):
            _MEMO[t] = v
    return np.array([float(_MEMO[x] @ _MEMO[y]) for x, y in zip(a, b, strict=True)])


def load_memo(path: Path | None) -> None:
    if path and path.exists():
        data = np.load(path, allow_pickle=False)
        _MEMO.update(zip(data["texts"].tolist(), data["vecs"], strict=True))


def save_memo(path: Path | None) -> None:
    if path:
        texts = sorted(_MEMO)
        np.savez(path, texts=np.array(texts), vecs=np.stack([_MEMO[t] for t in texts]))


def embed_all(model: OnnxMiniLM, texts: list[str], batch: int = 32) -> np.ndarray:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.dim), dtype=np.float32)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        out[idx] = model.embed_many([texts[i] for i in idx])
    return out


def rate(sims: np.ndarray, ok: np.ndarray, thr: float) -> float:
    return float(((sims >= thr) & ok).mean()) if len(sims) else 0.0


def quality(model: OnnxMiniLM, pairs_path: Path, near_path: Path) -> None:
    pairs = json.loads(pairs_path.read_text())
    near_doc = json.loads(near_path.read_text())
    near = near_doc["pairs"]
    fresh = near_doc["fresh"]
    origin = [p["origin"] for p in pairs]
    similar = [p["similar"] for p in pairs]
    rng = random.Random(0)
    perm = list(range(len(pairs)))
    while any(i == j for i, j in enumerate(perm)):
        rng.shuffle(perm)
    sets: dict[str, tuple[list[str], list[str]]] = {
        "paraphrase": (similar, origin),
        "other_pair": ([similar[j] for j in perm], origin),
        "near_dev": ([p["b"] for p in near[0::2]], [p["a"] for p in near[0::2]]),
        "near_held": ([p["b"] for p in near[1::2]], [p["a"] for p in near[1::2]]),
        "near_fresh": ([p["b"] for p in fresh], [p["a"] for p in fresh]),
    }
    sims: dict[str, np.ndarray] = {}
    guard_ok: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for name, (new, cached) in sets.items():
        sims[name] = cosines(model, new, cached)
        guard_ok[name] = np.array(
            [near_miss(n, c) is None for n, c in zip(new, cached, strict=True)]
        )
    g_us = guard_cost(sets)
    print(
        f"embedded {sum(len(v[0]) * 2 for v in sets.values())} texts in {time.perf_counter() - t0:.1f} s;"
        f" guard costs {g_us:.1f} us per pair\n"
    )
    sims["near_all"] = np.concatenate([sims["near_dev"], sims["near_held"]])
    guard_ok["near_all"] = np.concatenate([guard_ok["near_dev"], guard_ok["near_held"]])
    cols = ["paraphrase", "other_pair", "near_all", "near_fresh"]
    sizes = {c: len(sims[c]) for c in cols}
    print("| thr | guard | " + " | ".join(f"{c} (n={sizes[c]})" for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for thr in THRESHOLDS:
        for use_guard in (False, True):
            cells = []
            for c in cols:
                ok = guard_ok[c] if use_guard else np.ones(len(sims[c]), dtype=bool)
                cells.append(f"{rate(sims[c], ok, thr):.3f}")
            print(f"| {thr:.2f} | {'yes' if use_guard else 'no'} | " + " | ".join(cells) + " |")
    print(
        "\nparaphrases the guard rejects, by reason:",
        dict(
            Counter(near_miss(n, c) for n, c in zip(*sets["paraphrase"], strict=True))
            - Counter({None: 10**9})
        ),
    )
    print("near misses the guard passes (cosine):")
    for p, s, ok in zip(
        near,
        interleave(sims["near_dev"], sims["near_held"]),
        interleave(guard_ok["near_dev"], guard_ok["near_held"]),
        strict=True,
    ):
        if ok:
            print(f"  {s:.3f} [{p['kind']}] {p['a']!r} / {p['b']!r}")
    print("fresh near misses the guard passes (cosine):")
    for p, s, ok in zip(fresh, sims["near_fresh"], guard_ok["near_fresh"], strict=True):
        if ok:
            print(f"  {s:.3f} [{p['kind']}] {p['a']!r} / {p['b']!r}")
    print("\nablation (drop one rule) at the default threshold:")
    print("| guard | paraphrase | near_all | near_fresh |\n|---|---|---|---|")
    for drop in (None, *RULES):
        rules = tuple(r for r in RULES if r != drop)
        cells = []
        for c in ("paraphrase", "near_all", "near_fresh"):
            new, cached = (
                sets[c]
                if c != "near_all"
                else (
                    sets["near_dev"][0] + sets["near_held"][0],
                    sets["near_dev"][1] + sets["near_held"][1],
                )
            )
            ok = np.array(
                [near_miss(x, y, rules) is None for x, y in zip(new, cached, strict=True)]
            )
            cells.append(f"{rate(sims[c], ok, DEFAULT):.3f}")
        print(
            f"| {'all rules' if drop is None else 'without ' + drop} | " + " | ".join(cells) + " |"
        )
    by_kind: dict[str, list[float]] = {}
    for p, s in zip(near, interleave(sims["near_dev"], sims["near_held"]), strict=True):
        by_kind.setdefault(p["kind"], []).append(float(s))
    print(
        "near-miss mean cosine by kind:",
        {k: round(statistics.mean(v), 3) for k, v in by_kind.items()},
    )


def interleave(even: np.ndarray, odd: np.ndarray) -> list[Any]:
    out: list[Any] = []
    for i in range(len(even) + len(odd)):
        out.append(even[i // 2] if i % 2 == 0 else odd[i // 2])
    return out


def guard_cost(sets: dict[str, tuple[list[str], list[str]]]) -> float:
    new, cached = sets["other_pair"]
    t0 = time.perf_counter()
    for n, c in zip(new, cached, strict=True):
        near_miss(n + " ", c + " ")  # defeat the feature cache: measure a cold check
    return (time.perf_counter() - t0) / len(new) * 1e6


def speed(model: OnnxMiniLM, texts: list[str]) -> None:
    model.embed_many(texts[:8])
    t0 = time.perf_counter()
    for t in texts:
        model.embed_many([t])
    single = len(texts) / (time.perf_counter() - t0)
    print(f"\nembedder, one thread: single {single:.0f}/s", end="")
    for size in (4, 8, 32):
        t0 = time.perf_counter()
        embed_all(model, texts, batch=size)
        print(
            f", length-sorted batch-{size} {len(texts) / (time.perf_counter() - t0):.0f}/s", end=""
        )
    print()
    for batch, pending in ((1, 8), (8, 64)):
        for concurrency in (1, 8, 64):
            rps, p50, p99, skipped = trio.run(
                through_embedder, model, texts, concurrency, batch, pending
            )
            print(
                f"LocalEmbedder (2 threads, max_batch {batch}, max_pending {pending}), "
                f"{concurrency} tasks: {rps:.0f}/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                f"skipped {skipped}"
            )


async def through_embedder(
    model: OnnxMiniLM, texts: list[str], concurrency: int, batch: int, pending: int
) -> tuple[float, float, float, int]:
    emb = LocalEmbedder(model, threads=2, max_batch=batch, max_pending=pending)
    lat: list[float] = []
    skipped = 0
    todo = iter(texts)

    async def worker() -> None:
        nonlocal skipped
        for t in todo:
            s = time.perf_counter()
            if await emb.embed(t) is None:
                skipped += 1
            lat.append((time.perf_counter() - s) * 1000)

    async with trio.open_nursery() as nursery:
        await nursery.start(emb.run)
        t0 = time.perf_counter()
        async with trio.open_nursery() as workers:
            for _ in range(concurrency):
                workers.start_soon(worker)
        elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    lat.sort()
    return len(texts) / elapsed, lat[len(lat) // 2], lat[int(len(lat) * 0.99)], skipped


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=Path, default=Path("/work/shared/data/gptcache_pairs.json"))
    ap.add_argument("--near", type=Path, default=HERE / "data" / "near_misses.json")
    ap.add_argument("--speed", action="store_true", help="also measure embedder throughput")
    ap.add_argument("--emb-cache", type=Path, help="npz memo of embeddings (reused between runs)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    model = OnnxMiniLM()
    print(f"model load {time.perf_counter() - t0:.2f} s")
    load_memo(args.emb_cache)
    quality(model, args.pairs, args.near)
    save_memo(args.emb_cache)
    if args.speed:
        origins = [p["origin"] for p in json.loads(args.pairs.read_text())][:640]
        speed(model, origins)


if __name__ == "__main__":
    main()
