"""The gateway's own CPU per request and per relayed event, in process (no sockets).

Drives the ASGI app (``create_app``) directly with an in-memory transport that answers
at once, so what is measured is trioproxy's request path alone: auth, parse, routing,
context, the race, the relay, records, with no HTTP server, no kernel and no simulator
sharing the CPU. Process CPU time (``time.process_time``) over sequential requests, the
best of ``--rounds`` rounds; robust to other load on the machine, unlike wall time.

    .venv/bin/python loadtest/inprocess.py [--requests 3000] [--events 50] [--rounds 5]
        [--source DIR]   # a snapshot of another commit (git archive), to compare

Rows: non-stream (OpenAI SDK shape, same wire), stream with the same wire (passthrough
relay), stream from the other dialect (Anthropic caller on an OpenAI provider: the
decoding relay).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

ap = argparse.ArgumentParser()
ap.add_argument("--requests", type=int, default=3000)
ap.add_argument("--events", type=int, default=50)
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--source", type=Path, default=None)
ap.add_argument("--calls", action="store_true",
                help="also count Python function calls per request (cProfile): deterministic, "
                "so two commits compare on a busy machine")  # fmt: skip
args = ap.parse_args()
if args.source is not None:
    sys.path.insert(0, str(args.source))

import common  # noqa: E402
import orjson  # noqa: E402
import trio  # noqa: E402

from trioproxy.config import hash_key, parse_settings  # noqa: E402
from trioproxy.edge.app import create_app  # noqa: E402

KEY = "sk-bench"


def sse(n: int) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "m"}
    out = [orjson.dumps({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})]
    for i in range(n):
        delta = {"index": 0, "delta": {"content": f"tok{i} "}}
        out.append(orjson.dumps({**chunk, "choices": [delta]}))
    out.append(orjson.dumps({**chunk, "choices": [{"index": 0, "delta": {},
                                                   "finish_reason": "stop"}]}))  # fmt: skip
    usage = {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n}
    out.append(orjson.dumps({**chunk, "choices": [], "usage": usage}))
    return b"".join(b"data: " + o + b"\n\n" for o in out) + b"data: [DONE]\n\n"


def settings() -> Any:
    return parse_settings({
        "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9",
                            "api_key_env": "K"}},
        "models": {"m": {"provider": "p", "input_per_mtok": 1, "output_per_mtok": 2}},
        "routes": {"r": {"chains": {"default": [{"model": "m"}]}}},
        "api_keys": [{"name": "k", "key_sha256": hash_key(KEY), "team": "t"}],
    }, env={"K": "x"})  # fmt: skip


async def one(app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    await common.asgi_request(app, scope, body, send)
    status = sent[0]["status"]
    assert status == 200, sent
    return sum(len(m.get("body", b"")) for m in sent[1:])


async def bench(name: str, path: str, req: dict[str, Any], units: int) -> None:
    app = create_app(settings(), transport=common.InstantTransport(sse(args.events)))
    headers = [(b"authorization", f"Bearer {KEY}".encode()), (b"x-api-key", KEY.encode()),
               (b"anthropic-version", b"2023-06-01"),
               (b"content-type", b"application/json")]  # fmt: skip
    body = orjson.dumps(req)
    for _ in range(200):  # warm-up
        await one(app, path, body, headers)
    best = float("inf")
    for _ in range(args.rounds):
        t0 = time.process_time()
        for _ in range(args.requests):
            await one(app, path, body, headers)
        best = min(best, time.process_time() - t0)
    per = best / (args.requests * units) * 1e6
    unit = "request" if units == 1 else "event"
    calls = ""
    if args.calls:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(100):
            await one(app, path, body, headers)
        profile.disable()
        calls = f" {pstats.Stats(profile).total_calls / 100:,.0f} |"  # type: ignore[attr-defined]
    print(f"| {name} | {per:,.1f} µs per {unit} | {best / args.requests * 1e6:,.1f} µs per "
          f"request |{calls}", flush=True)  # fmt: skip


async def main() -> None:
    msgs = [{"role": "user", "content": "Say hello."}]
    import trioproxy

    print(f"trioproxy from {next(iter(trioproxy.__path__))}")
    extra = (" calls per request |", "---|") if args.calls else ("", "")
    print(f"| path | CPU | CPU per request |{extra[0]}\n|---|---|---|{extra[1]}")
    await bench("non-stream (OpenAI)", "/v1/chat/completions", {"model": "r", "messages": msgs}, 1)
    n = args.events + 4  # role, content deltas, finish, usage
    stream = {"model": "r", "messages": msgs, "stream": True}
    await bench("stream, same wire (passthrough)", "/v1/chat/completions", stream, n)
    anth = {"model": "r", "messages": msgs, "stream": True, "max_tokens": 100}
    await bench("stream, Anthropic caller (decoded)", "/v1/messages", anth, n)


trio.run(main)
