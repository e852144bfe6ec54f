"""Build the stages from config and own every task they run.

Per stream, two tasks: the source (PyAV decoding in its own thread, handing the
newest sampled frame to a bounded queue) and the analysis loop (faces in the
stream's own detection thread, then the shared micro-batcher, then scoring and
events). The stream's detection thread is a single-worker executor, so the
mediapipe graph is only ever used, and closed, from one thread.

One stream failing (bad URL, corrupt video, a decoder error) ends only that
stream's tasks; the others keep running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamguard import metrics
from streamguard.alerts.events import EventV1, ModelInfo
from streamguard.config import Config, StreamConfig
from streamguard.errors import SourceError
from streamguard.faces.stage import FaceStage
from streamguard.inference.batcher import CropsDropped, MicroBatcher
from streamguard.inference.engine import Engine
from streamguard.ingest.latest import LatestQueue, QueueClosed
from streamguard.ingest.source import StreamSource
from streamguard.ingest.urls import redact_url
from streamguard.scoring.scorer import StreamScorer
from streamguard.types import Frame, Sample

log = logging.getLogger(__name__)


class EventPublisher(Protocol):
    """Where events go (Redis in `run`, a file in offline analysis)."""

    def publish(self, event: EventV1) -> None: ...


@dataclass
class StreamReport:
    name: str
    url: str  # redacted
    frames_analysed: int
    frames_dropped: int
    faces: int
    events: int
    error: str | None


class StreamWorker:
    """One stream: its source task, its analysis loop and its detection thread."""

    def __init__(
        self, stream: StreamConfig, cfg: Config, batcher: MicroBatcher, sink: EventPublisher, model: ModelInfo
    ) -> None:
        self.stream = stream
        self.cfg = cfg
        self.batcher = batcher
        self.sink = sink
        self.queue: LatestQueue[Frame] = LatestQueue(cfg.ingest.queue_size)
        self.source = StreamSource(stream, cfg.ingest, self.queue)
        self.scorer = StreamScorer(stream.name, cfg.scoring, model)
        self.error: str | None = None
        self.frames_analysed = 0
        self.faces = 0
        self.events = 0

    async def run(self) -> None:
        """Run until the source ends or fails, or until cancelled (shutdown)."""
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"faces-{self.stream.name}")
        stage: FaceStage | None = None
        reader = asyncio.create_task(self._read(), name=f"source-{self.stream.name}")
        reason = "shutdown"
        try:
            stage = await loop.run_in_executor(
                executor, FaceStage, self.stream.name, self.cfg.detector, self.cfg.tracker, self.cfg.crop
            )
            await self._analyse(stage, executor)
            reason = "stream_ended"
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self._emit(self.scorer.end_all(reason))
            if stage is not None:
                # Queued behind any detection still running in that thread.
                await asyncio.shield(loop.run_in_executor(executor, stage.close))
            executor.shutdown(wait=False)

    async def _read(self) -> None:
        try:
            await self.source.run()
        except SourceError as err:
            self.error = str(err)
            log.error("%s", err)
        finally:
            self.queue.close()

    async def _analyse(self, stage: FaceStage, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await self.queue.get()
            except QueueClosed:
                return
            faces, ended = await loop.run_in_executor(executor, stage.process, frame)
            self.frames_analysed += 1
            metrics.FRAMES_ANALYSED.labels(self.stream.name).inc()
            self._emit(self.scorer.end(ended))
            if not faces:
                continue
            self.faces += len(faces)
            try:
                p_fake, embeddings = await self.batcher.infer(np.stack([f.crop for f in faces]))
            except CropsDropped:
                continue
            metrics.SCORE_LATENCY.observe(time.time() - frame.wall_ts)
            for face, p, emb in zip(faces, p_fake, embeddings):
                event = self.scorer.add(Sample(face, float(p), emb))
                if event is not None:
                    self._emit([event])

    def _emit(self, events: list[EventV1]) -> None:
        for event in events:
            self.events += 1
            self.sink.publish(event)

    def report(self) -> StreamReport:
        return StreamReport(
            name=self.stream.name,
            url=redact_url(self.stream.url),
            frames_analysed=self.frames_analysed,
            frames_dropped=self.queue.dropped,
            faces=self.faces,
            events=self.events,
            error=self.error,
        )


class Pipeline:
    """All streams, one shared micro-batcher, one event sink."""

    def __init__(self, cfg: Config, engine: Engine, sink: EventPublisher) -> None:
        self.cfg = cfg
        self.engine = engine
        self.sink = sink
        meta = engine.meta
        self.model_info = ModelInfo(name=meta.name, digest=meta.digest, trained=meta.trained)
        self.workers: list[StreamWorker] = []

    async def run(self, stop: asyncio.Event, duration: float | None = None) -> list[StreamReport]:
        """Run every stream until all end, `stop` is set, or `duration` seconds pass."""
        batcher = MicroBatcher(self.engine, self.cfg.batcher)
        await batcher.start()
        self.workers = [StreamWorker(s, self.cfg, batcher, self.sink, self.model_info) for s in self.cfg.streams]
        tasks = [asyncio.create_task(w.run(), name=f"stream-{w.stream.name}") for w in self.workers]
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            all_done = asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.wait([all_done, stopper], timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, stopper, return_exceptions=True)
            await batcher.close()
        for worker, result in zip(self.workers, results):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                worker.error = worker.error or f"stream {worker.stream.name}: internal error: {result!r}"
                log.error("stream %s failed", worker.stream.name, exc_info=result)
        return [w.report() for w in self.workers]
