"""The HTTP control API against a live pipeline: streams added and removed at run time,
credentials never shown, the token enforced, bad requests answered 4xx; and
`streamguard run --http` as a user runs it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal

import aiohttp
import pytest

from streamguard.redis.embedded import free_port
from streamguard.ingest.hwaccel import cuda_decode_problem
from tests.support.harness import EventReader, live_config, live_pipeline
from tests.support.cli import STREAMGUARD
from tests.support.http import AUTH, TOKEN, poll


async def test_streams_are_added_and_removed_at_run_time(rtsp_server, redis_server, caplog):
    caplog.set_level(logging.INFO)
    cfg = live_config(serve=True, token=TOKEN, ingest={"backoff_initial_s": 0.2, "backoff_max_s": 1.0})
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession(headers=AUTH) as http:
        base = live.server.url
        secret_url = rtsp_server.url("cam2").replace("rtsp://", "rtsp://admin:hunter2@")
        per_stream = {"analysis_fps": 2, "rtsp_transport": "udp"}  # this stream's own ingest settings
        async with http.post(f"{base}/streams", json={"name": "lobby", "url": secret_url, "ingest": per_stream}) as resp:
            assert resp.status == 201 and resp.headers["Location"] == "/streams/lobby"
            added = await resp.json()
        assert added["name"] == "lobby" and added["url"] == secret_url.replace("admin:hunter2", "***")
        status = await poll(http, f"{base}/streams/lobby", lambda s: s["state"] == "live" and s["fps"] > 15, 10)
        assert status["resolution"] == "1280x720" and status["last_frame_age_s"] < 1 and status["reconnects"] == 0
        await live.events.wait_for(lambda e: e.type == "alert" and e.stream == "lobby", 20, what="an alert on lobby")
        status = await poll(http, f"{base}/streams/lobby", lambda s: s["active_tracks"] >= 2, 5)
        assert status["frames_analysed"] > 0
        source = live.pipeline.workers["lobby"].source
        assert source.cfg.rtsp_transport == "udp" and source.frames_sampled / source.frames_decoded < 0.12  # 2 of 25 fps

        async with http.post(f"{base}/streams", json={"name": "lobby", "url": rtsp_server.url("cam1")}) as resp:
            assert resp.status == 409 and (await resp.json()) == {"error": "stream lobby already exists"}

        # A camera that is not up yet is retried, not failed: it may be rebooting.
        async with http.post(f"{base}/streams", json={"name": "later", "url": f"rtsp://127.0.0.1:{free_port()}/x"}) as resp:
            assert resp.status == 201
        later = await poll(http, f"{base}/streams/later", lambda s: s["state"] == "reconnecting", 10)
        assert "Connection refused" in later["detail"] and later["error"] is None
        async with http.get(f"{base}/streams") as resp:
            assert sorted(s["name"] for s in (await resp.json())["streams"]) == ["later", "lobby"]

        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
        assert 'streamguard_stream_state{stream="lobby",streamguard_stream_state="live"} 1.0' in text
        assert 'streamguard_stream_state{stream="later",streamguard_stream_state="reconnecting"} 1.0' in text
        assert 'streamguard_frames_decoded_total{stream="lobby"}' in text and "streamguard_batch_size_bucket" in text

        for name in ("later", "lobby"):
            async with http.delete(f"{base}/streams/{name}") as resp:
                assert resp.status == 200
                removed = (await resp.json())["removed"]
            assert removed["name"] == name and removed["error"] is None
        assert removed["frames_analysed"] > 0
        async with http.get(f"{base}/streams/lobby") as resp:
            assert resp.status == 404 and (await resp.json()) == {"error": "no stream named lobby"}
        async with http.get(f"{base}/metrics") as resp:
            assert 'stream="lobby"' not in await resp.text()  # a removed stream's series are gone
    assert live.events.states("lobby")[:2] == ["connecting", "live"] and live.events.states("lobby")[-1] == "ended"
    assert all("hunter2" not in e.to_json() for e in live.events.events)
    assert "hunter2" not in caplog.text


async def test_token_cors_and_bad_requests(redis_server):
    cfg = live_config(serve=True, token=TOKEN, http={"max_body_bytes": 2048, "cors_origins": ["https://app.example"]})
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession() as http:
        base = live.server.url

        async def answer(method: str, path: str, headers: dict | None = None, **kw) -> tuple[int, dict]:
            async with http.request(method, base + path, headers=headers if headers is not None else AUTH, **kw) as resp:
                assert resp.content_type == "application/json"
                return resp.status, await resp.json()

        # Probes and scrapers need no token; everything else does.
        assert await answer("GET", "/healthz", {}) == (200, {"status": "ok", "streams": 0, "live": 0})
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200 and "streamguard_frames_decoded" in await resp.text()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, body = await answer("GET", "/streams", headers)
            assert status == 401 and body == {"error": "missing or wrong bearer token"}
        async with http.post(f"{base}/whip/cam", data="v=0", headers={"Content-Type": "application/sdp"}) as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")

        bad = [
            ("POST", "/streams", {"data": "name=a", "headers": {**AUTH, "Content-Type": "text/plain"}}, 415, "JSON"),
            ("POST", "/streams", {"data": "{not json", "headers": {**AUTH, "Content-Type": "application/json"}}, 400, "not JSON"),
            ("POST", "/streams", {"json": ["a", "b"]}, 400, "JSON object"),
            ("POST", "/streams", {"json": {"name": "a b", "url": "x"}}, 400, "invalid value for 'name'"),
            ("POST", "/streams", {"json": {"name": "a"}}, 400, "invalid value for 'url': Field required"),
            ("POST", "/streams", {"json": {"name": "a", "url": "x", "fps": 3}}, 400, "'fps': unknown field"),
            ("POST", "/streams", {"json": {"name": "a", "url": "x", "ingest": {"analysis_fps": 0}}}, 400,
             "'ingest.analysis_fps': Input should be greater than 0"),
            ("POST", "/streams", {"json": {"name": "a", "url": "x", "ingest": {"queue_size": 4}}}, 400, "other than queue_size"),
            *([("POST", "/streams", {"json": {"name": "a", "url": "x", "ingest": {"hwaccel": "cuda"}}}, 400,
                "'ingest.hwaccel': cannot decode on the GPU here")] if cuda_decode_problem() else []),
            ("POST", "/streams", {"json": {"name": "a", "url": "x" * 4000}}, 413, "Maximum request body size 2048"),
            ("DELETE", "/streams/nope", {}, 404, "no stream named nope"),
            ("GET", "/nope", {}, 404, "Not Found"),
            ("PUT", "/streams", {}, 405, "Method Not Allowed"),
        ]
        for method, path, kw, want, needle in bad:
            headers = kw.pop("headers", AUTH)
            status, body = await answer(method, path, headers, **kw)
            assert status == want and needle in body["error"], (method, path, status, body)

        # A browser page of an allowed origin: preflight answered, and it can read an error.
        preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization, content-type"}
        async with http.options(f"{base}/whip/cam", headers=preflight) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        async with http.post(f"{base}/whip/cam", data="v=0", headers={"Origin": "https://app.example", "Content-Type": "application/sdp"}) as resp:
            assert resp.status == 401 and resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "Location" in resp.headers["Access-Control-Expose-Headers"]
        # The control routes are never served to another origin's page, even a listed one (test_http_security.py).
        for origin in ("https://app.example", "https://evil.example"):
            async with http.get(f"{base}/streams", headers={"Origin": origin, **AUTH}) as resp:
                assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
        assert await answer("GET", "/healthz", {}) == (200, {"status": "ok", "streams": 0, "live": 0})


@pytest.mark.slow
async def test_streamguard_run_serves_the_api_and_keeps_running_without_streams(rtsp_server, redis_server, tmp_path):
    cfg = live_config()  # for its per-test Redis keys
    config = tmp_path / "cfg.yaml"
    config.write_text(json.dumps({"redis": {"channel": cfg.redis.channel, "stream_key": cfg.redis.stream_key}}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        STREAMGUARD, "run", "--http", f"127.0.0.1:{port}", "--redis-url", redis_server.url, "--config", str(config),
        "--arch", "tiny", "--threshold", "0", stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "STREAMGUARD_HTTP_TOKEN": TOKEN},
    )
    events = EventReader(redis_server.url, cfg.redis.stream_key)
    try:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            await poll(http, f"{base}/healthz", lambda b: b.get("status") == "ok", 60)  # up, with no stream
            async with http.get(f"{base}/streams") as resp:
                assert resp.status == 200 and (await resp.json()) == {"streams": []}
            async with http.post(f"{base}/streams", json={"name": "cam", "url": rtsp_server.url("cam1")}) as resp:
                assert resp.status == 201
            await poll(http, f"{base}/streams/cam", lambda s: s.get("state") == "live", 10)
            await events.wait_for(lambda e: e.type == "alert" and e.stream == "cam", 20, what="an alert")
            async with http.delete(f"{base}/streams/cam") as resp:
                assert resp.status == 200
            await poll(http, f"{base}/healthz", lambda b: b == {"status": "ok", "streams": 0, "live": 0}, 5)
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await events.close()
    log = stderr.decode()
    assert proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log and f"HTTP API on {base} (token required)" in log
