"""``trioproxy`` command line: serve, simulate, check-config, report.

Each command imports what it runs, inside its function: ``serve``'s supervisor process
(``server/runner.py``) holds the sockets and the values of the config it uses
(``server/plan.py``: the config is checked in a short-lived process), not the config package
nor the gateway its workers build."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from trioproxy.server.plan import version
from trioproxy.telemetry.logs import FORMATS, LEVELS, configure_logging

DEFAULT_PORT = 8080
DEFAULT_SIM_PORT = 9090


def _start_demo_simulator(host: str) -> str:
    """Run the provider simulator on a thread of this process; return its base URL."""
    import queue
    import threading

    import trio

    from trioproxy.simulator import Simulator

    ports: queue.Queue[int] = queue.Queue(maxsize=1)

    async def run() -> None:
        sim = Simulator()
        async with trio.open_nursery() as nursery:
            ports.put(await nursery.start(sim.serve, host, 0))

    threading.Thread(target=trio.run, args=(run,), name="simulator", daemon=True).start()
    return f"http://{host}:{ports.get(timeout=10)}"


class _Version(argparse.Action):
    """``--version``, looked up only when asked (``importlib.metadata`` is ~1 MB of RSS that
    ``serve``'s supervisor would otherwise keep for its whole life)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:  # fmt: skip
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        sys.stdout.write(f"trioproxy {version()}\n")  # (where argparse's own action writes)
        parser.exit()


def banner(
    url: str, dashboard_url: str | None, state_dir: str, workers: int, version_: str = ""
) -> str:
    """What ``serve`` prints once it listens: where to send requests, where the dashboard is,
    where state lives."""
    return (
        f"trioproxy {version_ or version()} listening on {url} ({workers} worker(s))\n"
        f"  API:       OPENAI_BASE_URL={url}/v1  ANTHROPIC_BASE_URL={url}\n"
        f"  dashboard: {dashboard_url or 'not mounted'}\n"
        f"  state:     {os.path.abspath(state_dir)}"
    )


def _tcp_port(raw: str) -> int:
    """``--port`` / ``--admin-port``: 0-65535, as the config's ``admin_port`` (99999 listened
    on 34463, the number modulo 65536, and -1 ended in a traceback)."""
    try:
        n = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (0-65535), got {n}")
    return n


def _at_least_one(raw: str) -> int:
    """``--workers``: a whole number of at least 1 (0 or -1 listened nowhere and ran on)."""
    try:
        n = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def cmd_serve(args: argparse.Namespace) -> int:
    from trioproxy.server import environ as env
    from trioproxy.server.plan import PlanFailed, ServePlan, plan_of
    from trioproxy.server.ready_files import ENV_RUN_DIR
    from trioproxy.server.runner import serve
    from trioproxy.telemetry.metrics_dir import MULTIPROC_ENV

    configure_logging(args.log_level, args.log_format)  # this process; workers: worker.main()
    os.environ[env.ENV_LOG_LEVEL], os.environ[env.ENV_LOG_FORMAT] = args.log_level, args.log_format
    if args.config:
        try:  # checked in a process of its own: this one never loads the config package
            plan = plan_of(args.config)
        except PlanFailed:
            return 1  # (the check printed the config's problems)
        os.environ[env.ENV_CONFIG] = os.path.abspath(args.config)
    else:
        from trioproxy.config.demo import DEMO_STATE_DIR, demo_settings
        from trioproxy.server.plan import startup_problems

        # serve's start-up checks, as with a config (the state dir is made once bound)
        demo = demo_settings("http://127.0.0.1:9", "tp-demo-", state_dir=DEMO_STATE_DIR)
        if problems := startup_problems(demo, make=False):
            for problem in problems:
                print(problem, file=sys.stderr)
            return 1
        os.environ[env.ENV_SIM_URL] = _start_demo_simulator("127.0.0.1")
        # (the plan's values do not depend on the key: it is kept in ./var once bound)
        plan = ServePlan.of(env.settings_from_env({**os.environ, env.ENV_DEMO_KEY: "tp-demo-"}),
                            version())  # fmt: skip

    def prepare() -> None:
        """Once the ports are bound: the demo's state (a busy port leaves none behind)."""
        if not args.config:
            from trioproxy.config.demo import DEMO_STATE_DIR

            key = os.environ.get(env.ENV_DEMO_KEY) or demo_key(Path(DEMO_STATE_DIR))
            os.environ[env.ENV_DEMO_KEY] = key

    def announce(bound: Any) -> str:
        scheme = "https" if plan.tls else "http"
        url = f"{scheme}://{args.host}:{bound.port}"
        admin = f"http://{plan.admin_host}:{bound.admin_port}"
        demo = ""
        if not args.config:
            key = os.environ[env.ENV_DEMO_KEY]
            demo = (
                "\n  trioproxy DEMO MODE: no config given, so every answer comes from the "
                "built-in\n  provider SIMULATOR (fake text, no real model, no cost). Pass "
                "--config FILE\n  to reach real providers.\n"
                f"  simulator: {os.environ[env.ENV_SIM_URL]}\n"
                f"  demo API key: {key}\n"
                f"  try: OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY={key}\n\n"
            )
        return demo + banner(url, f"{admin}/login", plan.state_dir, args.workers, plan.version)

    # the run directory: every process's metrics files (summed at every scrape, also with one
    # worker: the control plane scrapes them), the workers' state files (readiness.py) and
    # the config the processes run (config_snapshot.py)
    run_dir = tempfile.mkdtemp(prefix="trioproxy-", dir=os.environ.get("RUNTIME_DIRECTORY"))
    os.environ[ENV_RUN_DIR] = run_dir
    os.environ[MULTIPROC_ENV] = os.path.join(run_dir, "metrics")
    os.mkdir(os.environ[MULTIPROC_ENV])
    try:
        if args.config:
            from trioproxy.server.config_snapshot import take

            take(args.config, run_dir)
        return serve(
            plan, args.host, args.port, args.workers, announce, args.admin_port, prepare=prepare
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.load:
        from trioproxy.simulator.load import main_load

        main_load(args.host, args.port, args.tokens, args.chunk_ms, args.status)
        return 0
    from trioproxy.simulator import main_simulate

    main_simulate(args.host, args.port)
    return 0


def demo_key(state_dir: Path) -> str:
    """The demo's API key (an admin key), kept in ``state_dir/demo-key``: the same key across
    restarts from one folder, so an app's ``.env`` keeps working; made on the first run. A
    kept key is used only from a regular file of this user that nobody else may read or
    write (not a link: another user could otherwise choose the key in a shared folder);
    anything else, or a folder it cannot write, gives a key for this run alone, with a
    warning."""
    import secrets

    path = state_dir / "demo-key"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        fd = -1
    except OSError as exc:  # a link, a folder, unreadable
        print(f"warning: {path} not used ({exc.strerror}); a key for this run only",
              file=sys.stderr)  # fmt: skip
        return "tp-demo-" + secrets.token_urlsafe(18)
    if fd >= 0:
        with os.fdopen(fd) as f:
            st = os.fstat(f.fileno())
            kept = f.read(200).strip() if st.st_uid == os.getuid() else ""
            private = stat.S_ISREG(st.st_mode) and not st.st_mode & 0o077
        if private and kept.startswith("tp-demo-"):
            return kept
        print(f"warning: {path} is not this user's private key file; a key for this run only",
              file=sys.stderr)  # fmt: skip
        return "tp-demo-" + secrets.token_urlsafe(18)
    key = "tp-demo-" + secrets.token_urlsafe(18)
    try:  # whole or not at all: written aside, then renamed into place
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = state_dir / f".demo-key.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        print(f"warning: {path} not written ({exc.strerror}); a key for this run only",
              file=sys.stderr)  # fmt: skip
    return key


def cmd_example_config(args: argparse.Namespace) -> int:
    from trioproxy.dashboard.paths import asset_dir

    unit = {"trioproxy": "trioproxy.service", "simulator": "trioproxy-simulator.service"}
    path = asset_dir("systemd") / unit[args.systemd] if args.systemd else None
    sys.stdout.write((path or asset_dir("examples") / "trioproxy.toml").read_text())
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """The config, then what ``serve`` checks of this machine before it starts (as the unit's
    ``ExecStartPre``, run as the service's user: a state directory it cannot write passed)."""
    from trioproxy.config import check_config
    from trioproxy.server.plan import startup_problems

    return check_config(args.file, also=lambda s: startup_problems(s, make=False))


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print the hash for a ``[dashboard.users.<name>]`` entry; the password is read from
    stdin when piped, else asked for without echo."""
    import getpass

    from trioproxy.admin.passwords import MIN_PASSWORD, hash_password

    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
    if len(password) < MIN_PASSWORD:  # as the Users page asks
        print(f"a password needs at least {MIN_PASSWORD} characters", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


USAGE = """A self-hosted LLM gateway: point the OpenAI or Anthropic SDK at it.

  trioproxy serve                         demo mode: the built-in simulator, no keys needed
  trioproxy serve --config trioproxy.toml real providers (trioproxy example-config > FILE)
  trioproxy check-config trioproxy.toml   validate a config before serving it
  trioproxy report --help                 spend from the ledger"""


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default in its help, unless it has none to show (``None``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    defaults = _Defaults
    p = argparse.ArgumentParser(
        prog="trioproxy", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action=_Version, help="show the version and exit")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve", help="run the gateway (demo mode without --config)", formatter_class=defaults
    )
    s.add_argument("--config", help="TOML config file; none: the built-in demo over the simulator")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--port", type=_tcp_port, default=DEFAULT_PORT, help="port to listen on")
    s.add_argument("--workers", type=_at_least_one, default=1, help="worker processes")
    s.add_argument("--admin-port", type=_tcp_port, default=None,
                   help="port of the dashboard, admin API and /metrics (default: [server] "
                   "admin_port, 8081)")  # fmt: skip
    s.add_argument("--log-level", choices=LEVELS, default="info", help="lowest level logged")
    s.add_argument(
        "--log-format", choices=FORMATS, default="auto",
        help="auto: text on a terminal, one JSON object per line otherwise",
    )  # fmt: skip
    s.set_defaults(func=cmd_serve)
    m = sub.add_parser(
        "simulate", help="run the provider simulator (OpenAI + Anthropic wire formats)",
        formatter_class=defaults,
    )  # fmt: skip
    m.add_argument("--host", default="127.0.0.1", help="address to listen on")
    m.add_argument("--port", type=_tcp_port, default=DEFAULT_SIM_PORT, help="port to listen on")
    m.add_argument(
        "--load", action="store_true",
        help="load mode: precomputed answers, one write per chunk (simulator/load.py)",
    )  # fmt: skip
    m.add_argument("--tokens", type=int, default=50, help="load mode: content chunks per answer")
    m.add_argument("--chunk-ms", type=float, default=20.0, help="load mode: ms between chunks")
    m.add_argument("--status", type=int, default=None, help="load mode: answer every request so")
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
    e = sub.add_parser("example-config", help="print the documented example config")
    e.add_argument("--systemd", nargs="?", const="trioproxy", choices=["trioproxy", "simulator"],
                   help="print a systemd unit instead: the gateway's (the default) or the "
                   "simulator's")  # fmt: skip
    e.set_defaults(func=cmd_example_config)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:  # its own parser (and --help) lives with the ledger
        from trioproxy.ledger.report import report_main

        return report_main(argv[1:])
    configure_logging("info", "auto")
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
