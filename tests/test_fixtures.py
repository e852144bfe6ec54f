"""The shared fixtures work: real redis-server and RTSP server, the sample video."""

from __future__ import annotations

import time

import av
import pytest
import redis

from streamguard.samples import FRAME_SIZE

LOW_LATENCY = {"rtsp_transport": "tcp", "flags": "low_delay", "probesize": "32768", "analyzeduration": "0"}


def first_frame_seconds(url: str) -> float:
    """Seconds from av.open to the first decoded frame (checks its size too)."""
    start = time.monotonic()
    with av.open(url, options=LOW_LATENCY, timeout=5.0) as container:
        video = container.streams.video[0]
        video.thread_type = "SLICE"
        frame = next(container.decode(video))
        elapsed = time.monotonic() - start
    assert (frame.width, frame.height) == FRAME_SIZE
    return elapsed


def test_sample_video_is_30s_of_720p_h264(sample_video):
    with av.open(str(sample_video)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert (video.width, video.height) == FRAME_SIZE
        assert video.frames == 750  # 30 s at 25 fps


def test_redis_server_answers_ping(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping()
    client.close()


def test_fresh_redis_restarts_empty_on_the_same_port(fresh_redis):
    client = redis.Redis.from_url(fresh_redis.url, socket_timeout=2)
    client.set("k", "v")
    fresh_redis.stop()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    fresh_redis.start()
    assert client.ping()
    assert client.get("k") is None  # no persistence: a restart is an empty server
    client.close()


def test_rtsp_server_serves_both_mounts_promptly(rtsp_server):
    for name in ("cam1", "cam2"):
        assert first_frame_seconds(rtsp_server.url(name)) < 1.0  # ~0.06 s measured


def test_rtsp_server_restarts_on_the_same_port(rtsp_server):
    url = rtsp_server.url("cam1")
    try:
        rtsp_server.stop()
        with pytest.raises(ConnectionRefusedError):
            av.open(url, options=LOW_LATENCY, timeout=5.0)
    finally:
        rtsp_server.start()
    assert rtsp_server.url("cam1") == url
    assert first_frame_seconds(url) < 1.0
