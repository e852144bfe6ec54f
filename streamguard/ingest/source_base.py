"""What every source shares: its state, counters, metrics, reconnect policy and hand-off.

The PyAV source (`pyav_source.py`) and the WebRTC sources (`webrtc.py`) build on `SourceBase`.

Lifecycle (`state`): connecting -> live -> (stalled? -> reconnecting -> live)* -> ended | failed.
- The first open failing is the user's problem (a wrong URL, not a video): the source
  fails with one line naming the redacted URL and the cause, unless
  `cfg.retry_first_open` (a camera that is still booting): then it retries as below.
- A live source (not a file) that drops after it was live is reopened with
  exponential back-off and jitter while `cfg.reconnect` is true.
- A file ends at its end; a live source without reconnect ends when the server
  closes it, and fails (SourceError) on an error.

Hand-off: a sampled frame goes into the stream's `LatestQueue` with `put_nowait`, which
drops the oldest when analysis is behind (a live camera does not wait for us); the drops
are counted per stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamguard import metrics
from streamguard.config import IngestConfig, StreamConfig
from streamguard.errors import SourceError
from streamguard.ingest.latest import LatestQueue, QueueClosed
from streamguard.ingest.pacing import RateMeter, backoff_delay
from streamguard.ingest.urls import is_file_url
from streamguard.redact import redact_url
from streamguard.types import Frame
from streamguard.types import StreamState as State

log = logging.getLogger(__name__)

StateCallback = Callable[[str, State, str], None]


@dataclass(frozen=True)
class SourceStats:
    """A source at one moment, for the API."""

    state: State
    detail: str
    fps: float  # frames per second arriving (before sampling)
    size: tuple[int, int] | None  # (width, height) of the last frame
    last_frame_wall: float | None  # unix seconds
    frames_decoded: int
    reconnects: int


class SourceBase:
    """What every source shares: its state (told to `on_state`), counters, metrics and
    the hand-off of sampled frames into the newest-wins queue.

    `on_state(stream_name, state, detail)` is called on the event loop thread; the
    owner may set it after construction, before `run`. The `_frame_arrived`,
    `_sampled` and `_set_state` methods may be called from any thread once `run`
    has set `_loop`; `_put_latest` only on the loop.
    """

    def __init__(
        self,
        stream: StreamConfig,
        cfg: IngestConfig,
        queue: LatestQueue[Frame],
        on_state: StateCallback | None = None,
    ) -> None:
        self.stream = stream
        self.cfg = cfg
        self.queue = queue
        self.on_state = on_state
        self.state: State = "connecting"
        self.detail = ""
        self.frames_decoded = 0
        self.frames_sampled = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.last_frame_wall: float | None = None
        self.size: tuple[int, int] | None = None
        self.is_file = is_file_url(stream.url)
        self._where = redact_url(stream.url)
        self._ever_live = False
        self._attempt = 0  # reconnect attempts since the source was last live
        self._rate = RateMeter()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by run()
        name = stream.name
        self._m_decoded = metrics.FRAMES_DECODED.labels(name)
        self._m_sampled = metrics.FRAMES_SAMPLED.labels(name)
        self._m_dropped = metrics.FRAMES_DROPPED.labels(name)
        self._m_up = metrics.STREAM_UP.labels(name)
        self._m_state = metrics.STREAM_STATE.labels(name)
        self._m_reconnects = metrics.RECONNECTS.labels(name)
        self._m_stalls = metrics.STALLS.labels(name)
        metrics.FRAME_QUEUE_DEPTH.labels(name).set_function(lambda: len(queue))

    def stats(self) -> SourceStats:
        return SourceStats(
            state=self.state,
            detail=self.detail,
            fps=self._rate.rate(time.monotonic()),
            size=self.size,
            last_frame_wall=self.last_frame_wall,
            frames_decoded=self.frames_decoded,
            reconnects=self.reconnects,
        )

    def _retries(self) -> bool:
        """Whether an end or error now is followed by a reconnect (instead of ended/failed)."""
        return not self.is_file and self.cfg.reconnect and (self._ever_live or self.cfg.retry_first_open)

    def _next_delay(self, reason: str) -> float:
        """Announce the next reconnect attempt and count it; its back-off delay."""
        delay = backoff_delay(self._attempt, self.cfg.backoff_initial_s, self.cfg.backoff_max_s)
        self._attempt += 1
        self.reconnects += 1
        self._m_reconnects.inc()
        self._set_state("reconnecting", f"{reason}; retry in {delay:.1f} s")
        return delay

    def _after_session(self, error: str | None, stalled: bool, ended: str, cannot: str, closed: str) -> str | None:
        """What follows a session that ended with `error` (None: the source closed it).

        None: the stream ended for good (state set, detail `ended`). A string: the reason
        to reconnect (a stall counted). SourceError: it failed (`cannot` says what, when
        it never went live). Shared by the PyAV thread and the WHEP task.
        """
        if not self._retries():
            if error is None:
                self._set_state("ended", ended)
                return None
            verb = "lost" if self._ever_live else cannot
            raise SourceError(f"stream {self.stream.name}: {verb} {self._where}: {error}")
        reason = error or closed
        if stalled:
            self._stalled(reason)
        return reason

    def _stalled(self, reason: str) -> None:
        self._m_stalls.inc()
        self._set_state("stalled", reason)

    def _frame_arrived(self, width: int, height: int) -> float:
        """Count a decoded frame; the unix time it arrived. Goes live on the first one."""
        now = time.time()
        self.last_frame_wall = now
        self.frames_decoded += 1
        self._m_decoded.inc()
        self._rate.tick(time.monotonic())
        size, before = (width, height), self.size
        self.size = size
        if self.state != "live":
            self._ever_live = True
            self._attempt = 0
            self._set_state("live", f"{width}x{height}")
        elif before is not None and size != before:
            self._set_state("live", f"resolution changed from {before[0]}x{before[1]} to {width}x{height}")
        return now

    def _sampled(self) -> None:
        self.frames_sampled += 1
        self._m_sampled.inc()

    def _set_state(self, state: State, detail: str) -> None:
        self.state = state
        self.detail = detail
        self._m_up.set(1 if state == "live" else 0)
        self._m_state.state(state)
        log.info("stream %s: %s (%s)", self.stream.name, state, detail)
        if self.on_state is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_state, self.stream.name, state, detail)

    def _put_latest(self, frame: Frame) -> bool:
        """Newest wins; False once the owner closed the queue (stop reading)."""
        before = self.queue.dropped
        try:
            self.queue.put_nowait(frame)
        except QueueClosed:
            return False
        dropped = self.queue.dropped - before
        if dropped:
            self.frames_dropped += dropped
            self._m_dropped.inc(dropped)
        return True
