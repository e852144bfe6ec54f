"""`run --processes N --http HOST:PORT`: one front door for all workers, as a user drives it:
real worker processes, real RTSP, WHIP and Redis, real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from streamguard.config import HttpConfig, WebRTCConfig
from streamguard.ingest import ice
from streamguard.server.front_door import FrontDoor, merge_metrics
from tests.support.harness import LOOPBACK_WEBRTC, EventReader
from tests.support.cli import Lines, STREAMGUARD, keys_config
from tests.support.http import AUTH, TOKEN, poll
from tests.support.webrtc import make_offer, whip_publish


def test_merged_metrics_keep_one_family_per_name_and_label_each_sample_with_its_worker():
    texts = {}
    for worker, frames in ((0, 3), (1, 5)):
        registry = CollectorRegistry()
        Counter("sg_frames", "Frames", ["stream"], registry=registry).labels(f"cam{worker}").inc(frames)
        Histogram("sg_latency", "Latency", buckets=(1, 2), registry=registry).observe(1.5)
        texts[worker] = generate_latest(registry).decode()
    families = {f.name: f for f in merge_metrics(texts)}
    frames = {(s.name, s.labels["stream"], s.labels["worker"]): s.value for s in families["sg_frames"].samples
              if s.name == "sg_frames_total"}
    assert frames == {("sg_frames_total", "cam0", "0"): 3.0, ("sg_frames_total", "cam1", "1"): 5.0}
    counts = {s.labels["worker"]: s.value for s in families["sg_latency"].samples if s.name == "sg_latency_count"}
    assert counts == {"0": 1.0, "1": 1.0}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(type("C", (), {"collect": lambda self: list(families.values())})())
    text = generate_latest(registry).decode()
    assert text.count("# TYPE sg_frames_total counter") == 1 and text.count("# TYPE sg_latency histogram") == 1


async def test_with_every_worker_down_the_front_door_still_answers_each_request_clearly():
    """Between a worker's death and its restart: health says so, a new stream cannot be placed,
    and a name that the down worker will add back is already taken."""
    door = FrontDoor(HttpConfig(bind="127.0.0.1:0", token=TOKEN), count=2)
    door.workers[1].added["cam1"] = b'{"name": "cam1", "url": "rtsp://127.0.0.1:1/x"}'
    await door.start()
    try:
        async with aiohttp.ClientSession(door.url) as http:
            async with http.post("/streams", json={"name": "cam9", "url": "rtsp://h/x"}) as resp:
                assert resp.status == 401
            async with http.get("/healthz") as resp:
                assert resp.status == 503
                health = await resp.json()
            assert health["status"] == "degraded" and [w["up"] for w in health["workers"]] == [False, False]
            async with http.post("/streams", json={"name": "cam1", "url": "rtsp://h/x"}, headers=AUTH) as resp:
                assert resp.status == 409 and "worker 1" in (await resp.json())["error"]
            async with http.post("/streams", json={"name": "cam9", "url": "rtsp://h/x"}, headers=AUTH) as resp:
                assert resp.status == 503 and "no worker is running" in (await resp.json())["error"]
            async with http.delete("/streams/cam9", headers=AUTH) as resp:
                assert resp.status == 404
            async with http.get("/metrics") as resp:
                assert 'streamguard_worker_up{worker="0"} 0.0' in await resp.text()
    finally:
        await door.close()


@pytest.mark.slow
async def test_one_front_door_routes_merges_and_heals_for_two_workers(rtsp_server, redis_server, tmp_path):
    ice.configure(WebRTCConfig(**LOOPBACK_WEBRTC))  # our WHIP publisher, like the workers, on 127.0.0.1 only
    cfg, _, stream_key = keys_config(tmp_path, f"webrtc: {json.dumps(LOOPBACK_WEBRTC)}\n")
    proc = subprocess.Popen(
        [STREAMGUARD, "run", "--processes", "2", "--http", "127.0.0.1:0", "--redis-url", redis_server.url,
         "--config", str(cfg), "--arch", "tiny", "--threshold", "0"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "STREAMGUARD_HTTP_TOKEN": TOKEN},
    )
    lines = Lines(proc)

    async def log_line(pattern: str, timeout: float) -> re.Match[str]:
        """The next line of the supervisor's log that matches (read in a thread: the event loop runs on)."""
        return await asyncio.to_thread(lines.wait_for, pattern, timeout)

    events = EventReader(redis_server.url, stream_key)
    pc = None
    try:
        base = (await log_line(r"HTTP API for 2 workers on (http://127\.0\.0\.1:\d+) \(token required\)", 60))[1]
        async with aiohttp.ClientSession(headers=AUTH) as http, aiohttp.ClientSession() as anonymous:
            health = await poll(anonymous, f"{base}/healthz", lambda b: b.get("status") == "ok", 120)  # no token needed
            assert [w["up"] for w in health["workers"]] == [True, True] and health["streams"] == 0
            async with anonymous.get(f"{base}/streams") as resp:
                assert resp.status == 401  # the front door asks for the token itself

            # a new stream goes to the worker with the fewest; a name is unique across workers
            for name, cam in (("a", "cam1"), ("b", "cam2")):
                async with http.post(f"{base}/streams", json={"name": name, "url": rtsp_server.url(cam)}) as resp:
                    assert resp.status == 201 and resp.headers["Location"] == f"/streams/{name}", await resp.text()
            async with http.get(f"{base}/streams") as resp:
                owners = {s["name"]: s["worker"] for s in (await resp.json())["streams"]}
            assert sorted(owners) == ["a", "b"] and sorted(owners.values()) == [0, 1]
            async with http.post(f"{base}/streams", json={"name": "b", "url": rtsp_server.url("cam1")}) as resp:
                assert resp.status == 409 and "stream b already exists" in (await resp.json())["error"]
            async with http.post(f"{base}/streams", json={"name": "c", "url": "x.mp4", "colour": 1}) as resp:
                assert resp.status == 400 and "unknown field" in (await resp.json())["error"]  # a worker's own check
            async with http.get(f"{base}/streams/nosuch") as resp:
                assert resp.status == 404

            # both workers analyse and publish; /metrics has each one's series, labelled
            await events.wait_for(lambda e: e.type == "alert" and e.stream == "a", 60, what="an alert on a")
            await events.wait_for(lambda e: e.type == "alert" and e.stream == "b", 60, what="an alert on b")
            async with anonymous.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
            for name, worker in owners.items():
                assert re.search(rf'streamguard_frames_analysed_total\{{stream="{name}",worker="{worker}"\}} [1-9]', metrics)
            assert 'streamguard_worker_up{worker="0"} 1.0' in metrics and 'streamguard_worker_up{worker="1"} 1.0' in metrics

            # WHIP through the front door, and its DELETE back to the worker that holds it
            pc = await make_offer()
            location, _ = await whip_publish(http, base, "call", pc)
            await poll(http, f"{base}/streams/call", lambda s: s.get("state") == "live", 30)
            async with http.delete(base + location) as resp:
                assert resp.status == 200
            async with http.get(f"{base}/streams/call") as resp:
                assert resp.status == 404

            # the worker holding a dies: the front door says so, and adds a back once it is restarted
            worker = owners["a"]
            pid = int((await log_line(rf"worker {worker} started \(pid (\d+)\)", 1))[1])
            os.kill(pid, signal.SIGKILL)
            down = await poll(anonymous, f"{base}/healthz", lambda b: b.get("status") == 503, 30)
            assert down == {"status": 503}  # degraded while a worker is down
            await log_line(rf"worker {worker}: adding stream a \(added through the API\) back", 120)
            status = await poll(http, f"{base}/streams/a", lambda s: s.get("state") == "live", 30)
            assert status["name"] == "a"
            async with http.delete(f"{base}/streams/a") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/streams") as resp:
                assert [s["name"] for s in (await resp.json())["streams"]] == ["b"]
        proc.send_signal(signal.SIGTERM)
        await log_line(r"workers ended: exit codes \[0, 0\], 1 restart\(s\)", 60)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if pc is not None:
            await pc.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await events.close()
    assert not any("Traceback" in line for line in lines.read_to_end(10))
