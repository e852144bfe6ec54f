"""Per-packet policies of a source: which frames to keep, which packets to leave undecoded, when
a file's frames are due, how fast frames arrive, how long to wait before reconnecting.

Pure decisions over times and flags (no PyAV, no event loop), so that each is unit-tested on
synthetic timelines (tests/unit/test_pacing.py) and shared by every kind of source:
- `FpsSampler` keeps frames at the analysis rate by their timestamps, so a change of frame
  rate needs nothing (PyAV and WebRTC sources).
- `LagGuard`: when the decoder itself falls behind a live source (a starved CPU), packets are
  skipped up to the next keyframe, so latency stays bounded before decoding too; the
  newest-wins queue bounds it after.
- `DemandGate` leaves undecoded what no frame analysis will take depends on.
- `RealtimePacer` plays a file at the pace of its timestamps (`cfg.realtime`).
- `RateMeter` measures the input frame rate shown by the API.
- `backoff_delay`: the reconnect delay, doubling with jitter.
"""

from __future__ import annotations

import random
import threading
import time

PTS_TOLERANCE_S = 1e-3  # timestamps within this of the due time count as due
RATE_WINDOW_S = 1.0  # the input frame rate shown by the API is measured over this long


class FpsSampler:
    """Keeps frames at `fps` by their timestamps, whatever the source's frame rate.

    A frame is kept when its time reaches the next due time; the due time then moves
    one period on (or one period past the frame after a jump forward), and a timestamp
    going backwards (a restarted stream) starts over.
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._next_due: float | None = None
        self._last: float | None = None

    def keep(self, t: float) -> bool:
        restarted = self._last is not None and t < self._last
        self._last = t
        if self._next_due is not None and not restarted and t < self._next_due - PTS_TOLERANCE_S:
            return False
        due = t if self._next_due is None or restarted else self._next_due
        self._next_due = due + self.period if t - due < self.period else t + self.period
        return True


class LagGuard:
    """Skips packets up to a keyframe when decoding falls behind a live source.

    A read that had to wait for data means we are at the live edge: the anchor
    (stream time, wall time) moves there. Between such reads, lag = wall time minus
    stream time elapsed since the anchor; it grows only while packets queue up faster
    than we decode them. Past `max_lag_s`, packets are skipped undecoded (reading is
    cheap, so the backlog drains) until a keyframe whose lag is under half of that.
    A source clock that drifts against ours cannot add up to a false skip: reads at
    the live edge wait, and each wait re-anchors.
    """

    def __init__(self, max_lag_s: float) -> None:
        self.max_lag_s = max_lag_s
        self.skipping = False
        self._anchor: tuple[float, float] | None = None  # (stream time, wall time)
        self._last: float | None = None  # the previous packet's stream time

    def skip(self, t: float | None, now: float, keyframe: bool, waited: bool) -> bool:
        """Whether to drop the packet of (decoding) stream time `t`, read at `now`, after waiting for it or not."""
        if t is None:
            return self.skipping
        restarted = self._last is not None and t < self._last
        self._last = t
        if waited or restarted or self._anchor is None:  # at the live edge, or a new timeline
            self._anchor = (t, now)
        lag = (now - self._anchor[1]) - (t - self._anchor[0])
        if lag < 0:  # reading ahead of real time (a burst): as early as ever
            self._anchor, lag = (t, now), 0.0
        if not self.skipping and lag > self.max_lag_s:
            self.skipping = True
        elif self.skipping and keyframe and lag <= self.max_lag_s / 2:
            self.skipping = False
        return self.skipping


class DemandGate:
    """Leaves undecoded the packets that no frame analysis will take depends on.

    Each P-frame needs the frame before it, so the frame analysis takes from a group of
    pictures (keyframe to keyframe) costs the decode of every frame from the keyframe up
    to it, and the frames after it are worth decoding only if analysis takes another
    before the next keyframe. Analysis behind a busy model says when it will take its
    next frame (`LatestQueue.announce_get`, by the stream's `TakePacer`, demand.py), so once
    that falls after the group ends the rest of the group is left undecoded, and a
    group that ends before it is not decoded at all; the decoder restarts cleanly at
    the next keyframe. (The consumer's past pace is no guide: its takes came up to 40%
    of an interval earlier than a moving average predicted.)

    While analysis takes frames less often than keyframes come (more than
    `keyframes_only_beyond` keyframe intervals apart, default 1), only keyframes are
    decoded (those of groups a take falls in), a frame then being up to one keyframe
    interval old. Decoding up to each take would give fresher frames, at the price of
    half a group of pictures per take: on two cores, 13-19% of the model's throughput at
    4 x 1080p and 8-19% with 2 s groups (nothing at 720p with 1 s groups, where decoding
    is cheap; docs/benchmarks.md); and under load it is the rate of analysed frames,
    more than their age, that decides how soon an identity has `min_samples` and can
    alert. It decodes up to takes again below three quarters of that. The pace is the
    announced one (`LatestQueue.pace`), counted from when each take really happened: a
    consumer kept waiting for keyframes takes frames at their pace, which must not keep
    it on keyframes (measured: two streams locked at one frame a second, half the
    model's rate, while it counted from the announced times). For the same reason a
    consumer that does not announce is paced by its own time between takes, leaving out
    the time it waited for a frame. Decisions to decode more change only at keyframes.
    """

    LEAVE = 0.75  # of keyframes_only_beyond: below it groups are decoded up to takes again
    MARGIN_S = 0.05  # how much later than the group's predicted end the next take must fall (keyframe arrival jitter)

    def __init__(self, keyframes_only_beyond: float = 1.0) -> None:
        self.enter = keyframes_only_beyond  # consumer interval / keyframe interval above which only keyframes are decoded
        self.keyframes_only = False
        self._skipping = False  # the rest of the current group is left undecoded
        self._last_key: float | None = None  # stream time of the latest keyframe
        self._key_arrived = 0.0  # monotonic time the latest keyframe arrived
        self._key_interval: float | None = None  # moving average of seconds between keyframes

    def skip(self, t: float | None, now: float, keyframe: bool, next_get_at: float | None, interval: float | None) -> bool:
        """Whether to leave undecoded the packet of stream time `t` that arrived at `now` (time.monotonic),
        given when the consumer will take its next frame and its recent pace (None: not known)."""
        if keyframe:
            self._new_group(t, now, interval)
            unneeded = self._take_after_group(next_get_at)  # a newer keyframe comes before the take
            self._skipping = unneeded or self.keyframes_only
            return unneeded
        if not self._skipping:
            self._skipping = self._take_after_group(next_get_at)
        return self._skipping

    def _take_after_group(self, next_get_at: float | None) -> bool:
        """Whether the announced take falls after the next keyframe (False if either is not known)."""
        if next_get_at is None or self._key_interval is None:
            return False
        return next_get_at > self._key_arrived + self._key_interval + self.MARGIN_S

    def _new_group(self, t: float | None, now: float, interval: float | None) -> None:
        if t is not None:
            if self._last_key is not None and t > self._last_key:
                gap = t - self._last_key
                self._key_interval = gap if self._key_interval is None else 0.7 * self._key_interval + 0.3 * gap
            self._last_key = t
        self._key_arrived = now
        if self._key_interval is None or interval is None:
            self.keyframes_only = False
        else:
            ratio = interval / self._key_interval
            self.keyframes_only = ratio > (self.LEAVE * self.enter if self.keyframes_only else self.enter)


class RealtimePacer:
    """Sleeps so that frames of a file come out at the pace of their timestamps."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._origin: tuple[float, float] | None = None  # (stream time, monotonic time)

    def wait(self, t: float) -> None:
        """Block until stream time `t` is due; returns early when stop is set."""
        now = time.monotonic()
        if self._origin is None or t < self._origin[0]:
            self._origin = (t, now)
        delay = self._origin[1] + (t - self._origin[0]) - now
        if delay > 0:
            self._stop.wait(delay)


class RateMeter:
    """Frames per second over the last full window (shown by the API, not used for control)."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._start: float | None = None
        self._count = 0
        self._rate = 0.0
        self._last: float | None = None

    def tick(self, now: float) -> None:
        self._last = now
        if self._start is None:
            self._start = now
            return
        self._count += 1
        if now - self._start >= self.window_s:
            self._rate = self._count / (now - self._start)
            self._start, self._count = now, 0

    def rate(self, now: float) -> float:
        """The measured rate; 0 once no frame came for two windows."""
        if self._last is None or now - self._last > 2 * self.window_s:
            return 0.0
        return self._rate


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Delay before reconnect `attempt` (0-based): doubling, capped, 50-100% jitter."""
    return min(maximum, initial * 2.0**attempt) * random.uniform(0.5, 1.0)
