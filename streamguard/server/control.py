"""What HTTP requests do to the running pipeline: add and remove streams, WHIP ones included.

Changes go through one lock, so two requests cannot race for a name. Policy for a
stream added here (documented in the README): its first open is retried with
back-off like a drop (`ingest.retry_first_open`), because whoever adds a camera at
run time wants it watched once it answers (it may be rebooting); a typo shows as
`reconnecting` with the error in GET /streams and in `type: "stream"` events until
the stream is deleted. A stream's URL passes the source policy (ingest/policy.py, origin
"api") before anything opens it: `add` raises SourceRefused, answered 403 or 400. A new
WHIP publisher for a name replaces the previous one (as MediaMTX does), so a browser
that reloads can publish again at once.

Limits (docs/security.md), so that no client can take the process down: at most
`http.max_streams` streams (each costs threads and memory: 500 took 8.4 GB and 2,000
threads), at most `http.max_whip_pending` WHIP sessions being set up (each holds a
peer connection and UDP sockets before any media flows); beyond them `Busy`, answered
503 with Retry-After. A stream added here that ended or failed is removed, with its
metric series, `http.forget_after_s` later, so abandoned publishers and dead cameras
do not pile up in GET /streams and /metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from streamguard import metrics
from streamguard.config import Config, IngestConfig, StreamConfig
from streamguard.errors import StreamguardError
from streamguard.ingest import SourceBase, open_source
from streamguard.ingest.latest import LatestQueue
from streamguard.ingest.policy import SourcePolicy
from streamguard.ingest.webrtc import WhipSession, WhipSource
from streamguard.pipeline import Pipeline, StreamReport, StreamWorker
from streamguard.types import Frame


class StreamConflict(StreamguardError):
    """The name is taken (answered 409)."""


class UnknownStream(StreamguardError):
    """No stream has that name (answered 404)."""


class Busy(StreamguardError):
    """A limit is reached (answered 503 with Retry-After: `retry_after` seconds)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


log = logging.getLogger(__name__)
STREAMS_RETRY_AFTER_S = 30  # a stream slot frees when someone removes one: a guess, not a promise
WHIP_RETRY_AFTER_S = 5  # a session being set up connects or is given up within seconds


class Control:
    """The pipeline as the HTTP handlers see it; owns the WHIP sessions."""

    def __init__(self, pipeline: Pipeline, cfg: Config) -> None:
        self.pipeline = pipeline
        self.cfg = cfg
        self.whip: dict[str, WhipSession] = {}
        self.policy = SourcePolicy(cfg.sources)
        self._lock = asyncio.Lock()
        self._accepting = 0  # WHIP offers being answered (ICE gathering) right now
        self._timers: dict[str, asyncio.TimerHandle] = {}  # ended streams' removals, due forget_after_s after the end
        self._removals: set[asyncio.Task[None]] = set()
        self._closing = False

    def worker(self, name: str) -> StreamWorker:
        worker = self.pipeline.workers.get(name)
        if worker is None:
            raise UnknownStream(f"no stream named {name}")
        return worker

    async def add(self, stream: StreamConfig, ingest: IngestConfig | None = None) -> StreamWorker:
        """Start a stream whose first open is retried (see the module docstring), with its own
        `ingest` settings if given (all but queue_size, which the pipeline sizes); SourceRefused,
        before anything is opened, if the source policy does not allow its URL."""
        await asyncio.to_thread(self.policy.check, stream.url, "api")  # may resolve a host name: off the loop
        settings = (ingest or self.cfg.ingest).model_copy(update={"retry_first_open": True})

        def source(stream: StreamConfig, _ingest: IngestConfig, queue: LatestQueue[Frame]) -> SourceBase:
            return open_source(stream, settings, queue, self.cfg.webrtc)

        async with self._lock:
            if stream.name in self.pipeline.workers:
                raise StreamConflict(f"stream {stream.name} already exists")
            self._check_room()
            worker = self.pipeline.add_stream(stream, source_factory=source)
            self._forget_when_done(stream.name, worker)
            return worker

    async def add_whip(self, name: str, session: WhipSession, peer: str) -> StreamWorker:
        """Analyse a WHIP publisher's video as stream `name`, replacing an earlier publisher."""
        async with self._lock:
            if name in self.pipeline.workers and name not in self.whip:
                raise StreamConflict(f"stream {name} exists and is not a WHIP stream")
            if name in self.whip:
                await self._remove(name)
            else:
                self._check_room()

            def source(stream: StreamConfig, ingest: IngestConfig, queue: LatestQueue[Frame]) -> WhipSource:
                return WhipSource(stream, ingest, queue, session)

            worker = self.pipeline.add_stream(StreamConfig(name=name, url=f"whip://{peer}/{name}"), source_factory=source)
            self.whip[name] = session
            self._forget_when_done(name, worker)
            return worker

    @contextmanager
    def whip_setup(self) -> Iterator[None]:
        """Hold one of the `max_whip_pending` places while an offer is answered; Busy if none is free.
        A session stays pending after its answer until its peer connects (or it ends)."""
        pending = self._accepting + sum(1 for s in self.whip.values() if s.pc.connectionState in ("new", "connecting"))
        limit = self.cfg.http.max_whip_pending
        if pending >= limit:
            raise Busy(f"{limit} WHIP sessions are being set up already; try again shortly", WHIP_RETRY_AFTER_S)
        self._accepting += 1
        try:
            yield
        finally:
            self._accepting -= 1

    def _check_room(self) -> None:
        limit = self.cfg.http.max_streams
        if len(self.pipeline.workers) >= limit:
            raise Busy(f"this process runs {limit} streams, its limit (http.max_streams); remove one first", STREAMS_RETRY_AFTER_S)

    def _forget_when_done(self, name: str, worker: StreamWorker) -> None:
        """Once the stream's task ends (ended or failed, not removed), remove it `forget_after_s` later."""
        task = self.pipeline.task(name)
        if task is None:
            return
        loop = asyncio.get_running_loop()

        def finished(_task: asyncio.Task[None]) -> None:
            if not self._closing and self.pipeline.workers.get(name) is worker:  # else removed or shutting down
                self._timers[name] = loop.call_later(self.cfg.http.forget_after_s, forget)

        def forget() -> None:
            self._timers.pop(name, None)
            removal = loop.create_task(self._forget(name, worker), name=f"forget-{name}")
            self._removals.add(removal)
            removal.add_done_callback(self._removals.discard)

        task.add_done_callback(finished)

    async def _forget(self, name: str, worker: StreamWorker) -> None:
        async with self._lock:
            if self._closing or self.pipeline.workers.get(name) is not worker:
                return
            await self._remove(name)
        log.info("stream %s (%s) forgotten %g s after it ended", name, worker.source.state, self.cfg.http.forget_after_s)

    async def remove(self, name: str, session_id: str | None = None) -> StreamReport:
        """Stop and forget a stream (its open alerts are cleared); with `session_id`, only that WHIP session."""
        async with self._lock:
            self.worker(name)
            if session_id is not None and (name not in self.whip or self.whip[name].id != session_id):
                raise UnknownStream(f"no WHIP session {session_id} for stream {name}")
            return await self._remove(name)

    async def close(self) -> None:
        """Stop the WHIP streams (their alerts clear with reason shutdown) and end their sessions."""
        self._closing = True
        for timer in self._timers.values():
            timer.cancel()
        await asyncio.gather(*self._removals, return_exceptions=True)
        async with self._lock:
            for name in list(self.whip):
                await self._remove(name)

    async def _remove(self, name: str) -> StreamReport:
        report = await self.pipeline.remove_stream(name)
        if (timer := self._timers.pop(name, None)) is not None:  # set as its task ended, just now
            timer.cancel()
        session = self.whip.pop(name, None)
        if session is not None:  # its source closes it too, unless it never started
            await session.close()
        metrics.forget_stream(name)
        return report
