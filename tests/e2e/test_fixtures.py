"""The shared fixtures work: real redis-server, the RTSP and FLV servers, the sample video."""

from __future__ import annotations

import itertools
import time

import av
import pytest
import redis

from streamguard.errors import StreamguardError
from streamguard.samples import FRAME_SIZE, make_two_face_video
from lab.servers.rtsp import FlvServer

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


def decoded(url: str, frames: int) -> list[av.VideoFrame]:
    """Up to `frames` frames of the stream at `url`, fewer if it ends first."""
    with av.open(url, options=LOW_LATENCY, timeout=5.0) as container:
        return list(itertools.islice(container.decode(video=0), frames))


def test_flv_server_serves_each_file_on_its_own_port_from_its_first_frame(sample_video, tmp_path):
    server = FlvServer({"a": sample_video, "b": sample_video}, tmp_path)
    server.start()
    try:
        assert server.url("a") != server.url("b") and server.url("a").startswith("tcp://127.0.0.1:")
        for name in ("a", "b"):
            assert first_frame_seconds(server.url(name)) < 1.0
            assert decoded(server.url(name), 1)[0].time == 0.0  # each client starts at the file's beginning
        with pytest.raises(KeyError, match="no FLV stream 'c'"):
            server.url("c")
    finally:
        server.stop()


def test_flv_server_loops_a_clip_or_ends_it_after_one_pass(tmp_path):
    clip = make_two_face_video(tmp_path / "one_second.mp4", seconds=1.0, size=(320, 180))  # 25 frames
    looping, once = FlvServer({"c": clip}, tmp_path / "loop"), FlvServer({"c": clip}, tmp_path / "once", loop=False)
    for server in (looping, once):
        server.log.parent.mkdir()
        server.start()
    try:
        times = [f.time for f in decoded(looping.url("c"), 40)]
        assert len(times) == 40 and times == sorted(set(times)) and times[-1] == pytest.approx(39 / 25)
        assert len(decoded(once.url("c"), 40)) == 25
    finally:
        looping.stop()
        once.stop()


def test_flv_server_restarts_on_the_same_port(sample_video, tmp_path):
    server = FlvServer({"cam": sample_video}, tmp_path)
    server.start()
    url = server.url("cam")
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        av.open(url, options=LOW_LATENCY, timeout=5.0)
    server.start()
    try:
        assert server.url("cam") == url and first_frame_seconds(url) < 1.0
    finally:
        server.stop()


def test_flv_server_says_which_file_it_cannot_read(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(StreamguardError, match=r"the FLV test server did not start: flv_server: cannot read .*bad\.mp4"):
        FlvServer({"cam": bad}, tmp_path).start()
