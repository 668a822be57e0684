"""CPU to take in one long upstream event in small reads: the SSE parser and the verbatim tap.

    .venv/bin/python loadtest/sse_long_event.py [--commits 924194f HEAD] [--mib 8 32]
        [--read 16384] [--rounds 3]

Per commit (its sources from a ``git archive`` snapshot, in a child Python, as
``relay_bench.py``; commits interleaved round by round): a first OpenAI chunk, then one
content chunk of ``--mib`` MiB with its blank line (32 MiB is
:data:`~trioproxy.core.sse.MAX_EVENT_BYTES`: the largest event a stream may send) in reads
of ``--read`` bytes, fed to

* :class:`~trioproxy.core.sse.SSEParser` (the decoding relay's parser: one data line, open
  for every read but the last);
* :class:`~trioproxy.providers.passthrough.PassthroughTap` (the verbatim relay: the event
  open for every read but the last).

Printed per commit, size and reader: process CPU seconds of the reads that leave the event
open (what a buffer that copies and rescans everything kept so far makes quadratic), and of
the whole event (the last read parses / counts the finished event: linear in its size), the
median of ``--rounds``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import common

FIRST = (
    b'data: {"id":"chatcmpl-load","object":"chat.completion.chunk","created":0,"model":"m",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
)
HEAD = (
    b'data: {"id":"chatcmpl-load","object":"chat.completion.chunk","created":0,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"'
)
TAIL = b'"},"finish_reason":null}]}\n\n'


def event(size: int) -> bytes:
    """One content chunk of ``size`` bytes with its blank line."""
    text = b"lorem ipsum dolor sit amet " * (size // 27 + 1)
    return HEAD + text[: size - len(HEAD) - len(TAIL)] + TAIL


def child(sizes: list[int], read: int) -> None:
    import trioproxy
    from trioproxy.core.sse import SSEParser
    from trioproxy.providers.passthrough import PassthroughTap

    print(next(iter(trioproxy.__path__)), file=sys.stderr)
    out: dict[str, list[float]] = {}
    for mib in sizes:
        data = event(mib * 1024 * 1024)
        reads = [data[i : i + read] for i in range(0, len(data), read)]
        for name in ("parser", "tap"):
            feed = (
                SSEParser().feed
                if name == "parser"
                else PassthroughTap("openai", include_usage=True).feed
            )
            feed(FIRST)
            t0 = time.process_time()
            for chunk in reads[:-1]:
                feed(chunk)
            t1 = time.process_time()
            got = feed(reads[-1])
            t2 = time.process_time()
            if name == "parser":
                assert len(got) == 1, got  # type: ignore[arg-type]
            else:
                assert got.forward == data, len(got.forward)  # type: ignore[union-attr]
            out[f"{mib}:{name}"] = [t1 - t0, t2 - t0]
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commits", nargs="+", default=["924194f", "HEAD"])
    p.add_argument("--mib", nargs="+", type=int, default=[8, 32])
    p.add_argument("--read", type=int, default=16 * 1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.mib, args.read)
        return
    per: dict[tuple[str, str], list[list[float]]] = {}
    for _ in range(args.rounds):  # interleaved: the box's load moves both alike
        for commit in args.commits:
            tree = common.source_tree(commit)
            cmd = [sys.executable, __file__, "--child", "--read", str(args.read), "--mib"]
            out = subprocess.run(
                [*cmd, *map(str, args.mib)], env={**os.environ, "PYTHONPATH": f"{tree}"},
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            for key, times in json.loads(out.stdout.strip().splitlines()[-1]).items():
                per.setdefault((commit, key), []).append(times)
    print(f"one event in reads of {args.read} bytes; CPU seconds, median of {args.rounds}")
    for (commit, key), runs in per.items():
        mib, name = key.split(":")
        open_s = statistics.median(r[0] for r in runs)
        whole = statistics.median(r[1] for r in runs)
        print(f"{commit:>10} {mib:>3} MiB {name:<6}  open reads {open_s:8.3f} s   "
              f"whole event {whole:8.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
