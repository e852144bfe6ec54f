"""The pipeline in-process on a real video file into a real Redis: thumbnails, live
scores, calibrated thresholds."""

from __future__ import annotations

import asyncio
import io
import threading
from dataclasses import replace

import numpy as np
import pytest
import redis.asyncio as aioredis
from PIL import Image

from streamguard import metrics
from streamguard.events import EventV1, ScoresV1, parse_any_event
from streamguard.redis.sink import RedisSink
from streamguard.config import build_config
from streamguard.inference.contract import Engine
from streamguard.inference.torch_engine import TorchEngine
from streamguard.model.checkpoint import untrained_model
from streamguard.app import running
from streamguard.pipeline import Pipeline
from tests.support.harness import wait_until


def face_events(payloads) -> list[EventV1]:
    return [e for e in map(parse_any_event, payloads) if isinstance(e, EventV1)]


@pytest.fixture(scope="module")
def tiny_engine():
    engine = TorchEngine(untrained_model("tiny"))
    yield engine
    engine.close()


async def run_pipeline(cfg, engine, url, duration=None):
    sink = RedisSink(cfg.redis, url)
    async with running(cfg, sink, engine=engine) as app:
        await app.pipeline.wait(asyncio.Event(), duration)
    return app.reports, sink


def config(video, url, **scoring):
    return build_config({
        "streams": [{"name": "v", "url": str(video)}],
        "ingest": {"realtime": False, "analysis_fps": 5},
        "scoring": {"min_samples": 3, "scores_interval_s": 0.5, **scoring},
        "redis": {"url": url},
    })


async def test_alerts_carry_thumbnails_and_scores_stream_live(sample_video, fresh_redis, tiny_engine):
    cfg = config(sample_video, fresh_redis.url, threshold=0.0)
    client = aioredis.Redis.from_url(fresh_redis.url)
    pubsub = client.pubsub()
    await pubsub.subscribe(cfg.redis.scores_channel_prefix + "v")
    await pubsub.get_message(timeout=2.0)
    reports, sink = await run_pipeline(cfg, tiny_engine, fresh_redis.url, duration=None)
    assert reports[0].error is None and sink.dropped == 0

    events = face_events(f[b"event"] for _, f in await client.xrange(cfg.redis.stream_key))
    alerts = [e for e in events if e.type == "alert"]
    assert len({e.track for e in alerts}) >= 2
    for alert in alerts:
        assert alert.threshold_source == "config" and alert.policy == "mean"
        face_key, frame_key = alert.thumbnails["face"], alert.thumbnails["frame"]
        assert face_key.startswith(f"streamguard:thumb:{alert.id}:")
        face = Image.open(io.BytesIO(await client.get(face_key)))
        frame = Image.open(io.BytesIO(await client.get(frame_key)))
        assert (face.format, face.size) == ("JPEG", (224, 224))
        assert (frame.format, frame.size) == ("JPEG", (320, 180))
        assert 0 < await client.ttl(face_key) <= cfg.redis.thumbnail_ttl_s
    assert all(e.thumbnails is None for e in events if e.type != "alert")

    snapshots = []
    while (msg := await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)) is not None:
        snapshots.append(ScoresV1.model_validate_json(msg["data"]))
    assert snapshots, "no live scores published"
    assert all(s.stream == "v" for s in snapshots)
    tracks_seen = {i.track for s in snapshots for i in s.identities}
    assert tracks_seen >= {e.track for e in alerts}
    # rate limited on the stream's wall clock: at most one per interval, plus one
    spans = [b.ts - a.ts for a, b in zip(snapshots, snapshots[1:])]
    assert all(d >= cfg.scoring.scores_interval_s - 1e-6 for d in spans)
    await pubsub.aclose()
    await client.aclose()


async def test_calibrated_threshold_from_the_engine(sample_video, fresh_redis):
    loaded = untrained_model("tiny")
    engine = TorchEngine(replace(loaded, meta=replace(loaded.meta, threshold=0.0)))
    cfg = config(sample_video, fresh_redis.url)  # no threshold configured
    cfg.ingest.analysis_fps = 2
    try:
        _, sink = await run_pipeline(cfg, engine, fresh_redis.url, duration=None)
    finally:
        engine.close()
    client = aioredis.Redis.from_url(fresh_redis.url)
    events = face_events(f[b"event"] for _, f in await client.xrange(cfg.redis.stream_key))
    await client.aclose()
    alerts = [e for e in events if e.type == "alert"]
    assert alerts and all((e.threshold, e.threshold_source) == (0.0, "calibrated") for e in alerts)


class HeldEngine(Engine):
    """The real tiny engine behind a gate: every batch waits until the test opens it."""

    def __init__(self, inner: TorchEngine):
        self.inner = inner
        self.meta, self.embed_dim, self.input_size = inner.meta, inner.embed_dim, inner.input_size
        self.precision, self.concurrency = inner.precision, inner.concurrency
        self.calls = 0
        self.entered = threading.Event()
        self.gate = threading.Event()

    def infer(self, crops):
        self.calls += 1
        self.entered.set()
        if not self.gate.wait(30):
            raise TimeoutError("test gate never opened")
        return self.inner.infer(crops)

    def close(self) -> None:
        pass


async def test_the_next_frame_is_detected_while_the_model_scores_this_one(sample_video, fresh_redis, tiny_engine):
    engine = HeldEngine(tiny_engine)
    cfg = config(sample_video, fresh_redis.url)
    cfg.streams[0].name = "lookahead"
    detected = metrics.FACES_DETECTED.labels(stream="lookahead")
    before = detected._value.get()
    async with running(cfg, RedisSink(cfg.redis, fresh_redis.url), engine=engine) as app:
        try:
            assert await asyncio.to_thread(engine.entered.wait, 30)  # frame 1's two faces are with the model
            worker = app.pipeline.workers["lookahead"]
            # Frame 2's two faces are found while the model still holds frame 1 ...
            await wait_until(lambda: detected._value.get() - before >= 4, 30, "the next frame detected")
            # ... but it is tracked only after frame 1 is scored (the tracker sees frames in order).
            assert (worker.frames_analysed, engine.calls) == (1, 1)
            engine.gate.set()
            await wait_until(lambda: worker.frames_analysed >= 3, 30, "more frames analysed")
        finally:
            engine.gate.set()


class PreparedEngine(HeldEngine):
    """The real tiny engine (gate open) that records, when the pipeline prepares it, which streams were running."""

    def __init__(self, inner: TorchEngine, pipeline_of: list[Pipeline]):
        super().__init__(inner)
        self.gate.set()
        self.pipeline_of = pipeline_of
        self.prepared: list[tuple[int, list[str]]] = []

    def prepare(self, max_batch: int) -> None:
        self.prepared.append((max_batch, sorted(self.pipeline_of[0].workers)))


async def test_the_engine_is_prepared_for_max_batch_before_any_stream_starts(sample_video, fresh_redis, tiny_engine):
    """TorchEngine captures its CUDA graphs in `prepare`: beside live NVDEC decoders a capture failed."""
    pipeline_of: list[Pipeline] = []
    engine = PreparedEngine(tiny_engine, pipeline_of)
    cfg = config(sample_video, fresh_redis.url)
    cfg.streams[0].name = "prepared"
    cfg.batcher.max_batch = 24
    sink = RedisSink(cfg.redis, fresh_redis.url)
    await sink.start()
    pipeline = Pipeline(cfg, engine, sink)
    pipeline_of.append(pipeline)
    await pipeline.start()
    try:
        assert engine.prepared == [(24, [])]  # once, with the batcher's limit, before the stream existed
        await wait_until(lambda: engine.calls >= 1, 30, "a batch scored")
    finally:
        await pipeline.close()
        await sink.close(timeout=10)


def test_torch_on_the_cpu_has_nothing_to_prepare(tiny_engine):
    tiny_engine.prepare(64)  # no CUDA graphs: returns at once, and the engine still scores
    assert tiny_engine.infer(np.zeros((2, 224, 224, 3), np.uint8))[0].shape == (2,)


class FailingFirstEngine(HeldEngine):
    """The real tiny engine (gate open) whose first `failures` calls raise, as a CUDA error would."""

    def __init__(self, inner: TorchEngine, failures: int):
        super().__init__(inner)
        self.gate.set()
        self.failures = failures

    def infer(self, crops):
        if self.calls < self.failures:
            self.calls += 1
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().infer(crops)


async def test_a_failing_engine_call_leaves_its_crops_unscored_and_the_stream_running(sample_video, fresh_redis, tiny_engine):
    engine = FailingFirstEngine(tiny_engine, failures=2)
    cfg = config(sample_video, fresh_redis.url)
    cfg.streams[0].name = "survives"
    failures = metrics.ENGINE_FAILURES._value.get()
    async with running(cfg, RedisSink(cfg.redis, fresh_redis.url), engine=engine) as app:
        worker = app.pipeline.workers["survives"]
        await wait_until(lambda: engine.calls >= 5, 30, "calls after the two that failed")
        assert metrics.ENGINE_FAILURES._value.get() - failures == 2
        assert worker.error is None and not app.pipeline._tasks["survives"].done()  # the stream goes on
