"""Semantic-cache quality: false and true hits with 95 % confidence intervals, by family.

    .venv/bin/python loadtest/semantic_quality.py [--curve] [--speed] [--show-misses]
        [--show-seen-misses PREFIX] [--held FILE]

A pair (new prompt, cached prompt) is a hit exactly as :class:`SemanticCache` decides it:
cosine >= the route band's floor, no guard veto, and (below the ceiling, text not equal)
the pair verifier: the two prompts' content tokens align, or the pair cross-encoder
(``trioproxy/cache/cross_encoder.py``) scores the pair at least the band's cut. Sets:

* held-out (``held:``): the file ``--held`` names, a set written by an independent helper who
  never saw the verifier, read only after a commit 'cache: pair verifier FROZEN vN' and never
  used to change anything (default: ``loadtest/data/heldout_v25_pairs.json`` when that file
  exists, else none; ``--held none`` for none, or name a seen one, e.g. ``--held
  loadtest/data/heldout_v6_pairs.json``, to see it in the held-out tables, the curve and
  ``--show-misses``, and it leaves the seen sets);
* tuning (``tune:``): ``loadtest/data/tuning_pairs.json``, ``loadtest/data/near_misses.json``,
  GPTCache pairs at even indices;
* seen (``seen:``): v1 to v24 (``heldout_pairs.json``, ``heldout_v2_pairs.json`` ...
  ``heldout_v24_pairs.json``, each held out for an earlier freeze) and GPTCache pairs at odd
  indices, with non-duplicates made by pairing each origin with another pair's paraphrase
  (derangement, seed 0);
* ``extra:``: ``loadtest/data/pair_model_extra.json``, pairs written to train the pair model
  that the cross-encoder replaced.

Every set but ``held:`` and v20-v24 trained the shipped cross-encoder (FROZEN v25,
``loadtest/train_cross_encoder.py``; v20-v24 were its evaluation, ``loadtest/ce_eval.py``;
FROZEN v18 changed the embedding model to its dynamically quantized form:
``trioproxy/cache/model_file.py``). ``--show-seen-misses PREFIX``
prints every refused paraphrase and served negative of the seen and tuning sets whose name
starts with PREFIX ("seen:v2" for v2 and v20-v29, "seen:" or "tune:" for all), with its reason.
GPTCache pairs: ``/work/shared/data/gptcache_pairs.json`` (zilliztech/GPTCache
``examples/benchmark/mock_data.json``, MIT licence). Rates are Wilson 95 % intervals.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from trioproxy.cache.aliases import embedding_text
from trioproxy.cache.band import BAND_PRESETS, Band
from trioproxy.cache.cross_encoder import serves
from trioproxy.cache.embedder import Embedding, LocalEmbedder, OnnxMiniLM
from trioproxy.cache.entry import CacheEntry
from trioproxy.cache.exact import MemoryExactCache
from trioproxy.cache.guard import near_miss, term_only
from trioproxy.cache.keys import semantic_namespace
from trioproxy.cache.semantic import SemanticCache, route_band
from trioproxy.cache.semantic_record import SemanticRecord
from trioproxy.cache.vector_index import HnswIndex
from trioproxy.cache.vocabulary import Vocabulary
from trioproxy.config.model import CacheConfig
from trioproxy.core.types import ChatRequest, Usage

HERE = Path(__file__).parent / "data"
GPTCACHE = Path("/work/shared/data/gptcache_pairs.json")


@dataclass(frozen=True, slots=True)
class Pair:
    new: str
    cached: str
    family: str
    same: bool
    """True when the cached answer is right for the new prompt."""


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, mid - half), min(1.0, mid + half)


def cell(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {100 * k / max(n, 1):.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


SEEN = (
    ("v1", "heldout_pairs.json"),
    ("v2", "heldout_v2_pairs.json"),
    ("v3", "heldout_v3_pairs.json"),
    ("v4", "heldout_v4_pairs.json"),
    ("v5", "heldout_v5_pairs.json"),
    ("v6", "heldout_v6_pairs.json"),
    ("v7", "heldout_v7_pairs.json"),
    ("v8", "heldout_v8_pairs.json"),
    ("v9", "heldout_v9_pairs.json"),
    ("v10", "heldout_v10_pairs.json"),
    ("v11", "heldout_v11_pairs.json"),
    ("v12", "heldout_v12_pairs.json"),
    ("v13", "heldout_v13_pairs.json"),
    ("v14", "heldout_v14_pairs.json"),
    ("v15", "heldout_v15_pairs.json"),
    ("v16", "heldout_v16_pairs.json"),
    ("v17", "heldout_v17_pairs.json"),
    ("v18", "heldout_v18_pairs.json"),
    ("v19", "heldout_v19_pairs.json"),
    ("v20", "heldout_v20_pairs.json"),
    ("v21", "heldout_v21_pairs.json"),
    ("v22", "heldout_v22_pairs.json"),
    ("v23", "heldout_v23_pairs.json"),
    ("v24", "heldout_v24_pairs.json"),
)
"""The sets held out for the freezes v1-v24, seen since (v19 read after 'FROZEN v19', v20 a
second fresh set for that freeze, written 2026-12-07 11:11 UTC and read at 11:13; v21 written
13:59-14:0x UTC after 'FROZEN v21' (13:58:56) and read once, at 14:05; v22 written
17:50-17:54 UTC after 'FROZEN v22' (17:50:00) and read once, at 17:55; v23 written
20:12-20:16 UTC after 'FROZEN v23' (20:12:01) and read once, at 20:17; v24 written
21:05-21:10 UTC after 'FROZEN v24' (21:04:55) and read once, at 21:11)."""
HELD = HERE / "heldout_v25_pairs.json"
"""The held-out set of the next freeze: v25, written by an independent helper after it (absent
until then: every set is seen)."""


def load_sets(held_path: Path | None = None) -> dict[str, list[Pair]]:
    """Every set by name: ``tune:`` and ``seen:`` (looked at while building), ``extra:`` (pairs
    written to train the pair model), ``held:`` (``held_path``, when given)."""
    tuning = json.loads((HERE / "tuning_pairs.json").read_text())
    older = json.loads((HERE / "near_misses.json").read_text())
    extra = json.loads((HERE / "pair_model_extra.json").read_text())
    gpt = json.loads(GPTCACHE.read_text())

    def near(items: list[dict[str, str]], fam: str = "family") -> list[Pair]:
        return [Pair(p["b"], p["a"], p[fam], False) for p in items]

    def gpt_sets(idx: list[int]) -> tuple[list[Pair], list[Pair]]:
        rng = random.Random(0)
        perm = idx[:]
        while any(i == j for i, j in zip(idx, perm, strict=True)):
            rng.shuffle(perm)
        para = [Pair(gpt[i]["similar"], gpt[i]["origin"], "gptcache", True) for i in idx]
        neg = [
            Pair(gpt[j]["similar"], gpt[i]["origin"], "gptcache", False)
            for i, j in zip(idx, perm, strict=True)
        ]
        return para, neg

    def para(items: list[dict[str, str]]) -> list[Pair]:
        return [Pair(p["b"], p["a"], "para", True) for p in items]

    def nondup(items: list[dict[str, str]]) -> list[Pair]:
        return [Pair(p["b"], p["a"], "same_topic", False) for p in items]

    tg_para, tg_neg = gpt_sets(list(range(0, len(gpt), 2)))
    sg_para, sg_neg = gpt_sets(list(range(1, len(gpt), 2)))
    sets = {
        "tune:near": near(tuning["near"]) + near(older["pairs"] + older["fresh"], "kind"),
        "tune:para": para(tuning["para"]),
        "tune:gpt_para": tg_para,
        "tune:gpt_nondup": tg_neg,
        "extra:near": near(extra["near"]),
        "extra:para": para(extra["para"]),
        "seen:gpt_para": sg_para,
        "seen:gpt_nondup": sg_neg,
    }
    for v, name in SEEN:
        if held_path is not None and (HERE / name).resolve() == held_path.resolve():
            continue
        data = json.loads((HERE / name).read_text())
        sets[f"seen:{v}_near"] = near(data["near"])
        sets[f"seen:{v}_para"] = para(data["para"])
        sets[f"seen:{v}_nondup"] = nondup(data["nondup"])
    if held_path is not None:
        held = json.loads(held_path.read_text())
        sets["held:near"] = near(held["near"])
        sets["held:para"] = para(held["para"])
        sets["held:nondup"] = nondup(held["nondup"])
    return sets


WRITERS = ("tune", "extra", "gpt", *(v for v, _ in SEEN))


def writer_sets() -> dict[str, list[tuple[str, Pair]]]:
    """Every labelled set by its writer: ``tune`` (``tuning_pairs.json`` and
    ``near_misses.json``), ``extra`` (``pair_model_extra.json``), ``gpt`` (GPTCache's pairs,
    both halves, non-duplicates by derangement as in :func:`load_sets`), ``v1`` ... ``v24``.
    Each item is (kind, pair), kind one of near, para, nondup. For the cross-encoder's
    training data (``ce_prepare.py``)."""
    sets = load_sets(None)
    out: dict[str, list[tuple[str, Pair]]] = {w: [] for w in WRITERS}
    for name, pairs in sets.items():
        prefix, rest = name.split(":")
        if prefix == "seen" and rest.startswith("v"):
            writer, kind = rest.split("_")
        else:
            writer = {"tune": "tune", "extra": "extra"}[prefix] if "gpt" not in rest else "gpt"
            kind = rest.split("_")[-1]
        kind = {"para": "para", "near": "near", "nondup": "nondup"}[kind]
        out[writer] += [(kind, p) for p in pairs]
    return out


class Judge:
    def __init__(self, model: OnnxMiniLM) -> None:
        self.model = model
        self.vocab: Vocabulary = model.vocabulary()
        self.memo: dict[str, Embedding] = {}
        self.verify_s: list[float] = []

    def embed(self, text: str) -> Embedding:
        if text not in self.memo:
            self.memo[text] = self.model.embed_one(embedding_text(text))
        return self.memo[text]

    def cosine(self, p: Pair) -> float:
        return float(self.embed(p.new).vec @ self.embed(p.cached).vec)

    def hit(self, p: Pair, band: Band, *, verifier: bool = True) -> bool:
        """As ``SemanticCache.lookup`` decides (the cross-encoder in this thread)."""
        sim = self.cosine(p)
        if sim < (band.lowest if verifier else band.floor):
            return False
        reason = near_miss(p.new, p.cached)
        term_veto = (
            verifier
            and reason == "term"
            and band.term_overrule
            and sim >= band.floor
            and term_only(p.new, p.cached)
        )
        if reason is not None and not term_veto:
            return False
        if not verifier or p.new == p.cached or (sim >= band.ceiling and not term_veto):
            return True
        a, b = self.embed(p.new).tokens, self.embed(p.cached).tokens
        assert a is not None and b is not None
        t0 = time.perf_counter()
        ok = serves(p.new, p.cached, a, b, sim, self.vocab, band, term_veto=term_veto)
        self.verify_s.append(time.perf_counter() - t0)
        return ok


def table(judge: Judge, sets: dict[str, list[Pair]], band: Band, title: str) -> None:
    print(
        f"\n### {title}: floor {band.floor}, ceiling {band.ceiling}, align {band.align}, "
        f"cross-encoder cut {band.cut}, reach {band.reach}, "
        f"one-sided term veto overruled at {band.term_cut} (inf: never)\n"
    )
    print("| set | family | served from cache | reading |\n|---|---|---|---|")
    for name, pairs in sets.items():
        fams = sorted({p.family for p in pairs})
        kinds = [*fams, "ALL"] if len(fams) > 1 else ["ALL"]
        for fam in kinds:
            sub = [p for p in pairs if fam in ("ALL", p.family)]
            k = sum(judge.hit(p, band) for p in sub)
            reading = "true hits" if sub[0].same else "false hits"
            print(f"| {name} | {fam} | {cell(k, len(sub))} | {reading} |")


def curve(judge: Judge, sets: dict[str, list[Pair]]) -> None:
    print(
        "\n### Curve (held-out): false hits on near-misses + non-duplicates, true hits on paraphrases\n"
    )
    neg = sets["held:near"] + sets["held:nondup"]
    pos, gpos = sets["held:para"], sets["seen:gpt_para"]
    print(
        "| setting | floor | align | cut | near-miss+nondup false hits | paraphrase true hits "
        "| GPTCache true hits (seen) |"
    )
    print("|---|---|---|---|---|---|")
    rows: list[tuple[str, Band, bool]] = [
        ("guard only, old default", Band(0.90, 1.0, 0.0), False),
        ("guard only", Band(0.80, 1.0, 0.0), False),
    ]
    rows += [(f"target {t}", b, True) for t, b in sorted(BAND_PRESETS.items())]
    rows += [("target 0.01, alignment only (v3 verifier)", Band(0.80, 1.0, 0.85), True)]
    rows += [
        (f"band {f}/{a}/{c}", Band(f, 1.0, a, c), True)
        for f in (0.80, 0.85)
        for a in (0.80, 0.85)
        for c in (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0)
    ]
    for label, band, verifier in rows:
        fk = sum(judge.hit(p, band, verifier=verifier) for p in neg)
        tk = sum(judge.hit(p, band, verifier=verifier) for p in pos)
        gk = sum(judge.hit(p, band, verifier=verifier) for p in gpos)
        print(
            f"| {label} | {band.floor} | {band.align if verifier else '-'} "
            f"| {band.cut if verifier and band.judges else '-'} | {cell(fk, len(neg))} "
            f"| {cell(tk, len(pos))} | {cell(gk, len(gpos))} |"
        )


def show_misses(judge: Judge, sets: dict[str, list[Pair]], band: Band) -> None:
    print("\nheld-out near-misses served at the default band:")
    for p in sets["held:near"] + sets["held:nondup"]:
        if judge.hit(p, band):
            print(f"  [{p.family}] {judge.cosine(p):.3f} {p.cached!r} -> {p.new!r}")
    print("held-out paraphrases refused at the default band:")
    for p in sets["held:para"]:
        if not judge.hit(p, band):
            why = near_miss(p.new, p.cached) or (
                "floor" if judge.cosine(p) < band.floor else "verifier"
            )
            print(f"  ({why}) {judge.cosine(p):.3f} {p.cached!r} -> {p.new!r}")


def show_seen_misses(judge: Judge, sets: dict[str, list[Pair]], band: Band, prefix: str) -> None:
    """Every refused paraphrase and served negative of the sets named ``prefix``..., with why."""
    for name, pairs in sets.items():
        if not name.startswith(prefix) or name.startswith("held:"):
            continue
        for p in pairs:
            if judge.hit(p, band) == p.same:
                continue
            cos = judge.cosine(p)
            if p.same:
                why = near_miss(p.new, p.cached) or ("floor" if cos < band.floor else "verifier")
                print(f"  {name} refused ({why}) {cos:.3f} {p.cached!r} -> {p.new!r}")
            else:
                print(f"  {name} served [{p.family}] {cos:.3f} {p.cached!r} -> {p.new!r}")


def speed(judge: Judge, texts: list[str]) -> None:
    t0 = time.perf_counter()
    for t in texts:
        judge.model.embed_one(t)
    ms = (time.perf_counter() - t0) / len(texts) * 1000
    v = sorted(judge.verify_s)
    print(
        f"\none embedding with token vectors: {ms:.2f} ms mean over {len(texts)} texts; "
        f"verify(): p50 {1e6 * v[len(v) // 2]:.0f} us, p99 {1e6 * v[int(len(v) * 0.99)]:.0f} us "
        f"over {len(v)} calls"
    )


async def _lookups(model: OnnxMiniLM, texts: list[str], ceiling: float) -> list[float]:
    """In-process semantic hits, one at a time: embed, hnswlib search, record get, guard,
    verifier (below ``ceiling``). Each asked text is new ("Please tell me: " + stored)."""
    emb = LocalEmbedder(model)
    cache = SemanticCache(emb, HnswIndex(), MemoryExactCache(), vocabulary=model.vocabulary())
    cfg = CacheConfig(semantic_ttl_s=3600, semantic_band=(0.8, ceiling))
    ms: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(emb.run)
        for t in texts:
            await cache.store(_req(t), "team:x", "chat", cfg, _ENTRY, now=0.0)
        for t in texts:
            t0 = time.perf_counter()
            out = await cache.lookup(_req("Please tell me: " + t), "team:x", "chat", cfg, now=1.0)
            if out.hit is not None:
                ms.append(1000 * (time.perf_counter() - t0))
        nursery.cancel_scope.cancel()
    return sorted(ms)


def _req(text: str) -> ChatRequest:
    chat = {"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    return ChatRequest("openai", chat, chat, "chat", False, False, None)


_ENTRY = CacheEntry("answer", "stop", Usage(10, 5), "m", 0.001, 0.0)


def verifier_cost(judge: Judge, pairs: list[Pair]) -> None:
    """What a band hit adds: decode the stored record (entry + float16 token vectors) and
    verify the pair, timed in CPU seconds of this thread (less sensitive to other load)."""
    cpu: list[float] = []
    wall: list[float] = []
    for p in pairs:
        new, old = judge.embed(p.new).tokens, judge.embed(p.cached).tokens
        assert new is not None and old is not None
        raw = SemanticRecord(_ENTRY, old, "w").to_bytes()
        c0, w0 = time.thread_time(), time.perf_counter()
        rec = SemanticRecord.from_bytes(raw)
        assert rec.tokens is not None
        serves(p.new, p.cached, new, rec.tokens, judge.cosine(p), judge.vocab, BAND_PRESETS[0.01])
        cpu.append(1000 * (time.thread_time() - c0))
        wall.append(1000 * (time.perf_counter() - w0))
    cpu.sort()
    wall.sort()
    n = len(cpu)
    print(
        f"verifier cost per band hit (record decode + alignment + cross-encoder), {n} pairs: CPU p50 "
        f"{cpu[n // 2]:.3f} ms, p99 {cpu[int(n * 0.99)]:.3f} ms; wall p50 {wall[n // 2]:.3f} ms"
    )


async def _breakdown(model: OnnxMiniLM, texts: list[str]) -> dict[str, list[float]]:
    """Each stage of an in-process semantic hit, in the order ``SemanticCache.lookup`` runs
    them, timed one hit at a time: wall ms per stage, and process CPU ms for the embedding."""
    emb = LocalEmbedder(model)
    vocab = model.vocabulary()
    index, entries = HnswIndex(), MemoryExactCache()
    cache = SemanticCache(emb, index, entries, vocabulary=vocab)
    cfg = CacheConfig(semantic_ttl_s=3600)
    out: dict[str, list[float]] = {}

    def add(stage: str, t0: float) -> float:
        t1 = time.perf_counter()
        out.setdefault(stage, []).append(1000 * (t1 - t0))
        return t1

    async with trio.open_nursery() as nursery:
        await nursery.start(emb.run)
        for t in texts:
            await cache.store(_req(t), "team:x", "chat", cfg, _ENTRY, now=0.0)
        for t in texts:
            asked = "Please tell me: " + t
            t0 = time.perf_counter()
            ids = model.ids(asked)
            t0 = add("tokenize", t0)
            c0 = time.process_time()
            model.run_embeddings([ids])
            out.setdefault("model CPU (all threads)", []).append(1000 * (time.process_time() - c0))
            t0 = add("model run (this thread)", t0)
            e = await emb.embed(asked)
            t0 = add("embed via the embedder (thread hop + tokenize + run)", t0)
            assert e is not None and e.tokens is not None
            ns = semantic_namespace(_req(asked), "team:x", "chat")
            hits = await index.search(ns, e.vec, 1, now=1.0)
            t0 = add("index search (hnswlib, thread hop)", t0)
            raw = await entries.get(f"{ns}:{hits[0].entry_id}", now=1.0)
            rec = SemanticRecord.from_bytes(raw or b"")
            t0 = add("record get + decode", t0)
            near_miss(asked, hits[0].prompt)
            t0 = add("guard", t0)
            assert rec.tokens is not None
            serves(asked, hits[0].prompt, e.tokens, rec.tokens, hits[0].similarity, vocab,
                   BAND_PRESETS[0.01])  # fmt: skip
            add("verifier", t0)
            t0 = time.perf_counter()
            hit = await cache.lookup(_req(asked), "team:x", "chat", cfg, now=1.0)
            add("whole lookup (embed again + all of the above)", t0)
            del hit
        nursery.cancel_scope.cancel()
    return out


def breakdown(model: OnnxMiniLM, texts: list[str]) -> None:
    out = trio.run(_breakdown, model, texts)
    print(f"\nwhere a semantic hit's time goes ({len(texts)} unique texts, one at a time):")
    print("| stage | p50 ms | p90 ms | mean ms |\n|---|---|---|---|")
    for stage, ms in out.items():
        ms.sort()
        print(
            f"| {stage} | {ms[len(ms) // 2]:.3f} | {ms[int(len(ms) * 0.9)]:.3f} "
            f"| {sum(ms) / len(ms):.3f} |"
        )


def lookup_speed(model: OnnxMiniLM, texts: list[str]) -> None:
    for ceiling, label in ((1.0, "verifier on"), (0.8, "verifier off (ceiling = floor)")):
        ms = trio.run(_lookups, model, texts, ceiling)
        print(
            f"in-process semantic hit, {label}: {len(ms)} hits of {len(texts)}, "
            f"p50 {ms[len(ms) // 2]:.2f} ms, p90 {ms[int(len(ms) * 0.9)]:.2f} ms"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--curve", action="store_true", help="also the held-out curve by setting")
    ap.add_argument("--speed", action="store_true", help="also time embedding and verify()")
    ap.add_argument("--show-misses", action="store_true")
    ap.add_argument(
        "--show-seen-misses",
        metavar="PREFIX",
        help="misses of the seen/tuning sets named PREFIX...",
    )
    ap.add_argument("--speed-only", action="store_true", help="only the in-process hit timing")
    ap.add_argument("--breakdown", action="store_true", help="only a semantic hit's stages")
    ap.add_argument(
        "--model", help="another ONNX file of the same model (default: the shipped quantized one)"
    )
    ap.add_argument("--held", default=str(HELD) if HELD.exists() else "none",
                    help="the held-out set (default: v25 if present; 'none': every set is seen)")  # fmt: skip
    args = ap.parse_args()
    judge = Judge(OnnxMiniLM(args.model))
    sets = load_sets(Path(args.held) if args.held != "none" else None)
    if args.breakdown:
        breakdown(judge.model, [p.cached for p in sets["seen:gpt_para"]][:300])
        return
    if args.speed_only:
        verifier_cost(judge, sets["seen:gpt_para"][:300])
        lookup_speed(judge.model, [p.cached for p in sets["seen:gpt_para"]][:300])
        return
    t0 = time.perf_counter()
    for pairs in sets.values():
        for p in pairs:
            judge.cosine(p)
    print(f"embedded {len(judge.memo)} texts in {time.perf_counter() - t0:.1f} s")
    default = route_band(CacheConfig())
    held = {k: v for k, v in sets.items() if k.startswith("held:")}
    extra = {k: v for k, v in sets.items() if k.startswith("extra:")}
    tune = {k: v for k, v in sets.items() if k.startswith("tune:")}
    seen = {k: v for k, v in sets.items() if k.startswith("seen:")}
    if held:
        table(judge, held, default, f"Held-out ({args.held}), default settings (target 0.01)")
        for target, band in sorted(BAND_PRESETS.items()):
            if band != default:
                table(judge, held, band, f"Held-out ({args.held}), target false-hit {target}")
    table(
        judge,
        seen,
        default,
        "Seen (v1-v24, GPTCache odd; all but v20-v24 trained the cross-encoder), default",
    )
    table(judge, tune, default, "Tuning sets, default settings")
    table(judge, extra, default, "Pairs written to train the (former) pair model, default")
    if args.curve and held:
        curve(judge, sets)
    if args.show_misses and held:
        show_misses(judge, sets, default)
    if args.show_seen_misses:
        print(
            f"\nseen and tuning sets {args.show_seen_misses}*: refused paraphrases, served negatives"
        )
        show_seen_misses(judge, sets, default, args.show_seen_misses)
    if args.speed:
        speed(judge, [p.new for p in sets["seen:gpt_para"]][:300])
        verifier_cost(judge, sets["seen:gpt_para"][:300])
        lookup_speed(judge.model, [p.cached for p in sets["seen:gpt_para"]][:300])


if __name__ == "__main__":
    main()
