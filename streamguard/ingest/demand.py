"""The demand signal: when analysis will take a stream's next frame, told to ingest.

Frames flow forward (source, newest-wins queue, faces, batcher, scorer); this flows
backward. A stream's analysis loop takes its next frame just in time for the engine
(the batcher's `Forecast` of when it is free, minus the stream's recent detection
time), and says when on the stream's `LatestQueue` (`announce_get`,
`expect_get_after`), where `DemandGate` (pacing.py) reads it to leave undecoded what
no take needs. `TakePacer` owns that signal for one stream: the detection-time
average, the take time, and every announcement.

It lives in ingest, beside the queue and the gate that read it, and depends on the
engine only through `Forecast`, a protocol the micro-batcher satisfies: ingest does
not import inference.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from streamguard.ingest.latest import LatestQueue

# Spare time the look-ahead leaves between its detection and the engine going idle:
# the hand-off (tracking, cropping, queueing) takes a few milliseconds.
LOOKAHEAD_MARGIN_S = 0.015


class Forecast(Protocol):
    """When the engine will be ready for a stream's next crops (`inference.batcher.MicroBatcher`)."""

    @property
    def seconds_per_crop(self) -> float:
        """One engine call's recent time per crop; 0 with no forecast yet."""
        ...

    def free_at(self) -> float:
        """Loop time by which the engine should have scored every crop queued now."""
        ...

    async def sleep_until(self, at: float) -> None:
        """Sleep until loop time `at`, or until the engine runs dry, whichever comes first."""
        ...


class TakePacer:
    """One stream's takes, timed to the engine's forecast and announced to ingest.

    With one frame in flight per stream the engine would idle while every stream
    detects its next frame (measured: 12-18% of its throughput). So once a frame's
    crops are queued, the next frame is taken just in time (`ready_by`, the forecast's
    `free_at`, minus the recent detection time, so the frame is no older than needed)
    and detected while the engine scores this one. The calls come in the order of a
    take: `wait_to_take` (look-ahead only), `took`, `detected`; `note_crops` with
    each frame that has crops to score. Loop time throughout (the queue's
    `time.monotonic`, which asyncio's loop clock is).
    """

    def __init__(self, queue: LatestQueue[Any], forecast: Forecast, margin_s: float = LOOKAHEAD_MARGIN_S) -> None:
        self.queue = queue
        self.forecast = forecast
        self.margin_s = margin_s
        self.detect_seconds = 0.0  # moving average of one detector run, for the look-ahead
        self.crops_per_frame = 1  # the latest frame's, for expect_next_take
        self._taken_at: float | None = None  # loop time of the latest take, until its detection is timed

    def ready_by(self) -> float:
        """Right after this frame's crops are queued: when the engine will be ready for the next frame's."""
        return self.forecast.free_at()

    def note_crops(self, crops: int) -> None:
        """The latest frame has `crops` to score: the next take waits for them too (`expect_next_take`)."""
        self.crops_per_frame = crops

    def take_time(self, ready_by: float) -> float:
        """When to take the next frame so that its detection ends as the engine is ready for it (`ready_by`)."""
        return ready_by - self.detect_seconds - self.margin_s

    async def wait_to_take(self, ready_by: float) -> None:
        """Announce the take, then wait for its time (or until the engine runs dry: the forecast was late)."""
        loop = asyncio.get_running_loop()
        take_at = self.take_time(ready_by)
        self.queue.announce_get(take_at)  # ingest decodes only what this take needs (DemandGate)
        await self.forecast.sleep_until(take_at)  # or until the engine runs dry: the forecast was late
        if loop.time() < take_at:
            self.queue.announce_get(loop.time())  # taking it now: ingest must not skip the frames before

    def took(self) -> None:
        """A frame was just taken: time its detection from now, and tell ingest when the next take comes."""
        self._taken_at = asyncio.get_running_loop().time()
        self.expect_next_take()

    def detected(self) -> None:
        """The detector ran on the frame just taken (not a tracked-only frame): its time joins the average."""
        if self._taken_at is None:
            raise RuntimeError("TakePacer.detected() without a take (took())")
        seconds = asyncio.get_running_loop().time() - self._taken_at
        self.detect_seconds = 0.8 * self.detect_seconds + 0.2 * seconds

    def expect_next_take(self) -> None:
        """Right after a take, tell ingest roughly when the next comes (the look-ahead says exactly later).

        The next take waits for this frame's crops, which queue behind all crops queued
        now; until this frame is submitted and the look-ahead announces its take, ingest
        would otherwise decode every frame. With forecasts long (a busy or slow engine)
        that window is long: at start-up 16 x 1080p streams decoded every frame in it,
        used 0.5-1 core of the two, and slowed the first batches 4-7x.
        """
        per_crop = self.forecast.seconds_per_crop
        if per_crop:  # no forecast without a warm-up or a batch timed
            self.queue.expect_get_after(self.take_time(self.forecast.free_at() + per_crop * self.crops_per_frame))
