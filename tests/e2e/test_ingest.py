"""Ingest against real sources: the GStreamer RTSP server, real files, real sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.errors import SourceError
from streamguard.ingest import LatestQueue, QueueClosed, StreamSource, is_file_url
from streamguard.ingest.pyav_source import STOP_GRACE_S
from streamguard.samples import FRAME_SIZE, render_frame
from streamguard.types import Frame
from streamguard.redis.embedded import free_port
from tests.support.sources import collect, looks_like_sample_at, make_source, metric, stop, wait_for_state

# --- is_file_url (redact_url: tests/unit/test_redact.py) ---------------------------------


@given(path=st.text(min_size=1).filter(lambda p: "://" not in p))
def test_anything_without_a_scheme_is_a_file(path):
    assert is_file_url(path)


@pytest.mark.parametrize("url", ["rtsp://127.0.0.1:8554/cam1", "srt://h:9000", "whep+https://h/x"])
def test_urls_with_a_scheme_are_live(url):
    assert not is_file_url(url)


# --- LatestQueue ------------------------------------------------------------------


async def test_latest_queue_drops_oldest_and_counts():
    dropped: list[int] = []
    queue: LatestQueue[int] = LatestQueue(2, on_drop=dropped.append)
    for i in range(5):
        queue.put_nowait(i)
    assert len(queue) == 2
    assert queue.dropped == 3
    assert dropped == [0, 1, 2]
    assert [await queue.get(), await queue.get()] == [3, 4]


async def test_latest_queue_get_waits_for_an_item():
    queue: LatestQueue[str] = LatestQueue(1)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait("a")
    assert await asyncio.wait_for(getter, 1) == "a"


async def test_latest_queue_learns_the_consumers_pace_and_forgets_an_announced_take_once_taken():
    queue: LatestQueue[int] = LatestQueue(1)
    for i in range(3):
        queue.put_nowait(i)
        await queue.get()
    assert queue.get_interval is not None and queue.get_interval < 0.5
    assert queue.pace == queue.get_interval  # nothing announced: the measured pace
    queue.announce_get(time.monotonic() + 1.0)
    queue.put_nowait(3)
    await queue.get()
    assert queue.next_get_at is None  # that take happened: what comes next is not known


async def test_latest_queue_pace_is_the_announced_one_however_long_gets_wait():
    queue: LatestQueue[int] = LatestQueue(1)
    start = time.monotonic() + 100.0
    for i in range(5):  # gets announced 0.7 s apart (whenever they really happen)
        queue.announce_get(start + 0.7 * i)
        queue.put_nowait(i)
        await queue.get()
    assert queue.announced_interval == pytest.approx(0.7) and queue.pace == pytest.approx(0.7)
    queue.put_nowait(5)
    await queue.get()  # an unannounced get: the announced pace no longer holds
    assert queue.announced_interval is None and queue.pace == queue.get_interval


async def test_latest_queue_pace_leaves_out_the_time_a_get_waited_for_an_item():
    """A consumer kept waiting (keyframes only, one a second) asks for its next item 0.2 s
    after it got one: that is its pace, not the second it waited."""
    queue: LatestQueue[int] = LatestQueue(1)
    loop = asyncio.get_running_loop()
    for i in range(4):
        queue.announce_get(time.monotonic())  # due now, but nothing comes for 0.3 s
        loop.call_later(0.3, queue.put_nowait, i)
        await asyncio.wait_for(queue.get(), 2)
        got = time.monotonic()
        queue.announce_get(got + 0.2)
        queue.put_nowait(i)
        await asyncio.wait_for(queue.get(), 2)
    assert queue.announced_interval == pytest.approx(0.2, abs=0.05)  # counting from the announcements: 0.35-0.5


async def test_latest_queue_close_drains_then_raises():
    queue: LatestQueue[int] = LatestQueue(3)
    queue.put_nowait(1)
    queue.put_nowait(2)
    queue.close()
    assert await queue.get() == 1
    assert await queue.get() == 2
    with pytest.raises(QueueClosed):
        await queue.get()
    with pytest.raises(QueueClosed):
        queue.put_nowait(3)


async def test_latest_queue_close_wakes_a_waiting_getter():
    queue: LatestQueue[int] = LatestQueue(1)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.close()
    with pytest.raises(QueueClosed):
        await asyncio.wait_for(getter, 1)


async def test_latest_queue_put_waits_for_room_instead_of_dropping():
    queue: LatestQueue[int] = LatestQueue(1)
    await queue.put(1)
    putter = asyncio.create_task(queue.put(2))
    await asyncio.sleep(0)
    assert not putter.done()
    assert await queue.get() == 1
    await asyncio.wait_for(putter, 1)
    assert await queue.get() == 2
    assert queue.dropped == 0


# --- Frame ------------------------------------------------------------------------


def test_a_decoded_frame_converts_its_pixels_on_first_use_only():
    rgb = render_frame(1.0)
    picture = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    frame = Frame.decoded("cam", 1.0, 2.0, picture)
    assert frame.size == (rgb.shape[1], rgb.shape[0]) and frame._rgb is None  # size needs no conversion
    first = frame.rgb
    assert first.shape == rgb.shape and np.abs(first.astype(np.int16) - rgb).mean() < 3  # YUV 4:2:0 round trip
    assert frame.rgb is first  # converted once



# --- StreamSource ------------------------------------------------------------------



async def test_rtsp_source_delivers_frames_at_the_analysis_rate(rtsp_server):
    source, queue, states = make_source(rtsp_server.url("cam1"), "rtsp-rate", analysis_fps=5.0)
    task = asyncio.create_task(source.run())
    try:
        first = await asyncio.wait_for(queue.get(), 5)
        frames = await collect(queue, 2.0)
        assert 8 <= len(frames) <= 12  # 5 fps for 2 s
        assert all(f.size == FRAME_SIZE and f.stream == "rtsp-rate" for f in [first, *frames])
        assert all(looks_like_sample_at(f) for f in [first, *frames])
        assert np.allclose(np.diff([f.pts for f in frames]), 0.2, atol=0.01)
        assert source.state == "live" and ("live", "1280x720") in states
        assert metric("streamguard_stream_live", "rtsp-rate") == 1
        assert source.frames_decoded >= 4 * source.frames_sampled
        assert source.last_frame_wall is not None and time.time() - source.last_frame_wall < 1.0
    finally:
        await stop(task)
    assert source.state == "ended"
    assert metric("streamguard_stream_live", "rtsp-rate") == 0
    assert metric("streamguard_frames_sampled_total", "rtsp-rate") == source.frames_sampled
    assert metric("streamguard_frames_decoded_total", "rtsp-rate") == source.frames_decoded


async def test_unreachable_rtsp_url_fails_with_the_redacted_url():
    port = free_port()
    source, _, states = make_source(f"rtsp://admin:hunter2@127.0.0.1:{port}/cam", "unreachable")
    with pytest.raises(SourceError) as err:
        await asyncio.wait_for(source.run(), 5)
    message = str(err.value)
    assert message == f"stream unreachable: cannot open rtsp://***@127.0.0.1:{port}/cam: Connection refused"
    assert "hunter2" not in message and all("hunter2" not in d for _, d in states)
    assert source.state == "failed"


async def test_silent_server_times_out_with_a_clear_error():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/cam"
        source, _, _ = make_source(url, "silent", open_timeout_s=0.5)
        with pytest.raises(SourceError, match=r"cannot open rtsp://127\.0\.0\.1:\d+/cam: no answer within 0\.5 s"):
            await asyncio.wait_for(source.run(), 5)


async def test_cancel_while_opening_stops_within_the_open_timeout():
    with socket.create_server(("127.0.0.1", 0)) as silent:
        source, _, _ = make_source(f"rtsp://127.0.0.1:{silent.getsockname()[1]}/cam", "cancel-open", open_timeout_s=1.0)
        task = asyncio.create_task(source.run())
        await asyncio.sleep(0.2)  # let it block inside av.open
        await stop(task, within=1.5)


@pytest.mark.parametrize(
    ("filename", "why"), [("notes.txt", "it is a text file"), ("notes.mp4", "Invalid data found when processing input")]
)
async def test_text_file_is_not_a_video(tmp_path, filename, why):
    path = tmp_path / filename
    path.write_text("hello, this is not a video\n" * 100)
    source, _, _ = make_source(str(path), "text")
    with pytest.raises(SourceError) as err:
        await source.run()
    assert str(err.value) == f"stream text: {path} is not a video: {why}"


async def test_missing_file_fails_clearly(tmp_path):
    path = tmp_path / "missing.mp4"
    source, _, _ = make_source(str(path), "missing")
    with pytest.raises(SourceError) as err:
        await source.run()
    assert str(err.value) == f"stream missing: cannot open {path}: No such file or directory"


async def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as out:
        audio = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    source, _, _ = make_source(str(path), "audio")
    with pytest.raises(SourceError, match=f"^stream audio: no video stream in {path}$"):
        await source.run()


async def run_then_close(source: StreamSource, queue: LatestQueue[Frame]) -> None:
    """What the source's owner does: close the queue when the source is done."""
    try:
        await source.run()
    finally:
        queue.close()


async def test_offline_file_delivers_every_sampled_frame_without_drops(sample_video):
    source, queue, _ = make_source(str(sample_video), "offline", realtime=False, analysis_fps=5.0)
    task = asyncio.create_task(run_then_close(source, queue))
    frames: list[Frame] = []
    with pytest.raises(QueueClosed):
        while True:
            frames.append(await asyncio.wait_for(queue.get(), 5))
            await asyncio.sleep(0.002)  # a consumer slower than the decoder
    await asyncio.wait_for(task, 5)
    assert [round(f.pts, 3) for f in frames] == [round(i * 0.2, 3) for i in range(150)]
    assert source.frames_dropped == queue.dropped == 0
    assert source.frames_decoded == 750 and source.state == "ended"
    assert looks_like_sample_at(frames[77])


async def test_offline_file_stops_when_the_owner_closes_the_queue(sample_video):
    source, queue, _ = make_source(str(sample_video), "offline-closed", realtime=False)
    task = asyncio.create_task(source.run())
    for _ in range(3):
        await asyncio.wait_for(queue.get(), 5)
    queue.close()
    await asyncio.wait_for(task, 2)
    assert source.frames_sampled < 10 and source.state == "ended"


async def test_realtime_file_is_paced_by_its_timestamps(sample_video):
    source, queue, _ = make_source(str(sample_video), "paced", realtime=True, analysis_fps=5.0, queue_size=4)
    task = asyncio.create_task(source.run())
    try:
        frames = [await asyncio.wait_for(queue.get(), 5)]
        frames += await collect(queue, 1.5)
    finally:
        await stop(task)
    assert 7 <= len(frames) <= 10
    lag = [(f.wall_ts - frames[0].wall_ts) - (f.pts - frames[0].pts) for f in frames]
    assert max(abs(x) for x in lag) < 0.1


async def test_cancel_stops_a_live_source_promptly(rtsp_server):
    source, queue, _ = make_source(rtsp_server.url("cam2"), "cancel-live")
    task = asyncio.create_task(source.run())
    await asyncio.wait_for(queue.get(), 5)
    await stop(task, within=1.0)
    assert task.cancelled() and source.state == "ended"


async def test_cancel_returns_even_when_the_decoding_thread_never_stops(monkeypatch, caplog):
    # A stand-in for FFmpeg ignoring its own timeouts (seen once): _read blocks and never checks the stop flag.
    source, _, _ = make_source("rtsp://127.0.0.1:1/cam", "stuck", open_timeout_s=0.2, stall_timeout_s=0.3)
    entered, release = threading.Event(), threading.Event()
    monkeypatch.setattr(source, "_read", lambda *_: (entered.set(), release.wait(30)))
    task = asyncio.create_task(source.run())
    try:
        assert await asyncio.to_thread(entered.wait, 5)
        await stop(task, within=0.3 + STOP_GRACE_S + 0.5)  # the longer timeout plus the grace, not forever
        assert task.cancelled()
        assert "stream stuck: the decoding thread is still inside FFmpeg 1.3 s after stop; leaving it behind" in caplog.text
    finally:
        release.set()


async def test_dropped_rtsp_stream_reconnects_when_the_server_returns(rtsp_server):
    source, queue, states = make_source(
        rtsp_server.url("cam1"), "reconnect", backoff_initial_s=0.1, backoff_max_s=0.4
    )
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(queue.get(), 5)
        mark = len(states)
        try:
            rtsp_server.stop()
            await wait_for_state(states, "reconnecting", 5, after=mark)
            await asyncio.sleep(0.5)  # a few refused attempts while it is down
            assert source.state == "reconnecting" and metric("streamguard_stream_live", "reconnect") == 0
        finally:
            rtsp_server.start()
        mark = len(states)
        await wait_for_state(states, "live", 10, after=mark)
        frame = await asyncio.wait_for(queue.get(), 5)
        assert frame.size == FRAME_SIZE
        assert source.reconnects >= 2
        assert metric("streamguard_reconnects_total", "reconnect") == source.reconnects
        assert any("Connection refused" in d for s, d in states if s == "reconnecting")
    finally:
        await stop(task)


async def test_live_source_without_reconnect_ends_when_the_server_goes(rtsp_server):
    source, queue, _ = make_source(rtsp_server.url("cam2"), "no-reconnect", reconnect=False)
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(queue.get(), 5)
        rtsp_server.stop()
        await asyncio.wait_for(task, 5)  # returns: the server closed the stream
    finally:
        rtsp_server.start()
        await stop(task)
    assert source.state == "ended" and source.reconnects == 0


async def test_a_consumer_slower_than_the_keyframes_gets_fresh_frames_and_group_tails_are_not_decoded(rtsp_server):
    name = "rtsp-demand"
    # Keyframes only from takes 2 keyframe intervals apart (the default is 1).
    source, queue, _ = make_source(rtsp_server.url("cam1"), name, analysis_fps=5.0, keyframes_only_beyond=2.0)
    task = asyncio.create_task(source.run())
    try:
        # The consumer takes a frame every 1.4 s (the sample has a keyframe every second) and, as the
        # pipeline's look-ahead does, says when it will take the next.
        for _ in range(4):
            await asyncio.wait_for(queue.get(), 5)
            queue.announce_get(time.monotonic() + 1.4)
            await asyncio.sleep(1.4)
        decoded, t0 = source.frames_decoded, time.monotonic()
        frames, ages = [], []
        for _ in range(4):
            frames.append(await asyncio.wait_for(queue.get(), 5))
            ages.append(time.time() - frames[-1].wall_ts)
            queue.announce_get(time.monotonic() + 1.4)
            await asyncio.sleep(1.4)
        rate = (source.frames_decoded - decoded) / (time.monotonic() - t0)
    finally:
        await stop(task)
    assert rate < 0.7 * 25  # the rest of a group after a take is left undecoded
    assert sorted(ages)[1] < 0.3  # frames are as fresh as the 5 fps sampling allows, not a keyframe old
    assert all(looks_like_sample_at(f) for f in frames)  # whole, clean pictures


async def test_a_slow_consumer_gets_keyframes_and_the_rest_is_not_decoded(rtsp_server):
    name = "rtsp-keyframes"
    source, queue, _ = make_source(rtsp_server.url("cam2"), name, analysis_fps=5.0)
    task = asyncio.create_task(source.run())
    try:
        for _ in range(3):  # the consumer takes a frame every 2.5 s (the sample has a keyframe every second)
            await asyncio.wait_for(queue.get(), 5)
            await asyncio.sleep(2.5)
        decoded, t0 = source.frames_decoded, time.monotonic()
        frames = [await asyncio.wait_for(queue.get(), 5)]
        await asyncio.sleep(2.5)
        frames.append(await asyncio.wait_for(queue.get(), 5))
        rate = (source.frames_decoded - decoded) / (time.monotonic() - t0)
    finally:
        await stop(task)
    assert rate < 2.0  # about one keyframe a second, not 25 frames
    assert all(looks_like_sample_at(f) for f in frames)  # whole, clean pictures
    assert (metric("streamguard_packets_unneeded_total", name) or 0) > 40


async def test_a_consumer_that_speeds_up_is_not_held_to_keyframes_by_waiting_for_them(rtsp_server):
    name = "rtsp-speeds-up"
    source, queue, _ = make_source(rtsp_server.url("cam2"), name, analysis_fps=5.0)
    task = asyncio.create_task(source.run())

    async def take_every(interval: float) -> None:
        # as the pipeline's look-ahead does: say when, wait until then, take (waiting if nothing is there)
        await asyncio.wait_for(queue.get(), 5)
        queue.announce_get(time.monotonic() + interval)
        await asyncio.sleep(interval)

    try:
        for _ in range(4):  # slower than the keyframes (one a second): keyframes only
            await take_every(1.6)
        for _ in range(8):  # then faster: at first it waits for keyframes
            await take_every(0.3)
        t0, taken = time.monotonic(), 0
        while time.monotonic() - t0 < 3.0:
            await take_every(0.3)
            taken += 1
        rate = taken / (time.monotonic() - t0)
    finally:
        await stop(task)
    assert rate > 2.0  # a frame every 0.3 s or so, not one per keyframe


async def test_a_consumer_held_up_for_a_while_is_not_left_on_keyframes(rtsp_server):
    """A consumer that does not announce its takes (the pipeline's, for a frame without faces),
    held up for a while (start-up, a slow disk), then taking every frame it can: its pace is
    its own time between gets, not the time it waited inside them for the keyframes its slow
    gaps brought (measured: 32 NVDEC streams' start-up left one stream at one frame a second
    for the rest of the run)."""
    name = "rtsp-held-up"
    source, queue, _ = make_source(rtsp_server.url("cam2"), name, analysis_fps=5.0)
    task = asyncio.create_task(source.run())
    try:
        for _ in range(3):  # held up for a while: slower than the keyframes (one a second)
            await asyncio.wait_for(queue.get(), 5)
            await asyncio.sleep(2.0)
        t0 = time.monotonic()
        taken: list[float] = []
        while time.monotonic() - t0 < 6.0:
            await asyncio.wait_for(queue.get(), 5)
            taken.append(time.monotonic() - t0)
    finally:
        await stop(task)
    late = [t for t in taken if t >= 3.0]  # once settled: 5 analysed fps, not one frame per keyframe
    assert len(late) / 3.0 > 3.0, taken
