"""The dashboard in a real browser: Debian's chromium driven by Playwright, against ``duly serve --demo``.

One ``duly serve --demo`` process (the README's first command, on a fresh SQLite file) serves
every test here. Its standard output must end with the dashboard's URL and an admin token;
the tests sign in with that token through the sign-in form, as a newcomer would.

Every page is loaded with listeners for console errors, uncaught exceptions, failed requests
and HTTP errors; any of them fails the test. A screenshot of each page is saved under the
test session's temporary directory (``<basetemp>/dashboard-screenshots*``), printed at the
end. Chromium comes from apt (``/usr/bin/chromium``, or ``DULY_CHROMIUM``); without it the
tests are skipped, except under ``DULY_REQUIRE_BROWSER=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import duly
from conftest import FAST_NODE_ENV, REQUIRE_BROWSER, WaitFor
from duly.auth.roles import Role
from duly.auth.service import TokenService
from duly.clock import SystemClock
from duly.engine.store.sql import SqlStore

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

CHROMIUM = os.environ.get("DULY_CHROMIUM", "/usr/bin/chromium")

playwright_api = pytest.importorskip("playwright.sync_api") if not REQUIRE_BROWSER else None
if REQUIRE_BROWSER:
    import playwright.sync_api as playwright_api


@dataclass
class Served:
    """The running ``duly serve --demo``: where it answers, its admin token, its database."""

    url: str
    token: str
    db_url: str
    screenshots: Path
    stdout: list[str] = field(default_factory=list)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``duly serve --demo`` on an empty SQLite file; stopped with SIGTERM at the end."""
    if not Path(CHROMIUM).exists():
        message = f"chromium not found at {CHROMIUM} (apt-get install chromium)"
        if REQUIRE_BROWSER:
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path_factory.mktemp("serve-demo")
    shots = tmp_path_factory.mktemp("dashboard-screenshots")
    db_url = f"sqlite:///{home / 'duly.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DULY_")}
    env.update(FAST_NODE_ENV, DULY_DATABASE_URL=db_url, DULY_LOGGING__LEVEL="warning")
    # This checkout's duly, whatever the working directory (a relative PYTHONPATH would not be).
    env["PYTHONPATH"] = os.pathsep.join([str(Path(duly.__file__).resolve().parents[1]),
                                         *filter(None, [env.get("PYTHONPATH")])])  # fmt: skip
    port = _free_port()
    log = (home / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "duly", "serve", "--demo", "--port", str(port)],
        cwd=home, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = SystemClock().now().timestamp() + 90
    for line in proc.stdout:  # the welcome lines come once the node is about to start
        lines.append(line.rstrip())
        if line.startswith("Admin token") or SystemClock().now().timestamp() > deadline:
            break
    if not any(line.startswith("Admin token") for line in lines):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        log.close()
        pytest.fail(
            f"duly serve --demo printed no token: {lines}\n{(home / 'serve.log').read_text()[-3000:]}"
        )
    url = re.search(r"Dashboard: (\S+)", "\n".join(lines))
    token = lines[-1].rsplit(" ", 1)[1]
    assert url, lines
    try:
        yield Served(url.group(1).rstrip("/"), token, db_url, shots, lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        log.close()
        print(f"\ndashboard screenshots: {shots}")


@dataclass
class Watch:
    """Everything a page did wrong: console errors, uncaught exceptions, failed requests."""

    problems: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[object]:
    assert playwright_api is not None
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _open(browser: object) -> tuple[object, Watch]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    watch = Watch()
    page.on("console", lambda m: watch.problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)  # fmt: skip
    page.on("pageerror", lambda e: watch.problems.append(f"page error: {e}"))
    page.on("requestfailed",
            lambda r: watch.problems.append(f"failed request: {r.url} ({r.failure})"))  # fmt: skip
    page.on("response", lambda r: watch.problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)  # fmt: skip
    return page, watch


def _sign_in(page: object, served: Served, token: str) -> None:
    page.goto(f"{served.url}/")  # type: ignore[attr-defined]
    page.get_by_label("API token").fill(token)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    page.wait_for_selector("h1:text('Operations')")  # type: ignore[attr-defined]
    # The heading shows before the page's stylesheet and script have loaded; navigating
    # on at once would abort them, and an aborted request is reported as a failure.
    page.wait_for_load_state("load")  # type: ignore[attr-defined]


def _shot(page: object, served: Served, name: str) -> None:
    page.screenshot(path=str(served.screenshots / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def _token(served: Served, role: Role, name: str) -> str:
    store = SqlStore(served.db_url)
    try:
        return TokenService(store.engine, SystemClock()).create(name, role, created_by="e2e").text
    finally:
        store.dispose()


def test_the_readme_command_prints_the_url_and_token_and_shows_the_demo_bank(
    served: Served, browser: object, wait_for: WaitFor
) -> None:
    assert served.url.startswith("http://127.0.0.1:") and served.url.endswith("/ui")
    assert served.token.startswith("duly_")
    page, watch = _open(browser)
    _sign_in(page, served, served.token)
    page.goto(f"{served.url}/money")  # type: ignore[attr-defined]
    assert "Ada Lovelace" in page.inner_text("main")  # type: ignore[attr-defined]

    def night_checked() -> bool:
        page.goto(f"{served.url}/balance-checks")  # type: ignore[attr-defined]
        return "within" in page.inner_text("main")  # type: ignore[attr-defined]

    wait_for(night_checked, 60, "the demo night's balance check")
    text = page.inner_text("main")  # type: ignore[attr-defined]
    assert "MISSING_DATA" in text and "NEGATIVE_BALANCE" in text
    _shot(page, served, "balance-checks")
    assert watch.problems == []


def test_every_page_loads_without_console_errors_or_failed_requests(
    served: Served, browser: object, wait_for: WaitFor
) -> None:
    page, watch = _open(browser)
    _sign_in(page, served, served.token)
    _shot(page, served, "operations")
    page.goto(f"{served.url}/errors")  # type: ignore[attr-defined]
    wait_for(lambda: page.goto(f"{served.url}/errors") is not None  # type: ignore[attr-defined]
             and page.locator("a:text-matches('^error \\\\d+$')").count() > 0, 60,  # type: ignore[attr-defined]
             "the demo night's errors")  # fmt: skip
    first_error = page.locator("a:text-matches('^error \\\\d+$')").first.get_attribute("href")  # type: ignore[attr-defined]
    paths = {
        "errors": "/errors", "errors-7d": "/errors?window=7d", "error": first_error.removeprefix("/ui"),
        "schedules": "/schedules", "money": "/money", "money-ada": "/money?customer=demo-ada",
        "audit": "/audit", "audit-verified": "/audit?verify=1", "balance-checks": "/balance-checks",
    }  # fmt: skip
    for name, path in paths.items():
        page.goto(f"{served.url}{path}")  # type: ignore[attr-defined]
        assert page.locator("h1").count() == 1, name  # type: ignore[attr-defined]
        _shot(page, served, name)
    page.goto(f"{served.url}/money?customer=demo-grace")  # type: ignore[attr-defined]
    page.locator("a:text-matches('^transfer \\\\d+$')").first.click()  # type: ignore[attr-defined]
    page.wait_for_load_state("load")  # type: ignore[attr-defined]
    _shot(page, served, "transfer")
    page.goto(f"{served.url}/money?customer=demo-ada")  # type: ignore[attr-defined]
    page.locator("a:text-matches('^payment \\\\d+$')").first.click()  # type: ignore[attr-defined]
    page.wait_for_load_state("load")  # type: ignore[attr-defined]
    _shot(page, served, "recurring-payment")
    page.wait_for_timeout(1500)  # type: ignore[attr-defined]  # a refresh of the live region, at least
    assert watch.problems == []


def test_create_a_schedule_and_see_its_preview(served: Served, browser: object) -> None:
    page, watch = _open(browser)
    _sign_in(page, served, served.token)
    page.goto(f"{served.url}/schedules")  # type: ignore[attr-defined]
    page.get_by_label("Name").fill("e2e.weekly")  # type: ignore[attr-defined]
    page.get_by_label("Job").select_option("duly.noop")  # type: ignore[attr-defined]
    page.get_by_label("Repeat").select_option("weekly")  # type: ignore[attr-defined]
    page.get_by_label("At (HH:MM)").fill("07:45")  # type: ignore[attr-defined]
    page.get_by_label("Time zone").fill("America/New_York")  # type: ignore[attr-defined]
    page.get_by_label("tue").check()  # type: ignore[attr-defined]
    page.get_by_label("fri").check()  # type: ignore[attr-defined]
    preview = page.locator("#preview")  # type: ignore[attr-defined]
    preview.locator("text=Next fires of weekly:tue,fri@07:45").wait_for()
    assert preview.locator("li").count() == 5 and "07:45" in preview.inner_text()
    _shot(page, served, "schedule-preview")
    page.get_by_role("button", name="Create schedule").click()  # type: ignore[attr-defined]
    page.wait_for_selector("text=Schedule created.")  # type: ignore[attr-defined]
    assert page.locator("#schedule-e2e\\.weekly").count() == 1  # type: ignore[attr-defined]
    assert watch.problems == []


def test_trigger_a_run_and_watch_it_reach_its_final_status(served: Served, browser: object) -> None:
    page, watch = _open(browser)
    _sign_in(page, served, served.token)
    page.goto(f"{served.url}/schedules")  # type: ignore[attr-defined]
    row = page.locator("#schedule-demo\\.sleep")  # type: ignore[attr-defined]
    row.get_by_role("button", name="Run now").click()
    page.wait_for_selector("text=Run queued.")  # type: ignore[attr-defined]
    assert "/runs/" in page.url  # type: ignore[attr-defined]
    _shot(page, served, "run-started")
    # The page refreshes itself until the run ends (demo.sleep takes 3 s).
    page.locator("#live .status:text('succeeded')").first.wait_for(timeout=60_000)  # type: ignore[attr-defined]
    assert "Attempts" in page.inner_text("main")  # type: ignore[attr-defined]
    _shot(page, served, "run-finished")
    assert watch.problems == []


def test_resolve_an_error(served: Served, browser: object, wait_for: WaitFor) -> None:
    page, watch = _open(browser)
    _sign_in(page, served, served.token)
    wait_for(lambda: page.goto(f"{served.url}/errors") is not None  # type: ignore[attr-defined]
             and page.locator("a:text-matches('^error \\\\d+$')").count() > 0, 60,  # type: ignore[attr-defined]
             "an unresolved error")  # fmt: skip
    page.locator("a:text-matches('^error \\\\d+$')").first.click()  # type: ignore[attr-defined]
    page.wait_for_load_state("load")  # type: ignore[attr-defined]
    page.get_by_label("What was found and done").fill("account closed at the bank; customer told")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Resolve").click()  # type: ignore[attr-defined]
    page.wait_for_selector("text=Error resolved.")  # type: ignore[attr-defined]
    assert "resolved" in page.locator("dl.facts").inner_text()  # type: ignore[attr-defined]
    assert "account closed at the bank" in page.inner_text("main")  # type: ignore[attr-defined]
    _shot(page, served, "error-resolved")
    assert watch.problems == []


def test_an_auditor_sees_no_action_buttons_and_is_refused_anyway(
    served: Served, browser: object
) -> None:
    page, watch = _open(browser)
    _sign_in(page, served, _token(served, Role.AUDITOR, "e2e-auditor"))
    for path in (
        "/",
        "/errors",
        "/schedules",
        "/balance-checks",
        "/money?customer=demo-ada",
        "/audit",
    ):
        page.goto(f"{served.url}{path}")  # type: ignore[attr-defined]
        assert page.locator("button.action").count() == 0, path  # type: ignore[attr-defined]
        assert page.locator("form[method=post]").count() == 1, path  # type: ignore[attr-defined]  # sign-out
    _shot(page, served, "auditor-schedules")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")  # type: ignore[attr-defined]
    refused = page.request.post(f"{served.url}/schedules/demo.sleep/pause",  # type: ignore[attr-defined]
                                form={"csrf": csrf or ""})  # fmt: skip
    assert refused.status == 403
    assert [p for p in watch.problems if "403" not in p] == []
