"""Keep the pipeline's streams equal to a connector's participants.

One owned task per connector: every `poll_interval_s` it asks the connector who is
publishing, adds a stream for each new participant (named PREFIX-ROOM-PUBLISHER, its
events naming room, publisher id and display name) and removes the stream of each one
gone, their open alerts cleared with the connector's reason (participant_left,
participant_unpublished, room_destroyed). A participant who unpublishes and publishes
again keeps their publisher id, hence their stream name.

When the server cannot be asked, the connector's own state goes out as a
`type: "stream"` event (`connector` set, `stream` its name): `reconnecting` with the
error and the delay, back-off doubling to `ingest.backoff_max_s`; `live` once it
answers again. Participant streams are left as they are meanwhile (their sources
retry), and are reconciled on the first answer: after a restart, who is gone is gone.

Limits: at most `max_participants` streams per connector (more are skipped and
logged); a name already taken by another stream (WHIP, the API) is never replaced.
"""

from __future__ import annotations

import asyncio
import logging
import time

from streamguard.config import IngestConfig, StreamConfig
from streamguard.connectors.base import Connector, Participant, ServerUnavailable, describe, stream_name
from streamguard.connectors.source import ParticipantSource
from streamguard.events import StreamEventV1
from streamguard.ingest.latest import LatestQueue
from streamguard.ingest.pacing import backoff_delay
from streamguard.metrics import forget_stream
from streamguard.pipeline import EventPublisher, Pipeline
from streamguard.types import Frame, StreamState

log = logging.getLogger(__name__)


class ConnectorWatch:
    """Owns one connector's task and the streams it added."""

    def __init__(
        self, connector: Connector, pipeline: Pipeline, sink: EventPublisher, ingest: IngestConfig,
        poll_interval_s: float, max_participants: int, max_streams: int,
    ) -> None:
        self.connector = connector
        self.pipeline = pipeline
        self.sink = sink
        self.ingest = ingest.model_copy(update={"retry_first_open": True})
        self.poll_interval_s = poll_interval_s
        self.max_participants = max_participants
        self.max_streams = max_streams  # the process's cap (http.max_streams), counting every stream, not only ours
        self.streams: dict[tuple[str, str], str] = {}  # participant key -> stream name
        self.participants: dict[tuple[str, str], Participant] = {}
        self.state: StreamState | None = None
        self._task: asyncio.Task[None] | None = None
        self._skipped: set[tuple[str, str]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"connector-{self.connector.name}")

    async def close(self) -> None:
        """Stop watching, end our streams (alerts cleared with reason shutdown), close the connector."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for key in list(self.streams):
            await self._remove(key, None)
        await self.connector.close()
        self._set_state("ended", "stopped")

    async def _run(self) -> None:
        attempt = 0
        self._set_state("connecting", "listing rooms")
        while True:
            try:
                now = await self.connector.discover()
            except ServerUnavailable as err:
                delay = backoff_delay(attempt, self.ingest.backoff_initial_s, self.ingest.backoff_max_s)
                attempt += 1
                self._set_state("reconnecting", f"{err}; retry in {delay:.1f} s")
                await asyncio.sleep(delay)
                continue
            attempt = 0
            if self.state != "live":
                self._set_state("live", f"{len(now)} publisher(s) in the watched rooms")
            await self._reconcile(now)
            await asyncio.sleep(self.poll_interval_s)

    async def _reconcile(self, now: list[Participant]) -> None:
        present = {p.key: p for p in now}
        for key in [k for k in self.streams if k not in present]:
            await self._remove(key, self.connector.gone_reason(self.participants[key], now))
        self._skipped &= set(present)
        for key, participant in present.items():
            if key not in self.streams:
                self._add(participant)

    def _add(self, participant: Participant) -> None:
        key = participant.key
        name = stream_name(self.connector.name, participant)
        full = len(self.pipeline.workers) >= self.max_streams
        if len(self.streams) >= self.max_participants or name in self.pipeline.workers or full:
            if key not in self._skipped:
                why = (f"stream {name} exists" if name in self.pipeline.workers
                       else "the process's stream cap (http.max_streams) reached" if full else "max_participants reached")
                log.warning("connector %s: not watching %s in room %s: %s", self.connector.name,
                            participant.publisher_id, participant.room, why)
                self._skipped.add(key)
            return

        def source(stream: StreamConfig, _ingest: IngestConfig, queue: LatestQueue[Frame]) -> ParticipantSource:
            return ParticipantSource(stream, self.ingest, queue, self.connector, participant)

        url = f"{self.connector.kind}+{self.connector.server}/{participant.room}/{participant.publisher_id}"
        self.pipeline.add_stream(StreamConfig(name=name, url=url), source_factory=source,
                                 participant=describe(self.connector, participant))
        self.streams[key] = name
        self.participants[key] = participant
        log.info("connector %s: watching %r (%s) in room %s as stream %s", self.connector.name,
                 participant.display, participant.publisher_id, participant.room, name)

    async def _remove(self, key: tuple[str, str], reason: str | None) -> None:
        name = self.streams.pop(key)
        participant = self.participants.pop(key)
        if name in self.pipeline.workers:
            await self.pipeline.remove_stream(name, reason)
            forget_stream(name)
        log.info("connector %s: stream %s ended (%s: %r in room %s)", self.connector.name, name,
                 reason or "shutdown", participant.display, participant.room)

    def _set_state(self, state: StreamState, detail: str) -> None:
        self.state = state
        log.info("connector %s: %s (%s)", self.connector.name, state, detail)
        self.sink.publish(StreamEventV1(stream=self.connector.name, state=state, detail=detail, ts=time.time(),
                                        url=self.connector.server, connector=self.connector.kind))
