"""Secrets in stream URLs never leave the process: the live HTTP API, Redis events, logs.

Each stream points at a closed loopback port, so its source fails (and retries) without
any traffic leaving the machine; what is checked is everything the process says about
it: the POST answer, GET /streams, /metrics, every event on the Redis Stream, the log,
and (through `streamguard run` as a user runs it) stderr with a newline in the URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import aiohttp
import pytest

from streamguard.events import StreamEventV1
from streamguard.redis.embedded import free_port
from tests.support.harness import live_config, live_pipeline

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STREAMGUARD = str(Path(sys.executable).parent / "streamguard")
SECRETS = ("RTMPKEY-s3cr3t", "APIKEY-s3cr3t", "AMZSIG-s3cr3t", "HASHPW-s3cr3t", "WHEPPW-s3cr3t", "WHEPTOKEN-s3cr3t")


def streams(port: int) -> dict[str, tuple[str, str]]:
    """name -> (URL with secrets, as it must be shown). All on 127.0.0.1:`port`, which nothing listens on."""
    at = f"127.0.0.1:{port}"
    return {
        "rtmp": (f"rtmp://{at}/live/RTMPKEY-s3cr3t", f"rtmp://{at}/live/***"),
        "apikey": (f"http://{at}/v.m3u8?api_key=APIKEY-s3cr3t&X-Amz-Signature=AMZSIG-s3cr3t&f=1",
                   f"http://{at}/v.m3u8?api_key=***&X-Amz-Signature=***&f=1"),
        # FFmpeg's host ends at the '#': 127.0.0.1 again, so even its misreading stays on loopback.
        "hashpw": (f"rtsp://127.0.0.1:{port}#HASHPW-s3cr3t?x@{at}/cam", f"rtsp://***@{at}/cam"),
        "whep": (f"whep+http://u:WHEPPW-s3cr3t@{at}/whep?token=WHEPTOKEN-s3cr3t", f"whep+http://***@{at}/whep?token=***"),
    }


def assert_no_secret(text: str, where: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{leaked} in {where}: {text[:2000]}"


async def test_the_api_events_metrics_and_logs_never_show_a_secret(redis_server, caplog):
    caplog.set_level(logging.DEBUG)
    port = free_port()
    cfg = live_config(serve=True, token=TOKEN, ingest={"backoff_initial_s": 0.2, "backoff_max_s": 0.5, "open_timeout_s": 2})
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession(headers=AUTH) as http:
        base = live.server.url
        for name, (url, shown) in streams(port).items():
            async with http.post(f"{base}/streams", json={"name": name, "url": url}) as resp:
                body = await resp.text()
                assert resp.status == 201, body
            assert json.loads(body)["url"] == shown
            assert_no_secret(body, f"the answer to POST {name}")
        for name in streams(port):  # each has failed to open at least once, with its error shown
            await live.events.wait_for(lambda e, n=name: isinstance(e, StreamEventV1) and e.stream == n
                                       and e.state == "reconnecting", 20, what=f"{name} reconnecting")
        async with http.get(f"{base}/streams") as resp:
            listing = await resp.text()
        shown = {s["name"]: s for s in json.loads(listing)["streams"]}
        assert {name: s["url"] for name, s in shown.items()} == {name: v[1] for name, v in streams(port).items()}
        assert all(s["state"] in ("connecting", "reconnecting") and s["detail"] for s in shown.values()), shown
        assert_no_secret(listing, "GET /streams")
        async with http.get(f"{base}/metrics") as resp:
            assert_no_secret(await resp.text(), "GET /metrics")
        await live.events.poll()
        state_events = [e for e in live.events.events if isinstance(e, StreamEventV1)]
        assert {e.url for e in state_events} == {v[1] for v in streams(port).values()}
        for event in live.events.events:
            assert_no_secret(event.to_json(), "a Redis event")
        for name in streams(port):
            async with http.delete(f"{base}/streams/{name}") as resp:
                assert_no_secret(await resp.text(), f"the answer to DELETE {name}")
    assert_no_secret(caplog.text, "the log")
    assert any("***" in r.getMessage() for r in caplog.records)  # the URLs were logged, redacted


@pytest.mark.slow
async def test_streamguard_run_logs_one_line_per_record_whatever_the_url_holds(redis_server, tmp_path):
    cfg = live_config()  # for its per-test Redis keys
    config = tmp_path / "cfg.yaml"
    config.write_text(json.dumps({"redis": {"channel": cfg.redis.channel, "stream_key": cfg.redis.stream_key},
                                  "ingest": {"open_timeout_s": 2}}))
    # The newline sits in the application, which is shown (the key is not): it must come out encoded.
    url = f"rtmp://127.0.0.1:{free_port()}/live\n12:00:00 ERROR streamguard: forged\x1b[2J/RTMPKEY-s3cr3t"
    proc = await asyncio.create_subprocess_exec(
        STREAMGUARD, "run", "--stream", f"cam={url}", "--redis-url", redis_server.url, "--config", str(config),
        "--arch", "tiny", stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = stderr.decode()
    # The source policy refuses a URL holding control characters before anything starts (exit 2): the one
    # line that says so shows the URL redacted, its controls encoded, and forges no record.
    assert proc.returncode == 2, log[-3000:]
    assert_no_secret(log, "stderr")
    assert "\x1b" not in log
    lines = log.splitlines()
    forged = [line for line in lines if "forged" in line]
    assert len(forged) == 1 and forged[0].startswith("streamguard: error: stream cam: "), log[-3000:]
    assert not any(line.startswith("12:00:00") for line in lines), log[-3000:]
    assert "/live%0A12:00:00 ERROR streamguard: forged%1B[2J/***" in log
