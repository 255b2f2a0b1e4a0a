"""The dashboard over real HTTP, on SQLite and Redis, with data real workers made."""

from __future__ import annotations

import re
import urllib.parse

import pytest
import trio
from webkit import SCRIPT, get, populate, post, served

from wireframe import jobs
from wireframe.jobs.broker import Message, open_broker
from wireframe.web.rates import Rates
from wireframe.web.serve import is_loopback


async def test_every_page_shows_what_the_workers_did(web_url: str) -> None:
    made = await populate(web_url)
    async with served(web_url) as base:
        overview = await get(base + "/")
        assert overview.status == 200
        row = re.search(r'<tr data-queue="default">(.*?)</tr>', overview.text, re.S)
        # two jobs and the orchestration's activity
        assert row and re.search(r'data-count="done">3<', row.group(1)), overview.text
        parked = re.search(r'<tr data-queue="parked">(.*?)</tr>', overview.text, re.S)
        assert parked and 'data-count="dead"><a' in parked.group(1)

        listing = await get(base + "/jobs")
        assert made.ok_job in listing.text and made.failed_job in listing.text
        by_key = await get(base + "/jobs?key=answer")
        assert made.ok_job in by_key.text and made.failed_job not in by_key.text
        by_op = await get(base + "/jobs?operation=web-tests.boom&status=done")
        assert made.failed_job in by_op.text and made.ok_job not in by_op.text
        by_id = await get(base + f"/jobs?id={made.ok_job}")  # redirects to the job
        assert "web-tests.add-one" in by_id.text and '<pre class="result">43' not in by_id.text
        assert '<pre class="result">42</pre>' in by_id.text
        missing = await get(base + "/jobs/no-such-job")
        assert missing.status == 404 and "no-such-job" in missing.text

        failed = await get(base + f"/jobs/{made.failed_job}")
        assert failed.status == 200
        assert SCRIPT not in failed.text, "an error's text must be escaped"
        assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in failed.text
        assert 'class="traceback"' in failed.text and "raise jobs.Fatal(text)" in failed.text

        dead = await get(base + "/dead")
        assert made.dead_message in dead.text and "job body is not" in dead.text
        assert "Retry" not in dead.text, "read-only by default"

        flows = await get(base + "/flows?status=completed")
        assert made.instance in flows.text
        assert made.instance in (await get(base + "/flows?name=web-tests.greet")).text
        assert made.instance not in (await get(base + "/flows?status=running")).text
        flow = await get(base + f"/flows/{made.instance}")
        kinds = re.findall(r'<li data-kind="(\w+)">', flow.text)
        order = ["ExecutionStarted", "TaskScheduled", "TaskCompleted", "EventRaised"]
        assert [k for k in kinds if k in order] == order, kinds
        assert kinds[-1] == "ExecutionCompleted" and "ada:4:now" in flow.text
        assert "&#34;step&#34;: &#34;done&#34;" in flow.text  # the custom status

        assert (await get(base + "/schedules")).status == 200
        assert (await get(base + "/service")).status == 404  # not inside a service


async def test_a_page_polled_with_its_etag_is_not_sent_again(web_url: str) -> None:
    await populate(web_url)
    async with served(web_url) as base:
        first = await get(base + "/jobs", {"X-Wireframe-Live": "1"})
        assert first.status == 200 and "<html" not in first.text and "<table" in first.text
        etag = first.headers["etag"]
        again = await get(base + "/jobs", {"X-Wireframe-Live": "1", "If-None-Match": etag})
        assert again.status == 304
        async with open_broker(web_url) as broker:
            await broker.submit("other", Message("fresh-job", b"x"), operation="later")
        changed = await get(base + "/jobs", {"X-Wireframe-Live": "1", "If-None-Match": etag})
        assert changed.status == 200 and "fresh-job" in changed.text


async def test_pages_come_in_pages(web_url: str) -> None:
    async with open_broker(web_url) as broker:
        for n in range(7):
            await broker.submit("q", Message(f"job-{n}", b"x"), operation="op")
    async with served(web_url, page_size=3) as base:
        pages = [await get(base + f"/jobs?queue=q&page={p}") for p in (1, 2, 3)]
        found = [re.findall(r'<tr data-job="([\w-]+)">', p.text) for p in pages]
        assert found == [["job-6", "job-5", "job-4"], ["job-3", "job-2", "job-1"], ["job-0"]]
        assert 'rel="next"' in pages[0].text and 'rel="next"' not in pages[2].text
        assert "page=2" in pages[0].text and "queue=q" in pages[0].text


def _csrf(text: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', text)
    assert match, "no form with a CSRF token"
    return match.group(1)


async def test_actions_need_the_flag_and_the_token(web_url: str) -> None:
    made = await populate(web_url)
    async with served(web_url) as base:
        refused = await post(base + "/dead/retry-all", {"csrf": "x"})
        assert refused.status == 403 and "--allow-actions" in refused.text
    async with served(web_url, allow_actions=True) as base:
        page = await get(base + "/dead")
        cookie = page.headers["set-cookie"].split(";")[0]
        token = _csrf(page.text)
        no_token = await post(base + "/dead/retry-all", {}, {"Cookie": cookie})
        assert no_token.status == 403
        wrong = await post(base + "/dead/retry-all", {"csrf": token + "x"}, {"Cookie": cookie})
        assert wrong.status == 403
        form = {"csrf": token, "message_id": made.dead_message, "queue": "parked"}
        done = await post(base + "/dead/retry", form, {"Cookie": cookie})
        assert done.status == 200 and "requeued 1 dead letter" in urllib.parse.unquote(done.text)
        assert made.dead_message not in done.text.split("<h1>")[1]
        async with open_broker(web_url) as broker:
            stats = {s.queue: s for s in await broker.stats()}
            assert (stats["parked"].queued, stats["parked"].dead) == (1, 0)

        flow = await get(base + f"/flows/{made.instance}", {"Cookie": cookie})
        assert "Purge" in flow.text
        purged = await post(
            base + f"/flows/{made.instance}/purge", {"csrf": token}, {"Cookie": cookie}
        )
        assert purged.status == 404 and "purged instance" in purged.text


def test_rates_are_differences_of_samples() -> None:
    rates = Rates(window=60)
    for t, done in [(0.0, 0), (5.0, 10), (10.0, 30), (15.0, 5)]:  # 5: a purge
        rates.add(t, [jobs.QueueStats("q", 0, 0, done, 0)])
    assert rates.per_second("q") == []  # the purge started afresh
    rates.add(20.0, [jobs.QueueStats("q", 0, 0, 15, 0)])
    assert rates.per_second("q") == [(20.0, 2.0)]
    chart = rates.chart("q", now=20.0, width=60, height=10)
    assert chart.latest == 2.0 and chart.points == "60.0,0.0"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_the_sampler_feeds_the_chart(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    async with jobs.connect(url) as rt, trio.open_nursery() as nursery:
        await nursery.start(jobs.Worker(rt.broker).serve)
        async with served(url, sample_every=0.05) as base:
            await trio.sleep(0.2)
            from webkit import WebAddOne

            for n in range(5):
                await (await rt.submit(WebAddOne(), n)).result(timeout=30)
            await trio.sleep(0.3)
            page = await get(base + "/")
            assert re.search(r'<polyline points="[\d.]+,[\d.]+ ', page.text), page.text
        nursery.cancel_scope.cancel()
