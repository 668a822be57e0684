"""``trioproxy`` command line: serve, simulate, check-config, report."""

from __future__ import annotations

import argparse
import logging
import os
import queue
import secrets
import signal
import sys
import threading
from typing import Any

import trio

from trioproxy.server.factory import ENV_CONFIG, ENV_DEMO_KEY, ENV_SIM_URL

DEFAULT_PORT = 8080
DEFAULT_SIM_PORT = 9090


def _start_demo_simulator(host: str) -> str:
    """Run the provider simulator on a thread of this process; return its base URL."""
    from trioproxy.simulator import Simulator

    ports: queue.Queue[int] = queue.Queue(maxsize=1)

    async def run() -> None:
        sim = Simulator()
        async with trio.open_nursery() as nursery:
            ports.put(await nursery.start(sim.serve, host, 0))

    threading.Thread(target=trio.run, args=(run,), name="simulator", daemon=True).start()
    return f"http://{host}:{ports.get(timeout=10)}"


def cmd_serve(args: argparse.Namespace) -> int:
    from hypercorn.config import Config
    from hypercorn.run import run

    from trioproxy.config import ConfigError, load_settings

    if args.config:
        try:
            settings = load_settings(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        os.environ[ENV_CONFIG] = os.path.abspath(args.config)
        grace = settings.server.shutdown_grace_s
    else:
        key = os.environ.get(ENV_DEMO_KEY) or "tp-demo-" + secrets.token_urlsafe(18)
        os.environ[ENV_DEMO_KEY] = key
        os.environ[ENV_SIM_URL] = _start_demo_simulator("127.0.0.1")
        grace = 10.0
        print(
            "\n  trioproxy DEMO MODE: no config given, so every answer comes from the built-in\n"
            "  provider SIMULATOR (fake text, no real model, no cost). Pass --config FILE\n"
            "  to reach real providers.\n"
            f"  simulator: {os.environ[ENV_SIM_URL]}\n"
            f"  demo API key: {key}\n"
            f"  try: OPENAI_BASE_URL=http://{args.host}:{args.port}/v1 OPENAI_API_KEY={key}\n",
            flush=True,
        )
    config = Config()
    config.application_path = "trioproxy.server.factory:from_env()"
    config.bind = [f"{args.host}:{args.port}"]
    config.worker_class = "trio"
    config.workers = args.workers
    config.backlog = 4096
    config.graceful_timeout = grace
    config.keep_alive_timeout = 75
    config.accesslog = None
    print(
        f"trioproxy listening on http://{args.host}:{args.port} ({args.workers} worker(s))",
        flush=True,
    )
    if args.workers == 1:
        trio.run(_serve_in_process, config)
        return 0
    return run(config)


async def _serve_in_process(config: Any) -> None:
    """One worker, in this process: SIGTERM/SIGINT start hypercorn's graceful shutdown
    (in-flight requests get ``graceful_timeout``, then the app's lifespan flushes the ledger)."""
    from hypercorn.trio import serve

    from trioproxy.server.factory import from_env

    async def on_signal() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                return

    await serve(from_env(), config, shutdown_trigger=on_signal)  # type: ignore[arg-type]


def cmd_simulate(args: argparse.Namespace) -> int:
    from trioproxy.simulator import main_simulate

    main_simulate(args.host, args.port)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from trioproxy.config import check_config

    return check_config(args.file)


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print the hash for a ``[dashboard.users.<name>]`` entry; the password is read from
    stdin when piped, else asked for without echo."""
    import getpass

    from trioproxy.admin.passwords import hash_password

    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
    if not password:
        print("empty password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trioproxy", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway (demo mode without --config)")
    s.add_argument("--config", help="TOML config file (default: built-in demo over the simulator)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=DEFAULT_PORT)
    s.add_argument("--workers", type=int, default=1)
    s.set_defaults(func=cmd_serve)
    m = sub.add_parser(
        "simulate", help="run the provider simulator (OpenAI + Anthropic wire formats)"
    )
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=DEFAULT_SIM_PORT)
    m.set_defaults(func=cmd_simulate)
    sub.add_parser(
        "report", help="spend by team/feature/user/model/route/day from the ledger "
        "(trioproxy report --help)"
    )  # fmt: skip
    h = sub.add_parser("hash-password", help="hash a dashboard user's password (for the config)")
    h.set_defaults(func=cmd_hash_password)
    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("file")
    c.set_defaults(func=cmd_check_config)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:  # its own parser (and --help) lives with the ledger
        from trioproxy.ledger.report import report_main

        return report_main(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):  # a line per upstream request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("hypercorn.error").propagate = False  # hypercorn logs it already
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
