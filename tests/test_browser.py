"""The dashboard in a real browser: Playwright for Python driving Debian's Chromium.

The gateway (demo config over the simulator, durable ledger, SQLite stores) runs under
hypercorn in a Trio thread of this process; the test drives Chromium through the sync
Playwright API from the main thread and waits only on what the page shows (Playwright's
auto-waiting ``expect``) or on observed server state, never on sleeps.

Screenshots of every page, at 1,280 px and 390 px, go to ``artifacts/screenshots/``
(gitignored; CI keeps them as artefacts).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.chat_client import CHAT_PATH, bearer, chat_body
from tests.dash_fixtures import PASSWORDS, READER_KEY, settings_for
from tests.fixtures_gateway import DEMO_KEY, start_simulator
from trioproxy.edge.app import Gateway
from trioproxy.httpd import open_tcp_socket
from trioproxy.server.factory import build_gateway
from trioproxy.server.sockets import Bound
from trioproxy.server.worker import serve_gateway
from trioproxy.simulator import Simulator
from trioproxy.simulator.faults import Fault

CHROMIUM = Path(os.environ.get("TRIOPROXY_CHROMIUM", "/usr/bin/chromium"))
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
PAGES = (
    "/",
    "/budgets",
    "/spend",
    "/keys",
    "/providers",
    "/cache",
    "/audit",
    "/alerts",
    "/users",
    "/requests",
)
TIMEOUT_MS = 15_000
MISALIGNED_HEADS = """() => [...document.querySelectorAll("table")].flatMap((table) => {
  const heads = [...table.querySelectorAll("thead th")];
  const row = [...table.querySelectorAll("tbody tr")].find((r) => !r.querySelector("[colspan]"));
  return row ? [...row.children].flatMap((cell, i) =>
    heads[i] && getComputedStyle(heads[i]).textAlign !== getComputedStyle(cell).textAlign
      ? [`${table.className}: ${heads[i].textContent}`] : []) : [];
})"""
"""Every table's header cells whose alignment is not their column's (a number's header is
right-aligned over it, as a text's is left-aligned)."""

playwright = pytest.importorskip("playwright.sync_api")
# assertions wait as long as actions do: a busy CI box can take seconds to answer a form
playwright.expect.set_options(timeout=TIMEOUT_MS)
expect = playwright.expect
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} missing (apt-get install chromium; .ci/run does)"
)


@dataclasses.dataclass
class Served:
    url: str
    """The control plane (the dashboard's port)."""
    api_url: str
    gw: Gateway
    sim: Simulator
    token: trio.lowlevel.TrioToken
    stop: Callable[[], None]

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def chat(self, content: str, key: str = DEMO_KEY, **extra: Any) -> httpx.Response:
        return httpx.post(self.api_url + CHAT_PATH, json=chat_body(content, **extra),
                          headers=bearer(key), timeout=30)  # fmt: skip


@contextmanager
def serving() -> Iterator[Served]:
    """A gateway in its own Trio thread, stopped on exit (if its user did not stop it)."""
    ready: queue.Queue[Served | BaseException] = queue.Queue(maxsize=1)
    done = threading.Event()

    async def main() -> None:
        try:
            async with trio.open_nursery() as nursery:
                sim = await start_simulator(nursery)
                gw = build_gateway(settings_for(sim.url))
                bound = Bound(open_tcp_socket("127.0.0.1", 0, reuse_port=False),
                              open_tcp_socket("127.0.0.1", 0, reuse_port=False))  # fmt: skip
                api, admin = (
                    f"http://127.0.0.1:{bound.port}",
                    f"http://127.0.0.1:{bound.admin_port}",
                )
                await nursery.start(partial(serve_gateway, gw, bound, shutdown=trio.Event()))
                token = trio.lowlevel.current_trio_token()
                ready.put(Served(admin, api, gw, sim.sim, token, nursery.cancel_scope.cancel))
        except BaseException as exc:  # start-up failed: tell the test instead of hanging it
            if ready.empty():
                ready.put(exc)
            raise
        finally:
            done.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    got = ready.get(timeout=60)
    if isinstance(got, BaseException):
        raise got
    try:
        yield got
    finally:
        if not done.is_set():  # not stopped by its user
            try:
                trio.from_thread.run_sync(got.stop, trio_token=got.token)
            except trio.RunFinishedError:
                pass
        done.wait(30)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """The gateway for the module's tests."""
    with serving() as got:
        yield got


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(served: Served, browser: Any) -> Iterator[Any]:
    """A new page, signed in as alice (an admin); closed after the test."""
    page = browser.new_page()
    page.add_init_script(SETTLE_COUNTER)
    sign_in(page, served.url)
    try:
        yield page
    finally:
        page.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, url: str, user: str = "alice", password: str | None = None) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(password or PASSWORDS[user])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("header .who")).to_contain_text(f"{user} · ")


SETTLE_COUNTER = (
    "window.__settled = 0;"
    "document.addEventListener('htmx:afterSettle', function () { window.__settled += 1; });"
)
"""Counts htmx's swaps settled on a page (installed before its scripts run)."""


def submit(page: Any, button: Any) -> None:
    """Click a form's button, wait for the answer to its POST, then for htmx to have swapped
    it in and settled. Without the second wait, a field filled next could be overwritten by
    the swap, and a click next on the same form was dropped: htmx still held the request
    as in flight, sent nothing, and the wait for the next POST ran out (a CI run beside two
    burners)."""
    settled = page.evaluate("window.__settled")
    with page.expect_response(lambda r: r.request.method == "POST"):
        button.click()
    # (polled from here: the page's CSP forbids the eval wait_for_function runs in it)
    until(lambda: page.evaluate("window.__settled") > settled, "htmx to settle the answer")


def until(check: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    """Wait for observed server state (each check is a real round trip)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"


def test_budget_edit_audit_refusal_csv_and_narrow_layout(served: Served, page: Any) -> None:
    assert served.chat("before the limit").status_code == 200

    # a monthly limit first, then edit only the daily one in place: the monthly one stays
    page.goto(f"{served.url}/budgets")
    row = page.locator('tr[data-team="demo"]')
    row.locator('input[name="monthly_usd"]').fill("100")
    submit(page, row.get_by_role("button", name="Save"))
    expect(row.locator(".notice")).to_have_text("Saved.")
    row.locator('input[name="daily_usd"]').fill("0.00001")
    submit(page, row.get_by_role("button", name="Save"))
    expect(row.locator(".notice")).to_have_text("Saved.")
    expect(row.locator('input[name="daily_usd"]')).to_have_value("0.00001")
    expect(row.locator('input[name="monthly_usd"]')).to_have_value("100")
    # a bad value: the message sits next to its field and stays
    row.locator('input[name="monthly_usd"]').fill("1e13")
    submit(page, row.get_by_role("button", name="Save"))
    expect(row.locator('input[name="monthly_usd"]')).to_have_attribute("aria-invalid", "true")
    expect(row.locator(".field-error")).to_contain_text("at most")
    shot(page, "budgets-1280")

    page.goto(f"{served.url}/audit")
    first = page.locator("table.audit tbody tr").first
    expect(first.locator("td.old")).to_have_text("daily none (config), monthly $100")
    expect(first.locator("td.new")).to_have_text("daily $0.00001, monthly $100")
    expect(first).to_contain_text("alice")
    shot(page, "audit-1280")

    # the new daily budget refuses the next request, and the spend page counts it
    refused = served.chat("after the limit")
    assert refused.status_code == 429, refused.text

    def counted() -> bool:
        page.goto(f"{served.url}/spend?by=team")
        return page.locator('table.outcomes tr[data-team="demo"] td.refused').inner_text() == "1"

    until(counted, "the refusal on the spend page (the ledger writes in batches)")
    expect(page.locator('table.outcomes tr[data-team="demo"] td.ok')).to_have_text("1")
    expect(page.locator("svg.chart rect").first).to_be_visible()
    shot(page, "spend-1280")

    with page.expect_download() as download:
        page.locator("#csv").click()
    text = Path(download.value.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and {r["value"] for r in rows} == {"demo"}
    assert sum(int(r["requests"]) for r in rows) == 2  # the served one and the refusal

    for path in PAGES:  # with a limit set: the overview's budget cells are at their widest
        page.goto(served.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1280, f"{path} is {width} px wide at 1,280 px"
        assert page.evaluate(MISALIGNED_HEADS) == [], f"{path}: headers not over their numbers"
        if path in ("/", "/keys", "/providers", "/cache", "/alerts", "/users"):
            shot(page, (path.strip("/") or "overview") + "-1280")

    page.set_viewport_size({"width": 390, "height": 844})
    for path in PAGES:
        page.goto(served.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide at 390 px"
        expect(page.get_by_role("button", name="Log out")).to_be_in_viewport()
        shot(page, (path.strip("/") or "overview") + "-390")


WIDE_BOXES = """() => [...document.querySelectorAll(".scroll")].flatMap((box) =>
  box.scrollWidth > box.clientWidth ? [box.firstElementChild.className] : [])"""
"""The tables wider than their box (which scrolls them sideways), by class."""


def test_a_wide_table_scrolls_in_its_own_box_not_the_page(served: Served, page: Any) -> None:
    """At 768 px (too wide for the stacked small-screen rows), the overview's 13 columns
    scroll inside their box: the page itself stays as wide as the window (it was 1,294 px,
    cut off at the right)."""
    page.set_viewport_size({"width": 768, "height": 1000})
    for path in PAGES:
        page.goto(served.url + path)
        width = page.evaluate("document.scrollingElement.scrollWidth")
        assert width <= page.evaluate("window.innerWidth"), f"{path} is {width} px at 768 px"
        expect(page.get_by_role("button", name="Log out")).to_be_in_viewport()
    page.goto(served.url + "/")
    expect(page.locator("table.overview tbody tr").first).to_be_visible()
    assert "overview stack" in page.evaluate(WIDE_BOXES)
    box = page.locator(".scroll:has(table.overview)")
    box.evaluate("(box) => { box.scrollLeft = box.scrollWidth; }")  # scrolled to its end
    expect(page.locator("table.overview thead th").last).to_be_in_viewport()
    shot(page, "overview-768")


def test_breaker_opens_on_the_providers_page_without_reload(served: Served, page: Any) -> None:
    page.goto(f"{served.url}/providers")
    loads = []
    page.on("load", lambda _: loads.append(1))
    served.call(setattr, served.sim, "default_fault", Fault(status=500))
    try:
        for i in range(12):
            assert served.chat(f"failing {i}", READER_KEY).status_code >= 500
    finally:
        served.call(setattr, served.sim, "default_fault", Fault())
    opened = page.locator("tr:has(td.breaker-open)").first
    expect(opened).to_be_visible(timeout=20_000)
    expect(opened.locator("td.probe")).to_have_text(re.compile(r"\d+ s"))
    assert loads == []  # the panel refreshed in place
    shot(page, "providers-breaker-open-1280")
    target = opened.get_attribute("data-target")
    opened.get_by_role("button", name="Reset").click()
    expect(page.locator(".notice")).to_contain_text(f"Breaker of '{target}' reset")
    page.goto(f"{served.url}/audit?action=breaker.")
    expect(page.locator("table.audit tbody tr").first).to_contain_text(str(target))


def test_create_use_and_revoke_a_key(served: Served, page: Any) -> None:
    page.goto(f"{served.url}/keys")
    form = page.locator("form.keyform")
    form.get_by_label("Name").fill("browser-bot")
    form.get_by_label("Team").fill("ops")
    form.get_by_label("Feature").fill("e2e")
    form.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("tp-")
    row = page.locator('tr[data-key="browser-bot"]')
    expect(row.locator("td.state")).to_have_text("active")
    shot(page, "keys-created-1280")
    # the secret's box starts with its sentence (no blank line above it)
    box, first = page.locator(".secret").bounding_box(), page.locator(".secret p").bounding_box()
    assert first["y"] - box["y"] < 20, (box, first)
    # each "no limit" box sits under its own field, never wrapped away from it
    for field in ("rpm", "tpm"):
        entry = row.locator(f'input[name="{field}"]').bounding_box()
        tick = row.locator(f'input[name="clear_{field}"]').bounding_box()
        assert entry["x"] <= tick["x"] < entry["x"] + entry["width"], (field, entry, tick)
        assert tick["y"] > entry["y"] + entry["height"] - 1, (field, entry, tick)

    assert served.chat("from the browser's key", secret).status_code == 200

    row.get_by_role("button", name="Revoke").click()
    expect(page.locator(".notice")).to_contain_text("revoked")
    expect(page.locator('tr[data-key="browser-bot"] td.state')).to_have_text("revoked")
    assert page.locator("#new-secret").count() == 0  # never shown again
    assert served.chat("after revocation", secret).status_code == 401
    page.goto(f"{served.url}/audit?action=key.")
    expect(page.locator("table.audit tbody tr")).to_have_count(2)


FIELD_BOXES = """(form) => [...document.querySelectorAll(form + " label > :is(input, select), "
  + form + " > button")].map((e) => { const r = e.getBoundingClientRect();
  return [e.name || e.textContent, Math.round(r.x), Math.round(r.y), Math.round(r.width)]; })"""
"""Where each field (and button) of a form is: name, x, y, width."""


def test_field_errors_move_no_field(served: Served, page: Any) -> None:
    """An error under a field neither moves the other fields (it moved the labels beside
    it up) nor widens its own (the key form's Priority wrapped onto a new line)."""
    for path, form, fill in (
        ("/keys", "form.keyform", {"Name": "reader", "Team": "ops", "Requests / min": "-3"}),
        ("/users", "form.userform", {"Name": "shorty", "Password": "short", "Teams": "ops"}),
    ):
        page.goto(served.url + path)
        clean = page.evaluate(FIELD_BOXES, form)
        for label, value in fill.items():
            page.locator(form).get_by_label(label, exact=True).fill(value)
        page.locator(form).locator("> button").click()
        expect(page.locator(f"{form} .field-error").first).to_be_visible()
        errors = page.evaluate(FIELD_BOXES, form)
        # every field keeps its place and width; those of the first line their height too
        # (a later line moves down under the errors above it, all its fields alike)
        assert [b[:2] + b[3:] for b in errors] == [b[:2] + b[3:] for b in clean], path
        top = clean[0][2]
        assert [b for b in errors if b[2] == top] == [b for b in clean if b[2] == top], path
        assert len({b[2] for b in errors}) == len({b[2] for b in clean}), path
        shot(page, f"{path.strip('/')}-field-errors-1280")
    expect(page.locator("form.userform .field-error")).to_have_text("at least 12 characters")


def test_requests_and_provider_traffic_pages(served: Served, page: Any) -> None:
    for n in range(3):
        assert served.chat(f"request log {n}", READER_KEY).status_code == 200

    def logged() -> bool:
        page.goto(f"{served.url}/requests?team=ops&key=reader&status=200")
        return page.locator("table.requests tbody tr[data-request]").count() >= 3

    until(logged, "the requests in the log (the ledger writes in batches)")
    first = page.locator("table.requests tbody tr[data-request]").first
    expect(first.locator('td[data-label="Team · key"]')).to_contain_text("ops · reader")
    expect(first.locator('td[data-label="Attempts"]')).to_contain_text("won")
    # the filter form is a plain GET: choose a status, submit, see only those
    page.get_by_label("Status").fill("429")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("table.requests tbody")).to_contain_text("No matching requests")
    expect(page.get_by_label("Status")).to_have_value("429")
    page.goto(f"{served.url}/requests")
    shot(page, "requests-1280")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert page.evaluate(WIDE_BOXES) == []  # fits: no sideways scrolling at 1,280 px
    # "team · key (user)" and "route → target" break between their parts, never inside
    # one ("gpt-4o-" / "mini"): at most two lines, each part on one
    for cell in ("who-asked", "route-target"):
        lines = page.evaluate(
            """(cls) => [...document.querySelectorAll("table.requests td." + cls)].map((td) =>
              [...td.querySelectorAll(".nw")].map((s) => [s.getClientRects().length,
                                                         Math.round(s.getBoundingClientRect().top)]))""",
            cell,
        )
        assert lines, cell
        for parts in lines:
            assert all(rects == 1 for rects, _ in parts), (cell, parts)
            assert len({top for _, top in parts}) <= 2, (cell, parts)

    page.goto(f"{served.url}/providers")
    busy = page.locator('table.traffic tr[data-window="5"]:has(td.rate:not(:has-text("(0)")))')
    expect(busy.first).to_be_visible()
    expect(busy.first.locator('td[data-label^="Latency"]')).to_have_text(
        re.compile(r"\d+ / \d+ ms")
    )
    shot(page, "providers-traffic-1280")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280

    page.set_viewport_size({"width": 390, "height": 844})
    for path, name in (("/requests", "requests-390"), ("/providers", "providers-traffic-390")):
        page.goto(served.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide at 390 px"
        expect(page.get_by_role("button", name="Log out")).to_be_in_viewport()
        shot(page, name)


def test_edit_the_alert_threshold_in_place_and_see_the_audit_entry(
    served: Served, page: Any
) -> None:
    page.goto(f"{served.url}/budgets")
    row = page.locator('tr[data-team="ops"]')
    row.locator('input[name="alert_pct"]').fill("150")
    submit(page, row.get_by_role("button", name="Save"))
    expect(row.locator('input[name="alert_pct"]')).to_have_attribute("aria-invalid", "true")
    expect(row.locator(".field-error")).to_contain_text("from 1 to 100")
    row.locator('input[name="alert_pct"]').fill("55")
    submit(page, row.get_by_role("button", name="Save"))
    expect(row.locator(".notice")).to_have_text("Saved.")
    expect(row.locator('input[name="alert_pct"]')).to_have_value("55")
    expect(row.locator('input[name="alert_pct"]')).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#takes-effect")).to_contain_text("within")
    # a user's token window, in place, in the same way
    window = page.locator('tr[data-user="rita"]')
    window.locator('input[name="tokens"]').fill("50,000")
    submit(page, window.get_by_role("button", name="Save"))
    expect(window.locator(".notice")).to_have_text("Saved.")
    expect(page.locator('tr[data-user="rita"] input[name="tokens"]')).to_have_value("50000")
    shot(page, "budgets-threshold-window-1280")
    page.goto(f"{served.url}/audit?action=budget.alert")
    first = page.locator("table.audit tbody tr").first
    expect(first.locator("td.old")).to_have_text("80%")
    expect(first.locator("td.new")).to_have_text("55%")
    expect(first).to_contain_text("alice")
    page.goto(f"{served.url}/keys")
    rates = page.locator('tr[data-config-key="reader"]')
    rates.get_by_label("Requests / min").fill("600")
    submit(page, rates.get_by_role("button", name="Save limits"))
    expect(page.locator('tr[data-config-key="reader"] .notice')).to_have_text("Saved.")
    expect(
        page.locator('tr[data-config-key="reader"]').get_by_label("Requests / min")
    ).to_have_value("600")
    shot(page, "keys-rates-1280")
    # a new team with a low limit and a 1 % threshold: its first request fires an alert
    page.goto(f"{served.url}/keys")
    form = page.locator("form.keyform")
    form.get_by_label("Name").fill("pager-bot")
    form.get_by_label("Team").fill("pager")
    form.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-secret").inner_text()
    page.goto(f"{served.url}/budgets")
    row = page.locator('tr[data-team="pager"]')
    row.locator('input[name="daily_usd"]').fill("0.0001")
    row.locator('input[name="alert_pct"]').fill("1")
    submit(page, row.get_by_role("button", name="Save"))
    expect(row.locator(".notice")).to_have_text("Saved.")
    # worst case $0.00004 fits the $0.0001 limit; its cost (~$0.000004) passes 1 %
    answer = served.chat("alert me", secret, max_tokens=5)
    assert answer.status_code == 200, answer.text

    def listed() -> bool:
        page.goto(f"{served.url}/alerts")
        return page.locator('table.alerts tr[data-team="pager"]').count() > 0

    until(listed, "the fired alert on the alerts page (checked after the request settles)")
    alert = page.locator('table.alerts tr[data-team="pager"]').first
    expect(alert.locator("td.level")).to_contain_text("threshold 1 %")
    expect(alert.locator("td.delivery")).to_contain_text("no webhook")
    shot(page, "alerts-1280")


def test_an_admin_creates_a_viewer_who_signs_in_and_is_refused_an_edit(
    served: Served, page: Any
) -> None:
    page.goto(f"{served.url}/users")
    form = page.locator("form.userform")
    form.get_by_label("Name").fill("vic")
    form.get_by_label("Password").fill("vic-password-123")
    form.get_by_label("Teams").fill("ops")
    form.get_by_label("Role").select_option("viewer")
    form.get_by_role("button", name="Create user").click()
    expect(page.locator(".notice")).to_contain_text("User 'vic' created")
    expect(page.locator('tr[data-user="vic"] td.state')).to_have_text("active")
    shot(page, "users-1280")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()

    sign_in(page, served.url, "vic", "vic-password-123")
    expect(page.locator("header .who")).to_contain_text("vic · viewer · ops")
    page.goto(f"{served.url}/budgets")
    expect(page.locator('tr[data-team="ops"]')).to_be_visible()
    expect(page.locator('tr[data-team="demo"]')).to_have_count(0)
    expect(page.get_by_role("button", name="Save")).to_have_count(0)  # nothing to edit
    # ... and nothing that looks editable: the values are text, and the page says why
    expect(page.locator('#panel input:not([type="hidden"])')).to_have_count(0)
    expect(page.locator("#read-only")).to_contain_text("Viewer: read only")
    expect(page.locator('tr[data-team="ops"] td.alert-at')).to_have_text(re.compile(r"^\d+%$"))
    shot(page, "budgets-viewer-1280")
    csrf = page.locator('form.logout input[name="csrf"]').get_attribute("value")
    refused = page.request.post(
        f"{served.url}/budgets/ops", form={"daily_usd": "1", "csrf": str(csrf)}
    )
    assert refused.status == 403 and "Viewers cannot change anything" in refused.text()
    page.goto(f"{served.url}/users")
    expect(page.locator(".error")).to_contain_text("Only an admin of every team")
    shot(page, "users-refused-viewer-1280")
    page.goto(f"{served.url}/budgets")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def test_stale_banner_when_the_gateway_is_not_ready_then_stops(browser: Any) -> None:
    """On a gateway of its own, which it stops: the module's gateway serves the other tests,
    whichever order they run in."""
    with serving() as own:
        page = browser.new_page()
        try:
            sign_in(page, own.url)
            stale_banner_then_stop(own, page)
        finally:
            page.close()


def stale_banner_then_stop(served: Served, page: Any) -> None:
    expect(page.locator("#server-stale")).to_have_count(0)
    loads = []
    page.on("load", lambda _: loads.append(1))
    served.call(setattr, served.gw, "ready", False)  # as while draining after a stop signal
    expect(page.locator("#server-stale")).to_contain_text("not ready", timeout=30_000)
    shot(page, "overview-not-ready-1280")
    served.call(setattr, served.gw, "ready", True)
    expect(page.locator("#server-stale")).to_have_count(0, timeout=30_000)
    served.call(served.stop)  # the gateway (and its dashboard) stops
    expect(page.locator("#stale")).to_be_visible(timeout=30_000)
    expect(page.locator("#stale")).to_contain_text("could not refresh")
    assert loads == []  # the page stayed, with the banner over its numbers
    shot(page, "overview-gateway-stopped-1280")
