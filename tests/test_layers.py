"""The package's layers: nothing imports upward (ARCHITECTURE.md, "Layers").

Every ``trioproxy.*`` import in every module, including imports inside functions, is checked
against the layer order below; a module may import its own layer and the layers beneath it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trioproxy"

LAYERS: list[set[str]] = [
    {"core", "errors"},  # pure values and the error vocabulary
    {"providers", "dialects"},  # provider wire formats and caller dialects (sans-IO)
    {
        "config",
        "store",
        "telemetry",
    },  # settings (provider kinds from providers/registry), Redis client, logs and traces
    {"budget", "cache", "ledger", "admin"},  # state: budgets, caches, ledger, dashboard accounts
    {"breakers", "upstream"},  # breakers and the upstream race
    {"pipeline"},  # the request pipeline
    {"edge", "httpd"},  # the HTTP edge: the ASGI app, and the data-plane server
    {"dashboard"},  # the control plane's pages and admin API
    {"server"},  # wiring: builds the app from settings
    {"cli", "simulator", "__main__"},  # entry points and tools
]
RANK = {room: rank for rank, rooms in enumerate(LAYERS) for room in rooms}


def _room(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else module


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("trioproxy."):
                found.append(node.module)
            elif node.module == "trioproxy":
                found.extend(f"trioproxy.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.startswith("trioproxy."))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem != "__init__")


def test_every_room_has_a_layer() -> None:
    rooms = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in MODULES}
    rooms.discard("__init__")
    assert rooms <= set(RANK), f"rooms without a layer: {sorted(rooms - set(RANK))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_upward_import(path: Path) -> None:
    here = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    upward = [m for m in _imports(path) if RANK.get(_room(m), -1) > RANK.get(here, len(LAYERS))]
    assert not upward, f"{here} (layer {RANK.get(here)}) imports upward: {upward}"


REQUEST_PATH = ("edge", "pipeline", "upstream", "breakers")


@pytest.mark.parametrize("room", REQUEST_PATH)
def test_request_path_does_not_look_up_models_or_providers_by_name(room: str) -> None:
    """Targets are resolved once at config load (config/resolve.py): ``target.spec``."""
    for path in (PACKAGE / room).rglob("*.py"):
        text = path.read_text()
        for needle in (".models[", ".providers[", ".models.get(", ".providers.get("):
            assert needle not in text, f"{path.relative_to(PACKAGE)} looks up by name: {needle}"


@pytest.mark.parametrize(
    "module", ["trioproxy.cli", "trioproxy.server.worker", "trioproxy.edge.app"]
)
def test_the_data_plane_does_not_import_numpy(module: str) -> None:
    """numpy (with the embedder and vector index, ~13.5 MB of RSS per worker) is the semantic
    cache's: a gateway without a semantic route never imports it."""
    code = f"import sys, {module}; print('numpy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize("module", ["trioproxy.cli", "trioproxy.server.runner"])
def test_the_supervisor_does_not_import_the_gateway(module: str) -> None:
    """``serve``'s supervisor (cli.py, then server/runner.py) binds, claims and supervises; the
    gateway, the dashboard and prometheus-client are its children's (~10 MB of its RSS)."""
    code = (f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith("
            "('trioproxy.edge.app', 'trioproxy.server.factory', 'trioproxy.dashboard', "
            "'trioproxy.pipeline', 'quart', 'hypercorn', 'prometheus_client'))))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert proc.stdout.strip() == "[]"


SUPERVISOR_SKIPS = ("trio", "httptools", "ssl", "_hashlib", "quart", "hypercorn",
                    "prometheus_client", "trioproxy.httpd.server", "trioproxy.edge",
                    "trioproxy.server.readiness", "trioproxy.config",
                    "importlib.metadata")  # fmt: skip


def test_the_supervisor_runs_without_an_event_loop(tmp_path: Path) -> None:
    """``serve`` up to the start of its children, for real (config check, bind, claim,
    banner): no Trio or ssl (~14 MB of RSS), no httptools or data-plane server, no hashlib
    (OpenSSL's libcrypto, ~3.6 MB), no config package (checked in a process of its own,
    ``server/plan.py``: ~3.6 MB) nor importlib.metadata (the banner's version comes with the
    check)."""
    cfg = tmp_path / "trioproxy.toml"
    cfg.write_text(
        "[server]\nadmin_port = 0\n[storage]\n"
        f'state_dir = "{tmp_path}"\n[[api_keys]]\nname = "k"\nkey_sha256 = "{"0" * 64}"\n'
        'team = "t"\n[providers.p]\nkind = "openai"\nbase_url = "http://127.0.0.1:9"\n'
        'api_key_env = "HOME"\n[models.m]\nprovider = "p"\ninput_per_mtok = 1.0\n'
        "output_per_mtok = 1.0\n"
    )
    code = (
        "import sys\nfrom trioproxy import cli\nfrom trioproxy.server import runner\n"
        "def run(self):\n"
        "    self.on_ready()\n"  # as once every child accepts connections: the banner
        f"    print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in {SUPERVISOR_SKIPS!r}\n"
        f"          or m.startswith({tuple(s + '.' for s in SUPERVISOR_SKIPS)!r})))\n"
        "    return 0\n"
        "runner.Supervisor.run = run\n"
        f"sys.exit(cli.main(['serve', '--config', {str(cfg)!r}, '--port', '0']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "trioproxy starting on http://127.0.0.1:" in proc.stdout  # then the children
    assert "listening on http://127.0.0.1:" in proc.stdout  # the banner, once they accept
    assert proc.stdout.strip().splitlines()[-1] == "LOADED []"


@pytest.mark.parametrize(
    "module", ["trioproxy.server.worker", "trioproxy.server.control", "trioproxy.server.factory"]
)
def test_serving_processes_import_httpx_only_to_send(module: str) -> None:
    """httpx (with the CLI modules its package imports: ~5 MB of RSS per process) is for an
    alert webhook and the OpenAI embedder; neither a worker nor the control plane loads it
    until one is sent or built."""
    code = f"import sys, {module}; print('httpx' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize(
    "module", ["trioproxy.server.worker", "trioproxy.server.control", "trioproxy.server.factory"]
)
def test_serving_processes_import_the_redis_client_only_with_redis(module: str) -> None:
    """hiredis and the Redis client, store and state-loss recovery (~0.6 MB of RSS per
    process) are loaded by ``factory.py`` only for a config with ``storage.redis_url``."""
    code = (f"import sys, {module}; print(sorted(m for m in sys.modules if m in ('hiredis', "
            "'trioproxy.store.redis_client', 'trioproxy.budget.redis_store', "
            "'trioproxy.budget.recovery')))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert proc.stdout.strip() == "[]"


def test_importing_the_dashboard_runs_no_scrypt() -> None:
    """The unknown-user hash is a constant (dashboard/access.py): the control plane's start
    no longer spends 16 MB at once on it."""
    code = ("import hashlib, sys; calls = []; real = hashlib.scrypt\n"
            "hashlib.scrypt = lambda *a, **k: calls.append(1) or real(*a, **k)\n"
            "import trioproxy.dashboard.app; print(len(calls))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert proc.stdout.strip() == "0"
