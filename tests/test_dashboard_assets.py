"""The dashboard's assets, session key and mounting: vendored htmx, no CDN, no lifespan."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import httpx
import pytest
import trio

from tests.test_dashboard import start
from trioproxy.config.model import DashboardConfig
from trioproxy.dashboard.http_helpers import local_target
from trioproxy.dashboard.paths import asset_dir, session_secret
from trioproxy.edge.auth import KeyRing
from trioproxy.edge.services import Supervisor

REPO = Path(__file__).resolve().parents[1]


async def test_htmx_is_served_from_static_without_login(nursery: trio.Nursery) -> None:
    g = await start(nursery)
    async with httpx.AsyncClient(base_url=g.admin_url, follow_redirects=False) as c:
        r = await c.get("/static/htmx.min.js")
        assert r.status_code == 200
        assert "javascript" in r.headers["content-type"]
        assert r.text.startswith("/*! htmx.org 2.0.11") and "htmx:load" in r.text
        assert (await c.get("/static/dashboard.css")).status_code == 200
        escape = await c.get("/static/%2e%2e/pyproject.toml")
        assert escape.status_code == 404 and "[project]" not in escape.text
        login = (await c.get("/login")).text
        assert '<script src="/static/htmx.min.js"></script>' in login


def test_templates_load_nothing_from_another_site() -> None:
    files = [*(REPO / "templates").rglob("*.html"), *(REPO / "static").glob("*.css")]
    assert len(files) >= 8
    for path in files:
        text = path.read_text()
        assert not re.search(r"(https?:)?//[\w.-]+\.[a-z]{2,}", text), path
        for cdn in ("unpkg", "jsdelivr", "cdnjs", "googleapis"):
            assert cdn not in text, path


def test_dashboard_needs_no_lifespan(tmp_path: Path) -> None:
    """The app is mounted without its ASGI lifespan; it must not rely on one."""
    from trioproxy.dashboard.app import create_dashboard

    class FakeGateway:  # only what create_dashboard reads at build time
        keys = KeyRing({})
        services = Supervisor([])  # the dashboard adds its heartbeat to the gateway's
        admission = None  # no budgets: no alert sink to give a history

        class settings:
            dashboard = DashboardConfig()

            class storage:
                state_dir = str(tmp_path)
                database_url = None

    gw = FakeGateway()
    app = create_dashboard(gw)  # type: ignore[arg-type]
    assert [s.name for s in gw.services.services] == ["dashboard-heartbeat", "dashboard-store"]
    assert app.before_serving_funcs == []
    assert app.while_serving_gens == []
    assert app.after_serving_funcs == []


def test_assets_are_found_in_the_package_or_beside_it(tmp_path: Path) -> None:
    assert asset_dir("templates") == REPO / "templates"
    installed = tmp_path / "site-packages" / "trioproxy"
    (installed / "static").mkdir(parents=True)
    assert asset_dir("static", package_dir=installed) == installed / "static"
    (tmp_path / "site-packages" / "static").mkdir()  # a package's own copy wins
    assert asset_dir("static", package_dir=installed) == installed / "static"
    with pytest.raises(FileNotFoundError, match="templates"):
        asset_dir("templates", package_dir=installed)


def test_htmx_ships_with_its_licence() -> None:
    assert "Zero-Clause BSD" in (REPO / "static" / "htmx.LICENSE").read_text()
    assert "license 0BSD" in (REPO / "static" / "htmx.min.js").read_text()[:300]


def test_session_secret_is_made_once_per_state_dir(tmp_path: Path) -> None:
    first = session_secret(tmp_path / "state")
    assert len(first) == 32 and session_secret(tmp_path / "state") == first
    assert session_secret(tmp_path / "other") != first
    (key_file,) = (tmp_path / "state").iterdir()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/cache", "/cache"),
        ("/providers?x=1", "/providers?x=1"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_login_only_redirects_within_the_site(raw: str | None, expected: str) -> None:
    assert local_target(raw) == expected


async def test_a_dashboard_that_cannot_mount_leaves_the_proxy_serving(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    from tests.fixtures_gateway import DEMO_KEY, start_gateway, start_simulator
    from trioproxy.config import demo_settings
    from trioproxy.dashboard import paths

    monkeypatch.setattr(paths, "PACKAGE_DIR", tmp_path / "site-packages" / "trioproxy")
    sim = await start_simulator(nursery)
    g = await start_gateway(nursery, demo_settings(sim.url, DEMO_KEY, state_dir=str(tmp_path)))
    assert g.app.inner is None
    assert "dashboard not mounted" in caplog.text and "static/ directory not found" in caplog.text
    auth = {"authorization": f"Bearer {DEMO_KEY}"}
    async with httpx.AsyncClient(base_url=g.url, timeout=30) as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/login")).status_code == 404
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        r = await c.post("/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
