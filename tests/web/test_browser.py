"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by playwright).

Playwright's synchronous API runs on a thread of its own (its asyncio loop
cannot share trio's), while the app, the broker and the workers stay on trio;
a browser step that needs the broker to change meanwhile calls back into trio
with ``trio.from_thread.run``. Nothing downloads a browser: the tests use
``/usr/bin/chromium`` and are skipped when it or playwright is missing (CI
installs both, see ``.ci/run``). With ``WIREFRAME_SCREENSHOTS=1`` the SQLite
run writes the screenshots in ``docs/`` (1280 x 800); otherwise a test run leaves
the tree as it was.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from webkit import SCRIPT, Made, populate, served

import wireframe as wf
from wireframe import jobs
from wireframe.jobs.broker import Message, open_broker
from wireframe.web import DashboardLayer

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).parents[2] / "docs"
SIZE = {"width": 1280, "height": 800}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (apt-get install chromium)",
    ),
]


def _in_browser(step: Callable[[Any], None]) -> None:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport=SIZE)
            page.set_default_timeout(15_000)
            step(page)
        finally:
            browser.close()


async def browse(step: Callable[[Any], None]) -> None:
    """Run ``step(page)`` in a fresh headless Chromium, on a thread."""
    await trio.to_thread.run_sync(_in_browser, step)


def _shot(page: Any, name: str, shoot: bool) -> None:
    if shoot and os.environ.get("WIREFRAME_SCREENSHOTS") == "1":
        page.screenshot(path=str(DOCS / f"dashboard-{name}.png"))


async def test_the_pages_in_chromium(web_url: str) -> None:
    made: Made = await populate(web_url)
    shoot = web_url.startswith("sqlite")

    async def add_idle_jobs() -> None:
        async with open_broker(web_url) as broker:
            for n in range(3):
                await broker.submit("idle", Message(f"idle-{n}", b"x"), operation="idle-op")

    async with served(web_url, allow_actions=True, poll_ms=300) as base:

        def steps(page: Any) -> None:
            # overview: a queue's counts
            page.goto(base + "/")
            done = page.locator('tr[data-queue="default"] td[data-count="done"]')
            assert done.inner_text() == "3"
            assert page.locator('tr[data-queue="parked"] td[data-count="dead"]').inner_text() == "1"
            # the page updates without a reload when the broker changes
            page.evaluate("window.__kept = true")
            trio.from_thread.run(add_idle_jobs)
            queued = page.locator('tr[data-queue="idle"] td[data-count="queued"]')
            queued.wait_for()
            sync_api.expect(queued).to_have_text("3")
            assert page.evaluate("window.__kept") is True, "the page was reloaded"
            _shot(page, "overview", shoot)

            # jobs, and the failed job: its <script> error shown as text, with the traceback
            page.goto(base + "/jobs")
            assert page.locator(f'tr[data-job="{made.failed_job}"]').count() == 1
            _shot(page, "jobs", shoot)
            page.click(f'tr[data-job="{made.failed_job}"] a')
            assert page.locator(".error-message").inner_text() == SCRIPT
            assert "raise jobs.Fatal(text)" in page.locator(".traceback").inner_text()
            assert page.title() != "pwned" and page.evaluate("document.title") != "pwned"
            _shot(page, "job", shoot)

            # dead letters: the reason renders; Retry puts it back and the page updates
            page.goto(base + "/dead")
            row = page.locator(f'tr[data-message="{made.dead_message}"]')
            assert "job body is not" in row.locator(".reason").inner_text()
            _shot(page, "dead-letters", shoot)
            row.get_by_role("button", name="Retry").click()
            sync_api.expect(page.locator(".flash")).to_contain_text("requeued 1 dead letter")
            sync_api.expect(page.locator(f'tr[data-message="{made.dead_message}"]')).to_have_count(
                0
            )
            page.goto(base + "/")
            parked = page.locator('tr[data-queue="parked"]')
            assert parked.locator('td[data-count="queued"]').inner_text() == "1"
            assert parked.locator('td[data-count="dead"]').inner_text() == "0"

            # orchestrations: the timeline shows the events in order
            page.goto(base + "/flows")
            _shot(page, "flows", shoot)
            page.click(f'tr[data-instance="{made.instance}"] a')
            kinds = page.locator("#timeline li").evaluate_all(
                "items => items.map(i => i.dataset.kind)"
            )
            wanted = ["ExecutionStarted", "TaskScheduled", "TaskCompleted", "EventRaised"]
            assert [k for k in kinds if k in wanted] == wanted, kinds
            assert kinds[-1] == "ExecutionCompleted"
            _shot(page, "flow", shoot)

            page.goto(base + "/schedules")
            _shot(page, "schedules", shoot)

        await browse(steps)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_the_service_page_inside_a_running_service(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    from webkit import WebAddOne

    schedule = jobs.Schedule("web-tests.every-minute", every=60.0, op=WebAddOne(), input=1)
    builder = wf.ServiceBuilder(handle_signals=False, graceful_shutdown_timeout=5)
    builder.add_layer(jobs.WorkerLayer(url)).add_layer(jobs.SchedulerLayer(url, [schedule]))
    port = _free_port()
    builder.add_layer(DashboardLayer(url, port=port))
    base = f"http://127.0.0.1:{port}"
    service = builder.build()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.run)
        with trio.fail_after(30):  # running, and the scheduler has announced its schedule
            async with open_broker(url) as broker:
                while service.phase != "running" or not await broker.schedules():
                    await trio.sleep(0.05)

        def steps(page: Any) -> None:
            page.goto(base + "/service")
            assert page.locator("#tasks tbody tr").count() >= 2
            assert "running" in page.locator("#tasks").inner_text()
            _shot(page, "service", True)
            page.goto(base + "/schedules")
            assert "web-tests.every-minute" in page.locator("#schedules").inner_text()
            _shot(page, "schedules", True)

        await browse(steps)
        service.stop()
