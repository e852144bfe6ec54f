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
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamguard import metrics
from streamguard.aio import first_of
from streamguard.events import EventV1, ModelInfo, ParticipantV1, ScoresV1, StreamEventV1
from streamguard.thumbnails import alert_thumbnails
from streamguard.blas import limit_numpy_blas_threads
from streamguard.config import Config, IngestConfig, StreamConfig
from streamguard.errors import SourceError, StreamguardError
from streamguard.faces.stage import FaceStage
from streamguard.inference.batcher import CropsDropped, EngineFailed, Member, MicroBatcher
from streamguard.inference.contract import Engine
from streamguard.ingest import open_source
from streamguard.ingest.demand import TakePacer
from streamguard.ingest.latest import LatestQueue, QueueClosed
from streamguard.ingest.source_base import SourceStats, StateCallback
from streamguard.redact import redact_text, redact_url
from streamguard.scoring.scorer import StreamScorer
from streamguard.types import Detection, Face, Frame, Sample, StreamState

log = logging.getLogger(__name__)


class EventPublisher(Protocol):
    """Where events go (Redis in `run`, a file in offline analysis)."""

    def publish(self, event: EventV1 | StreamEventV1, attachments: dict[str, bytes] | None = None) -> None: ...

    def publish_scores(self, scores: ScoresV1) -> None: ...


class Source(Protocol):
    """Something that fills a stream's frame queue until it ends (PyAV, WebRTC).

    Its owner sets `on_state` before `run`; it is called on the loop at each state change.
    """

    state: str
    on_state: StateCallback | None

    def stats(self) -> SourceStats: ...

    async def run(self) -> None: ...


SourceFactory = Callable[[StreamConfig, IngestConfig, LatestQueue[Frame]], Source]
SampleHook = Callable[[Sample], None]
# Sees each analysed frame with its tracked faces (the console, only while someone watches the stream).
FrameObserver = Callable[[Frame, list[Face]], None]


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
        self,
        stream: StreamConfig,
        cfg: Config,
        batcher: MicroBatcher,
        sink: EventPublisher,
        model: ModelInfo,
        calibrated_threshold: float | None = None,
        source_factory: SourceFactory | None = None,
        on_sample: SampleHook | None = None,
        participant: ParticipantV1 | None = None,
    ) -> None:
        self.stream = stream
        self.participant = participant  # a connector's stream: every event names who it is
        self.end_reason: str | None = None  # why its alerts clear when it is stopped (default: shutdown)
        self.cfg = cfg
        self.batcher = batcher
        self.sink = sink
        self.on_sample = on_sample
        self.observer: FrameObserver | None = None  # set and unset by whoever watches (console/snapshots.py)
        self.queue: LatestQueue[Frame] = LatestQueue(cfg.ingest.queue_size)
        factory = source_factory or functools.partial(open_source, webrtc=cfg.webrtc)
        self.source = factory(stream, cfg.ingest, self.queue)
        self.source.on_state = self._publish_state
        self.pacer = TakePacer(self.queue, forecast=batcher)  # when to take frames, told to ingest
        self.scorer = StreamScorer(stream.name, cfg.scoring_for(stream), model, calibrated_threshold)
        self._scores_due = 0.0
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
        member = self.batcher.join()
        try:
            stage = await loop.run_in_executor(
                executor, FaceStage, self.stream.name, self.cfg.detector, self.cfg.tracker, self.cfg.crop
            )
            await self._analyse(stage, executor, member)
            reason = "stream_ended"
        finally:
            reason = self.end_reason or reason
            self.batcher.leave(member)
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

    async def _analyse(self, stage: FaceStage, executor: ThreadPoolExecutor, member: Member) -> None:
        """Frame by frame: detect, track, score. The next frame is detected while the model scores this one.

        Once this frame's crops are queued, a look-ahead task takes the newest frame just
        in time for the engine (`TakePacer`, which says why) and runs the detector on it;
        tracking it waits until this frame's re-identification is done, so the tracker
        still sees frames strictly in order.
        """
        loop = asyncio.get_running_loop()
        scoring: asyncio.Future[tuple[np.ndarray, np.ndarray]] | None = None
        lookahead: asyncio.Task[tuple[Frame, list[Detection] | None] | None] | None = None
        try:
            detected = await self._next_detected(stage, executor, None)
            while detected is not None:
                frame, detections = detected
                faces, ended = await loop.run_in_executor(executor, stage.track, frame, detections)
                self.frames_analysed += 1
                metrics.FRAMES_ANALYSED.labels(self.stream.name).inc()
                if self.observer is not None:
                    self.observer(frame, faces)
                self._emit(self.scorer.end(ended))
                if not faces:
                    self.batcher.sit_out(member)
                    detected = await self._next_detected(stage, executor, None)
                    continue
                self.faces += len(faces)
                self.pacer.note_crops(len(faces))
                try:
                    scoring = self.batcher.submit(np.stack([f.crop for f in faces]), member=member)
                except CropsDropped:
                    detected = await self._next_detected(stage, executor, None)
                    continue
                ready_by = self.pacer.ready_by()
                lookahead = asyncio.create_task(
                    self._next_detected(stage, executor, ready_by), name=f"lookahead-{self.stream.name}"
                )
                try:
                    p_fake, embeddings = await scoring
                except (CropsDropped, EngineFailed):  # unscored (counted, and the engine's error logged)
                    pass
                else:
                    self._score(frame, faces, p_fake, embeddings, stage)
                scoring = None
                detected = await lookahead
                lookahead = None
        finally:
            if scoring is not None:
                scoring.cancel()  # withdraws the crops from the batcher's queue
            if lookahead is not None:
                lookahead.cancel()
                await asyncio.gather(lookahead, return_exceptions=True)

    async def _next_detected(
        self, stage: FaceStage, executor: ThreadPoolExecutor, ready_by: float | None
    ) -> tuple[Frame, list[Detection] | None] | None:
        """The newest frame and its detections, taken no earlier than needed to be ready by `ready_by`."""
        loop = asyncio.get_running_loop()
        if ready_by is not None:
            await self.pacer.wait_to_take(ready_by)
        try:
            frame = await self.queue.get()
        except QueueClosed:
            return None
        self.pacer.took()
        detections = await loop.run_in_executor(executor, stage.detect, frame)
        if detections is not None:  # the detector ran (not a tracked-only frame)
            self.pacer.detected()
        return frame, detections

    def _score(self, frame: Frame, faces: list[Face], p_fake: np.ndarray, embeddings: np.ndarray, stage: FaceStage) -> None:
        metrics.SCORE_LATENCY.observe(time.time() - frame.wall_ts)
        final = stage.reidentify(faces, embeddings)  # ids of new faces are final only now
        metrics.REIDENTIFIED.labels(self.stream.name).inc(sum(a.track != b.track for a, b in zip(faces, final)))
        if self.observer is not None:
            self.observer(frame, final)  # the ids are final now
        for face, p, emb in zip(final, p_fake, embeddings):
            sample = Sample(face, float(p), emb)
            if self.on_sample is not None:
                self.on_sample(sample)
            event = self.scorer.add(sample)
            if event is not None:
                self._emit([event], frame if event.type == "alert" else None, face)
        self._publish_scores(frame.wall_ts)

    def _emit(self, events: list[EventV1], frame: Frame | None = None, face: Face | None = None) -> None:
        """Publish events; an alert (given its frame and face) carries thumbnails when enabled."""
        for event in events:
            self.events += 1
            attachments = None
            if frame is not None and face is not None and self.cfg.redis.thumbnails:
                prefix = f"{self.cfg.redis.thumbnail_prefix}{event.id}:"
                blobs = alert_thumbnails(face.crop, frame.rgb, self.cfg.redis.thumbnail_frame_width)
                attachments = {prefix + kind: blob for kind, blob in blobs.items()}
                event = event.model_copy(update={"thumbnails": {kind: prefix + kind for kind in blobs}})
            if self.participant is not None:
                event = event.model_copy(update={"participant": self.participant})
            self.sink.publish(event, attachments)

    def _publish_scores(self, now: float) -> None:
        interval = self.scorer.cfg.scores_interval_s
        if interval <= 0 or now < self._scores_due or not self.scorer.identities:
            return
        self._scores_due = now + interval
        self.sink.publish_scores(self.scorer.scores(now))

    def _publish_state(self, name: str, state: StreamState, detail: str) -> None:
        url = redact_url(self.stream.url)
        self.sink.publish(StreamEventV1(
            stream=name, state=state, detail=redact_text(detail), ts=time.time(), url=url, participant=self.participant
        ))

    def _error(self) -> str | None:
        """The stream's error as shown: a library's exception text may quote the URL, secrets and all."""
        return None if self.error is None else redact_text(self.error)

    def status(self) -> dict[str, Any]:
        """The stream as GET /streams shows it (URL redacted)."""
        s = self.source.stats()
        return {
            "name": self.stream.name,
            "url": redact_url(self.stream.url),
            "state": s.state,
            "detail": redact_text(s.detail),
            "fps": round(s.fps, 2),
            "resolution": f"{s.size[0]}x{s.size[1]}" if s.size else None,
            "last_frame_age_s": None if s.last_frame_wall is None else round(time.time() - s.last_frame_wall, 3),
            "reconnects": s.reconnects,
            "frames_decoded": s.frames_decoded,
            "frames_analysed": self.frames_analysed,
            "frames_dropped": self.queue.dropped,
            "active_tracks": len(self.scorer.identities),
            "events": self.events,
            "error": self._error(),
            **({"participant": self.participant.model_dump()} if self.participant is not None else {}),
        }

    def report(self) -> StreamReport:
        return StreamReport(
            name=self.stream.name,
            url=redact_url(self.stream.url),
            frames_analysed=self.frames_analysed,
            frames_dropped=self.queue.dropped,
            faces=self.faces,
            events=self.events,
            error=self._error(),
        )


class Pipeline:
    """All streams, one shared micro-batcher, one event sink.

    Streams can be added and removed while it runs (the control API and WHIP do);
    each runs as a task owned here. `start` and `close` bracket its life; `run` is
    the whole life for the CLI.
    """

    def __init__(
        self, cfg: Config, engine: Engine, sink: EventPublisher, on_sample: SampleHook | None = None
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.sink = sink
        self.on_sample = on_sample
        meta = engine.meta
        self.model_info = ModelInfo(name=meta.name, digest=meta.digest, trained=meta.trained)
        self.batcher = MicroBatcher(engine, cfg.batcher)
        self.workers: dict[str, StreamWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._reports: list[StreamReport] = []
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        limit_numpy_blas_threads()
        await asyncio.to_thread(self.engine.prepare, self.cfg.batcher.max_batch)  # before any stream starts (Engine: why)
        await self.batcher.start()
        for stream in self.cfg.streams:
            self.add_stream(stream)

    def add_stream(
        self, stream: StreamConfig, source_factory: SourceFactory | None = None, participant: ParticipantV1 | None = None
    ) -> StreamWorker:
        """Start analysing a stream; its name must be new. A connector's stream names its `participant`."""
        if stream.name in self.workers:
            raise StreamguardError(f"stream {stream.name} already exists")
        worker = StreamWorker(
            stream, self.cfg, self.batcher, self.sink, self.model_info,
            self.engine.meta.threshold, source_factory, self.on_sample, participant,
        )
        task = asyncio.create_task(worker.run(), name=f"stream-{stream.name}")
        self.workers[stream.name] = worker
        self._tasks[stream.name] = task
        self._idle.clear()
        task.add_done_callback(lambda t, name=stream.name: self._finished(name, t))
        return worker

    def task(self, name: str) -> asyncio.Task[None] | None:
        """The task running stream `name`; None once it has finished (its owner may wait on it)."""
        return self._tasks.get(name)

    async def remove_stream(self, name: str, reason: str | None = None) -> StreamReport:
        """Stop a stream (its open alerts are cleared, with `reason` if given, else shutdown) and
        forget it; an ended one is just forgotten."""
        if name not in self.workers:
            raise StreamguardError(f"no stream named {name}")
        self.workers[name].end_reason = reason
        task = self._tasks.get(name)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return self.workers.pop(name).report()

    def _finished(self, name: str, task: asyncio.Task[None]) -> None:
        worker = self.workers[name]
        if not task.cancelled() and task.exception() is not None:
            err = task.exception()
            worker.error = worker.error or f"stream {name}: internal error: {err!r}"
            log.error("stream %s failed", name, exc_info=err)
        self._tasks.pop(name, None)
        self._reports.append(worker.report())
        if not self._tasks:
            self._idle.set()

    async def wait(self, stop: asyncio.Event, duration: float | None = None, until_idle: bool = True) -> None:
        """Until `stop` is set, `duration` passes, or (with `until_idle`) every stream has ended."""
        await first_of(stop.wait(), *([self._idle.wait()] if until_idle else []), timeout=duration)

    async def close(self) -> list[StreamReport]:
        """Stop every stream and the batcher; the reports of every stream this pipeline ran."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.batcher.close()
        return list(self._reports)

    async def run(self, stop: asyncio.Event, duration: float | None = None) -> list[StreamReport]:
        """Run the configured streams until all end, `stop` is set, or `duration` seconds pass."""
        await self.start()
        try:
            await self.wait(stop, duration)
        finally:
            reports = await self.close()
        return reports
