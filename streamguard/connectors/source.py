"""A participant's video as a stream source: subscribe through the connector, read, resubscribe.

A participant's stream lives as long as the participant publishes; only the
connector's watch (watch.py) ends it, when discovery no longer finds them. Until then
a subscription that fails, stalls or is hung up (Janus restarting, a network blip) is
retried with the ingest back-off, the stream showing `reconnecting` meanwhile, like
any live source that drops.
"""

from __future__ import annotations

import asyncio
import logging

from streamguard.config import IngestConfig, StreamConfig
from streamguard.connectors.base import Connector, Participant, ServerUnavailable
from streamguard.errors import SourceError
from streamguard.ingest.latest import LatestQueue
from streamguard.ingest.pacing import FpsSampler
from streamguard.ingest.webrtc import TrackSource
from streamguard.types import Frame

log = logging.getLogger(__name__)


class ParticipantSource(TrackSource):
    """Reads one participant's video through `connector` until cancelled."""

    def __init__(
        self, stream: StreamConfig, cfg: IngestConfig, queue: LatestQueue[Frame], connector: Connector, participant: Participant
    ) -> None:
        super().__init__(stream, cfg, queue)
        self.connector = connector
        self.participant = participant

    async def run(self) -> None:
        """Until cancelled (the participant left, or shutdown)."""
        self._loop = asyncio.get_running_loop()
        self._set_state("connecting", self._where)
        try:
            while True:
                reason = await self._session()
                log.info("stream %s: %s; subscribing again", self.stream.name, reason)
                await asyncio.sleep(self._next_delay(reason))
        except asyncio.CancelledError:
            self._set_state("ended", "stopped")
            raise

    async def _session(self) -> str:
        """One subscription until it ends: why it ended."""
        try:
            subscription = await self.connector.subscribe(self.participant)
        except (ServerUnavailable, SourceError) as err:
            return str(err)
        try:
            decoded = self.frames_decoded
            sampler = FpsSampler(self.cfg.analysis_fps)  # each subscription starts its own RTP timeline
            why = await self._pump(subscription.track, sampler, self.cfg.open_timeout_s)
        finally:
            await self.connector.leave(subscription)
        if self.frames_decoded == decoded:
            return f"no video within {self.cfg.open_timeout_s:g} s"
        if why is not None:
            self._stalled(why)
            return why
        return "the server ended the subscription"
