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
"""

from __future__ import annotations

import asyncio

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


class Control:
    """The pipeline as the HTTP handlers see it; owns the WHIP sessions."""

    def __init__(self, pipeline: Pipeline, cfg: Config) -> None:
        self.pipeline = pipeline
        self.cfg = cfg
        self.whip: dict[str, WhipSession] = {}
        self.policy = SourcePolicy(cfg.sources)
        self._lock = asyncio.Lock()

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
            return self.pipeline.add_stream(stream, source_factory=source)

    async def add_whip(self, name: str, session: WhipSession, peer: str) -> StreamWorker:
        """Analyse a WHIP publisher's video as stream `name`, replacing an earlier publisher."""
        async with self._lock:
            if name in self.pipeline.workers and name not in self.whip:
                raise StreamConflict(f"stream {name} exists and is not a WHIP stream")
            if name in self.whip:
                await self._remove(name)

            def source(stream: StreamConfig, ingest: IngestConfig, queue: LatestQueue[Frame]) -> WhipSource:
                return WhipSource(stream, ingest, queue, session)

            worker = self.pipeline.add_stream(StreamConfig(name=name, url=f"whip://{peer}/{name}"), source_factory=source)
            self.whip[name] = session
            return worker

    async def remove(self, name: str, session_id: str | None = None) -> StreamReport:
        """Stop and forget a stream (its open alerts are cleared); with `session_id`, only that WHIP session."""
        async with self._lock:
            self.worker(name)
            if session_id is not None and (name not in self.whip or self.whip[name].id != session_id):
                raise UnknownStream(f"no WHIP session {session_id} for stream {name}")
            return await self._remove(name)

    async def close(self) -> None:
        """Stop the WHIP streams (their alerts clear with reason shutdown) and end their sessions."""
        async with self._lock:
            for name in list(self.whip):
                await self._remove(name)

    async def _remove(self, name: str) -> StreamReport:
        report = await self.pipeline.remove_stream(name)
        session = self.whip.pop(name, None)
        if session is not None:  # its source closes it too, unless it never started
            await session.close()
        metrics.forget_stream(name)
        return report
