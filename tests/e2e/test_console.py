"""The live console in a real browser (Debian's chromium driven by Playwright) against a real
run: a two-face RTSP stream, threshold 0, real Redis; plus the parts that keep it cheap
(no picture drawn without a viewer, a slow feed viewer never blocks) checked directly.

Screenshots go to pytest's tmp dir and are copied to build/test-output/console/ (the
path is printed), where a person can look at them after the run.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from streamguard import metrics
from streamguard.config import ConsoleConfig, HttpConfig
from streamguard.console import ConsoleHub
from streamguard.console.feed import Feed
from streamguard.console.history import ScoreHistory
from streamguard.events import EventV1, ModelInfo
from streamguard.server.front_door import FrontDoor
from tests.support.harness import live_config, live_pipeline, wait_until
from tests.support import REPO

TOKEN = "console-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHROMIUM = "/usr/bin/chromium"
SHOTS = REPO / "build" / "test-output" / "console"
EXPECTED_409 = "status of 409"  # the duplicate add below: the page shows the API's error, the browser logs the 409


async def until(page, script: str, timeout: float = 5.0) -> None:
    """Poll `script` (a JS function of no arguments) in the page until it returns true: page.wait_for_function
    evaluates strings, which the console's Content-Security-Policy (no unsafe-eval) rightly forbids."""
    deadline = time.monotonic() + timeout
    while not await page.evaluate(script):
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout} s: {script}")
        await asyncio.sleep(0.05)


def _keep(shot: Path) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    kept = SHOTS / shot.name
    shutil.copyfile(shot, kept)
    print(f"screenshot: {kept}")
    return kept


@pytest.fixture
async def browser():
    playwright = pytest.importorskip("playwright.async_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("no /usr/bin/chromium (make system-packages installs it)", pytrace=False)
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
        yield browser
        await browser.close()


async def test_console_in_a_browser(browser, rtsp_server, redis_server, tmp_path):
    cfg = live_config(
        serve=True, token=TOKEN, streams={"cam": rtsp_server.url("cam1")},
        scoring={"scores_interval_s": 0.5}, redis={"thumbnails": True},
    )
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession() as http:
        base = live.server.url
        context = await browser.new_context(viewport={"width": 1280, "height": 860})
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda err: problems.append(f"uncaught: {err}"))

        # The token in the fragment is taken into sessionStorage and dropped from the address.
        await page.goto(f"{base}/#token={TOKEN}")
        await page.wait_for_selector('.card[data-stream="cam"] img[data-faces="2"]', timeout=40_000)
        assert "token" not in page.url
        assert await page.evaluate("sessionStorage.getItem('streamguard.token')") == TOKEN
        await page.wait_for_selector('.card[data-stream="cam"] .faces button >> nth=1', timeout=10_000)
        assert await page.text_content('.card[data-stream="cam"] .state') == "live"

        # An alert reaches the feed within a few seconds of reaching Redis, with its face.
        alert = await live.events.wait_for(lambda e: e.type == "alert" and e.stream == "cam", 30, what="an alert")
        in_redis = time.monotonic()
        item = await page.wait_for_selector(f'#feed li[data-alert="{alert.id}"]', timeout=5_000)
        print(f"alert in the feed {time.monotonic() - in_redis:.2f} s after the test read it from Redis")
        await until(page, f'() => document.querySelector(\'#feed li[data-alert="{alert.id}"] img.thumb\')?.naturalWidth > 0')
        assert f"identity #{alert.track}" in await item.text_content()
        await page.screenshot(path=tmp_path / "console.png")
        _keep(tmp_path / "console.png")

        # One click: the identity's chart, with the threshold line and the alert's span.
        await item.click()
        await page.wait_for_selector(f'#chart svg[data-track="{alert.track}"] path.me', timeout=10_000)
        assert await page.locator("#chart line.threshold").count() == 1
        assert await page.locator(f'#chart rect.span[data-alert="{alert.id}"]').count() == 1
        await until(page, "() => document.getElementById('detail-img').naturalWidth > 0", 10)
        await page.screenshot(path=tmp_path / "console-detail.png")
        _keep(tmp_path / "console-detail.png")
        await page.click("#detail-close")

        # Manage streams with the token: add, see the API's own error, remove.
        await page.click("#manage summary")
        await page.fill('#add-form input[name="name"]', "lobby")
        await page.fill('#add-form input[name="url"]', rtsp_server.url("cam2"))
        await page.click('#add-form button[type="submit"]')
        await page.wait_for_selector('.card[data-stream="lobby"]', timeout=10_000)
        async with http.get(f"{base}/streams/lobby", headers=AUTH) as resp:
            assert resp.status == 200
        await page.fill('#add-form input[name="name"]', "lobby")
        await page.fill('#add-form input[name="url"]', rtsp_server.url("cam2"))
        await page.click('#add-form button[type="submit"]')
        await until(page, "() => document.getElementById('manage-error').textContent.includes('409')")
        assert await page.text_content("#manage-error") == "409: stream lobby already exists"
        await page.click('.card[data-stream="lobby"] .remove')
        await page.wait_for_selector('.card[data-stream="lobby"]', state="detached", timeout=10_000)
        assert "lobby" not in live.pipeline.workers and await page.text_content("#stream-count") == "(1)"

        # A phone's width: one column, nothing wider than the screen.
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.wait_for_selector('.card[data-stream="cam"] img[data-faces]', timeout=5_000)
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await page.screenshot(path=tmp_path / "console-phone.png", full_page=True)
        _keep(tmp_path / "console-phone.png")

        # Removing the stream clears its open alerts: the feed says so, and why.
        await page.click('.card[data-stream="cam"] .remove')
        cleared = page.locator(f'#feed li.cleared[data-alert="{alert.id}"] .why')
        await cleared.wait_for(timeout=10_000)
        assert "cleared after" in await cleared.text_content() and "stopped" in await cleared.text_content()

        unexpected = [p for p in problems if EXPECTED_409 not in p]
        assert unexpected == [], unexpected
        assert sum(EXPECTED_409 in p for p in problems) == 1
        await context.close()

        # Without the token: the page asks for it and says when it is refused; the API refuses the change.
        stranger = await browser.new_context()
        page = await stranger.new_page()
        await page.goto(f"{base}/")
        await page.wait_for_selector("#login:not([hidden])")
        assert await page.locator(".card").count() == 0
        await page.fill("#token", "wrong")
        await page.click('#login-form button[type="submit"]')
        await until(page, "() => document.getElementById('login-error').textContent.includes('refused')")
        assert await page.locator("#main").is_hidden()
        await stranger.close()
        async with http.post(f"{base}/streams", json={"name": "x", "url": rtsp_server.url("cam2")}) as resp:
            assert resp.status == 401
        for path in ("/console/api/streams", "/console/api/feed", "/console/api/streams/cam/snapshot.jpg"):
            async with http.get(base + path) as resp:
                assert resp.status == 401, path

        # Same origin only: another origin's page is refused (middleware.cors) with no CORS header, no framing,
        # nothing from elsewhere.
        async with http.get(f"{base}/console/api/streams", headers={**AUTH, "Origin": "http://elsewhere.example"}) as resp:
            assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
        async with http.get(f"{base}/") as resp:
            csp = resp.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert re.findall(r'(?:src|href)="([^"]*)"', await resp.text()) and all(
                link.startswith("/console/static/") for link in re.findall(r'(?:src|href)="([^"]*)"', await resp.text())
            )  # every asset from streamguard itself


async def test_no_picture_is_drawn_without_a_viewer(rtsp_server, redis_server):
    cfg = live_config(serve=True, token=TOKEN, streams={"cam": rtsp_server.url("cam1")}, console={"watch_idle_s": 1.0})
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession(headers=AUTH) as http:
        worker = live.pipeline.workers["cam"]
        drawn = metrics.CONSOLE_SNAPSHOTS
        before = drawn._value.get()
        await wait_until(lambda: worker.frames_analysed >= 10, 30, "10 frames analysed")
        assert worker.observer is None and drawn._value.get() == before  # nobody asked: no frame kept, nothing drawn

        url = f"{live.server.url}/console/api/streams/cam/snapshot.jpg"
        async with http.get(url) as resp:
            assert resp.status == 204  # watched from now on; no frame analysed since
        assert worker.observer is not None
        await wait_until(lambda: worker.observer.frame is not None, 10, "a frame seen")
        sizes = []
        for _ in range(3):  # asked three times at once: drawn once, the cache answers the others
            async with http.get(url) as resp:
                assert resp.status == 200 and resp.content_type == "image/jpeg"
                sizes.append(len(await resp.read()))
        assert drawn._value.get() == before + 1 and min(sizes) > 1000

        await wait_until(lambda: worker.observer is None, 5, "the tap removed once nobody asks")  # watch_idle_s = 1
        idle = drawn._value.get()
        frames = worker.frames_analysed
        await wait_until(lambda: worker.frames_analysed >= frames + 5, 10, "5 more frames")
        assert drawn._value.get() == idle


async def test_a_slow_viewer_loses_the_oldest_and_blocks_nobody():
    feed = Feed(queue_size=3, max_viewers=2)
    slow, quick = feed.join(), feed.join()
    dropped = metrics.CONSOLE_FEED_DROPPED._value.get()
    for i in range(5):
        feed.publish({"n": i})
        assert (await quick.get(0.1)) == {"n": i}
    assert [(await slow.get(0.1))["n"] for _ in range(3)] == [2, 3, 4]
    assert slow.dropped == 2 and metrics.CONSOLE_FEED_DROPPED._value.get() == dropped + 2
    assert await slow.get(0.01) is None  # nothing left: a keep-alive is due
    with pytest.raises(Exception, match="max_viewers"):
        feed.join()
    feed.leave(slow)
    waiting = asyncio.create_task(quick.get(10))
    feed.close()  # the server stops: a waiting viewer is woken at once
    assert await asyncio.wait_for(waiting, 1) is None and feed.closed


def test_the_hub_follows_an_alert_from_open_to_clear_and_never_fails_the_sink():
    class Sink:
        def __init__(self) -> None:
            self.events: list = []

        def publish(self, event, attachments=None) -> None:
            self.events.append(event)

        def publish_scores(self, scores) -> None:
            self.events.append(scores)

    hub = ConsoleHub(ConsoleConfig(recent_alerts=2))
    sink = Sink()
    tee = hub.tee(sink)
    viewer = hub.feed.join()
    model = ModelInfo(name="m", digest="d", trained=False)

    def event(kind: str, alert_id: str, ts: float, score: float, reason: str) -> EventV1:
        return EventV1(type=kind, id=alert_id, stream="cam", track=3, score=score, threshold=0.5, window_s=2, samples=5,
                       ts=ts, pts=ts, box=(0, 0, 0.1, 0.1), model=model, reason=reason)

    tee.publish(event("alert", "a1", 100.0, 0.8, "threshold"), {"streamguard:thumb:a1:face": b"jpeg", "x:a1:frame": b"f"})
    tee.publish(event("clear", "a1", 130.0, 0.3, "below_threshold"))
    assert [e.type for e in sink.events] == ["alert", "clear"]
    view = hub.recent()[0]
    assert (view["opened"], view["cleared"], view["reason"], view["face"]) == (100.0, 130.0, "below_threshold", True)
    assert hub.faces["a1"] == b"jpeg" and viewer._items[-1]["type"] == "clear"
    assert hub.chart("cam")["identities"]["3"]["alerts"] == [
        {"id": "a1", "opened": 100.0, "cleared": 130.0, "reason": "below_threshold"}]
    for n in (2, 3):  # two more alerts: only the last two are kept, faces too
        tee.publish(event("alert", f"a{n}", 200.0 + n, 0.9, "threshold"), {f"p:a{n}:face": b"j"})
    assert [v["id"] for v in hub.recent()] == ["a3", "a2"] and set(hub.faces) == {"a2", "a3"}

    hub.on_event = None  # a broken console: the sink still gets every event
    tee.publish(event("alert", "a4", 300.0, 0.9, "threshold"))
    assert sink.events[-1].id == "a4"


def test_score_history_is_bounded():
    history = ScoreHistory(horizon_s=10, max_identities=2)
    for t in range(30):
        history.add("cam", 1, float(t), 0.5)
    assert [p[0] for p in history.series("cam")[1].points][0] == 19.0
    history.opened("cam", 1, "a1", 20.0)
    history.cleared("cam", 1, "a1", 25.0, "below_threshold")
    history.add("cam", 2, 29.0, 0.1)
    history.add("cam", 3, 29.0, 0.2)  # a third identity: the least recently updated goes
    assert set(history.series("cam")) == {2, 3} and len(history) == 2
    assert ConsoleConfig().history_s >= 60


async def test_demo_prints_the_console_address(sample_video, tmp_path):
    """`streamguard demo` (what `make demo` runs) prints a loopback console URL with its token, serves the page
    there, and runs until --duration."""
    root = REPO
    env = {**os.environ, "PYTHONPATH": str(root), "XDG_CACHE_HOME": str(tmp_path)}
    env.pop("STREAMGUARD_HTTP_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamguard.cli", "demo", "--video", str(sample_video), "--arch", "tiny",
        "--http", "127.0.0.1:0", "--duration", "8", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=env, cwd=tmp_path,
    )
    try:
        url = None
        async with asyncio.timeout(60):
            while url is None:
                line = (await proc.stdout.readline()).decode()
                assert line, "the demo ended without printing the console's address"
                if match := re.match(r"console: (http://127\.0\.0\.1:\d+/)#token=(\S+)", line):
                    url, token = match.groups()
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as resp:
                assert resp.status == 200 and "streamguard console" in await resp.text()
            async with http.get(url + "console/api/streams") as resp:
                assert resp.status == 401  # the demo has a token too
            async with http.get(url + "console/api/streams", headers={"Authorization": f"Bearer {token}"}) as resp:
                assert [s["name"] for s in (await resp.json())["streams"]] == ["demo"]
        async with asyncio.timeout(60):
            assert await proc.wait() == 0  # --duration ends it
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_console_through_the_front_door(browser, rtsp_server, redis_server):
    """`run --processes N --http`'s front door serves the page and gathers every worker's streams, pictures and
    feed (two workers here are two pipelines in this process, each with its own API, as the supervisor's are)."""
    door = FrontDoor(HttpConfig(bind="127.0.0.1:0", token=TOKEN), count=2)
    configs = [
        live_config(serve=True, token=TOKEN, streams={name: rtsp_server.url(cam)}, scoring={"scores_interval_s": 0.5},
                    redis={"thumbnails": True})
        for name, cam in (("left", "cam1"), ("right", "cam2"))
    ]
    async with live_pipeline(redis_server.url, configs[0]) as w0, live_pipeline(redis_server.url, configs[1]) as w1:
        await door.start()
        try:
            await door.worker_up(0, w0.server.url)
            await door.worker_up(1, w1.server.url)
            context = await browser.new_context(viewport={"width": 1280, "height": 860})
            page = await context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda err: problems.append(f"uncaught: {err}"))
            await page.goto(f"{door.url}/#token={TOKEN}")
            for name in ("left", "right"):
                await page.wait_for_selector(f'.card[data-stream="{name}"] img[data-faces="2"]', timeout=40_000)
            alerts = [await w.events.wait_for(lambda e: e.type == "alert", 30, what="an alert") for w in (w0, w1)]
            for alert in alerts:  # both workers' alerts in the one feed, with their faces
                await page.wait_for_selector(f'#feed li[data-alert="{alert.id}"] img.thumb', timeout=5_000)
                await until(page, f'() => document.querySelector(\'#feed li[data-alert="{alert.id}"] img.thumb\')?.naturalWidth > 0')
            await page.click(f'#feed li[data-alert="{alerts[1].id}"]')
            await page.wait_for_selector(f'#chart svg[data-track="{alerts[1].track}"] path.me', timeout=10_000)
            assert problems == []
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{door.url}/console/api/streams", headers=AUTH) as resp:
                    workers = {s["name"]: s["worker"] for s in (await resp.json())["streams"]}
                assert workers == {"left": 0, "right": 1}
                async with http.get(f"{door.url}/console/api/streams") as resp:
                    assert resp.status == 401  # the front door checks the token itself
            await context.close()
        finally:
            await door.close()
