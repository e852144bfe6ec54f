"""Read one stream with PyAV in its own thread and hand sampled frames to the loop.

Why a thread per source: FFmpeg's reads and decodes block, and PyAV releases the GIL
while they run, so a plain thread decodes in parallel with the event loop and the
other streams (the default executor has too few workers to give one to every
stream for its whole life).

Lifecycle (`state`): connecting -> live -> (stalled? -> reconnecting -> live)* -> ended | failed.
- The first open failing is the user's problem (a wrong URL, not a video): `run`
  raises SourceError with one line naming the redacted URL and the cause, unless
  `cfg.retry_first_open` (a camera that is still booting): then it retries as below.
- A live source (not a file) that drops after it was live is reopened with
  exponential back-off and jitter while `cfg.reconnect` is true.
- Watchdog: a live source that delivers no frame for `cfg.stall_timeout_s` (the
  server stopped sending without closing, or sends only undecodable data) is
  `stalled`, then closed and reopened like a drop. FFmpeg's read timeout (PyAV's
  interrupt callback) bounds a blocked read by the same time.
- Corrupt data: a packet the decoder rejects is skipped and counted; the watchdog
  catches a stream that never recovers. A change of resolution or frame rate needs
  nothing: frames are sampled by timestamp and converted at their own size.
- A file ends at its end; a live source without reconnect ends when the server
  closes it, and fails (SourceError) on an error.
- Cancelling `run` sets the thread's stop flag, which it checks between packets;
  every FFmpeg read is bounded by `cfg.stall_timeout_s` and every open by
  `cfg.open_timeout_s`, so the thread stops within that time even when blocked.
- Stuck FFmpeg: once, in a full test run, a thread was still inside `av_read_frame`,
  polling a quiet RTSP connection, 20 minutes after its read timeout. A thread cannot
  be killed, so `run` watches when the thread entered its current FFmpeg call
  (`ReadThread`): past twice the longer timeout it leaves that thread behind (stop
  flag set, so it ends without a frame or a state once FFmpeg lets it go), counts it
  (`streamguard_stuck_reads_total`), and a new thread reopens the stream as after a
  stall. On cancel, `run` likewise returns STOP_GRACE_S after the longer timeout.

Hand-off: live sources (and files at `cfg.realtime`) put each sampled frame with
`LatestQueue.put_nowait`, which drops the oldest when analysis is behind. When the
decoder itself falls behind a live source (a starved CPU), `LagGuard` skips packets
up to the next keyframe, so latency stays bounded before decoding too. A file read
as fast as possible (`cfg.realtime` false, offline analysis) must not lose frames,
so the thread instead submits `LatestQueue.put` to the loop and blocks until the
consumer has taken a frame: the queue's size is the only read-ahead.

`SourceBase` holds what every kind of source shares (state, counters, metrics, the
hand-off); the WebRTC sources in `webrtc.py` build on it too.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import av
import av.container

from streamguard import metrics
from streamguard.config import IngestConfig, StreamConfig
from streamguard.errors import SourceError
from streamguard.ingest.hwaccel import decoder_hwaccel
from streamguard.ingest.latest import LatestQueue, QueueClosed
from streamguard.ingest.urls import is_file_url
from streamguard.redact import redact_url
from streamguard.types import Frame
from streamguard.types import StreamState as State

log = logging.getLogger(__name__)

StateCallback = Callable[[str, State, str], None]

# Low-latency FFmpeg options for network sources: a small probe makes av.open take
# ~60 ms instead of ~1 s. No 'fflags: nobuffer': with it FFmpeg discards the packets
# read while probing, which include the first keyframe, so the first frame came one
# GOP (~1 s) later from our RTSP server instead of ~60 ms after opening.
LIVE_OPTIONS = {"flags": "low_delay", "probesize": "32768", "analyzeduration": "0"}
PTS_TOLERANCE_S = 1e-3  # timestamps within this of the due time count as due
BLOCKED_PUT_POLL_S = 0.05  # how often a thread waiting for queue room checks its stop flag
RATE_WINDOW_S = 1.0  # the input frame rate shown by the API is measured over this long
READ_WAIT_S = 0.002  # a packet read that took longer waited for the network: we are at the live edge
STOP_GRACE_S = 1.0  # after the longest FFmpeg timeout, how long a cancelled run still waits for its thread


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
    next frame (`LatestQueue.announce_get`, called by the pipeline's look-ahead), so once
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


def use_live_decoder_threads(video: av.video.stream.VideoStream, threads: int) -> None:
    """Slice threads for a live stream: they add no frame of delay, where frame threads add one per thread."""
    video.thread_type = "SLICE"
    video.codec_context.thread_count = threads


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Delay before reconnect `attempt` (0-based): doubling, capped, 50-100% jitter."""
    return min(maximum, initial * 2.0**attempt) * random.uniform(0.5, 1.0)


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


class ReadThread:
    """One decoding thread's controls, shared by the thread and `StreamSource.run`.

    Each thread has its own, so that a thread left behind inside FFmpeg (stuck past
    its timeout) keeps its stop flag set while a new thread reads the stream: when
    FFmpeg lets it go, it closes its container and ends without a frame or a state.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.in_ffmpeg: tuple[str, float] | None = None  # the FFmpeg call it is in, and since when (monotonic)
        self.left_behind = False

    def entering(self, call: str) -> float:
        """Note that the thread enters FFmpeg (`call`: open, read, close); the time."""
        now = time.monotonic()
        self.in_ffmpeg = (call, now)
        return now

    def left(self) -> None:
        self.in_ffmpeg = None

    def stuck(self, now: float) -> tuple[str, float]:
        """The FFmpeg call the thread is in and for how long ("", 0 outside one)."""
        inside = self.in_ffmpeg
        return ("", 0.0) if inside is None else (inside[0], now - inside[1])


class StreamSource(SourceBase):
    """One stream FFmpeg opens: open, decode, sample to `cfg.analysis_fps`, put into `queue`.

    `run` owns the decoding thread; the owner closes `queue` after `run` returns.
    """

    def __init__(
        self,
        stream: StreamConfig,
        cfg: IngestConfig,
        queue: LatestQueue[Frame],
        on_state: StateCallback | None = None,
    ) -> None:
        super().__init__(stream, cfg, queue, on_state)
        self._hwaccel = decoder_hwaccel(cfg.hwaccel)
        # Whether the GPU decodes (ingest.hwaccel): with a GPU, known once opened (NVDEC may lack the codec).
        self.hw_decoding: bool | None = False if self._hwaccel is None else None
        self._block_when_full = self.is_file and not cfg.realtime
        self._longest_timeout = max(cfg.open_timeout_s, cfg.stall_timeout_s)
        self._m_decode_errors = metrics.DECODE_ERRORS.labels(stream.name)
        self._m_skipped = metrics.PACKETS_SKIPPED.labels(stream.name)
        self._m_unneeded = metrics.PACKETS_UNNEEDED.labels(stream.name)
        self._m_stuck = metrics.STUCK_READS.labels(stream.name)

    async def run(self) -> None:
        """Decode until the source ends; SourceError if it cannot be opened or fails."""
        self._loop = asyncio.get_running_loop()
        resume: str | None = None  # why a new thread takes over from a stuck one
        while True:
            reader = ReadThread()
            done = self._start(reader, resume)
            try:
                stuck = await self._watch(reader, done)
            except asyncio.CancelledError:
                await self._stop_thread(reader, done)
                raise
            if stuck is None:
                return done.result()  # raises the thread's SourceError
            self._leave_behind(reader, done)
            self._m_stuck.inc()
            call, seconds = stuck
            resume = f"FFmpeg stuck in one {call} for {seconds:.0f} s"
            if not self._retries():
                self._set_state("failed", resume)
                verb = "lost" if self._ever_live else "cannot open"
                raise SourceError(f"stream {self.stream.name}: {verb} {self._where}: {resume}")
            log.error("stream %s: the decoding thread has been inside one FFmpeg %s for %.0f s, past its %g s timeout; "
                      "leaving it behind and reopening %s in a new one", self.stream.name, call, seconds, self._longest_timeout,
                      self._where)
            self._stalled(resume)

    def _start(self, reader: ReadThread, resume: str | None) -> asyncio.Future[None]:
        """Start `reader`'s thread; a future for its outcome."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finish(error: BaseException | None) -> None:
            if done.done():  # cancelled: nobody waits for this thread any more
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def target() -> None:
            error: BaseException | None = None
            try:
                self._read(reader, resume)
            except BaseException as err:  # handed to run(), which re-raises it
                error = err
            try:
                loop.call_soon_threadsafe(finish, error)
            except RuntimeError:  # the loop is gone: run() was abandoned
                pass

        threading.Thread(target=target, name=f"ingest-{self.stream.name}", daemon=True).start()
        return done

    async def _watch(self, reader: ReadThread, done: asyncio.Future[None]) -> tuple[str, float] | None:
        """Wait for the thread to end; should one FFmpeg call outlive twice FFmpeg's own
        timeout (PyAV's interrupt callback, which a thread was once seen to ignore), that
        call and how long it has lasted. A thread cannot be killed, but it can be left behind."""
        limit = 2 * self._longest_timeout
        while not done.done():
            await asyncio.wait([done], timeout=min(1.0, limit / 4))
            call, seconds = reader.stuck(time.monotonic())
            if seconds > limit and not done.done():
                return call, seconds
        return None

    async def _stop_thread(self, reader: ReadThread, done: asyncio.Future[None]) -> None:
        reader.stop.set()
        bound = self._longest_timeout + STOP_GRACE_S
        await asyncio.wait([done], timeout=bound)
        if not done.done():  # FFmpeg did not honour its timeout: do not hang the owner's shutdown
            log.warning("stream %s: the decoding thread is still inside FFmpeg %g s after stop; leaving it behind",
                        self.stream.name, bound)
            self._leave_behind(reader, done)
        elif not done.cancelled():
            done.exception()  # mark it retrieved: cancellation wins

    @staticmethod
    def _leave_behind(reader: ReadThread, done: asyncio.Future[None]) -> None:
        """Give up on a thread inside FFmpeg: it ends on its own, unheard, whenever FFmpeg returns."""
        reader.left_behind = True
        reader.stop.set()
        done.cancel()  # what the thread reports later is dropped (see _start)

    # --- the decoding thread -------------------------------------------------

    def _read(self, reader: ReadThread, resume: str | None) -> None:
        """The thread: open (or, after a stuck thread, reopen), decode, reconnect, until the end or stop."""
        try:
            if resume is None:
                self._set_state("connecting", self._where)
                container = self._first_open(reader)
            else:
                container = self._reconnect(reader, resume)
            while container is not None:
                error, stalled = self._decode(reader, container)
                if reader.stop.is_set():
                    break
                reason = self._after_session(error, stalled, "end of stream", "cannot decode", "the source closed the connection")
                if reason is None:
                    return
                log.warning("stream %s: lost %s: %s; reconnecting", self.stream.name, self._where, reason)
                container = self._reconnect(reader, reason)
            if not reader.left_behind:
                self._set_state("ended", "stopped")
        except SourceError as err:
            if reader.left_behind:  # its stream is another thread's now
                return
            self._set_state("failed", str(err))
            raise

    def _first_open(self, reader: ReadThread) -> av.container.InputContainer | None:
        try:
            return self._open(reader)
        except SourceError as err:
            if not self._retries():
                raise
            log.warning("%s; retrying", err)
            return self._reconnect(reader, str(err))

    def _reconnect(self, reader: ReadThread, reason: str) -> av.container.InputContainer | None:
        """Reopen with back-off until it works; None when stopped."""
        while not reader.stop.is_set():
            if reader.stop.wait(self._next_delay(reason)):
                break
            try:
                return self._open(reader)
            except SourceError as err:
                reason = str(err)
        return None

    def _open(self, reader: ReadThread) -> av.container.InputContainer:
        """Open the source and check it has video; SourceError with one clear line if not."""
        name, where, timeout = self.stream.name, self._where, self.cfg.open_timeout_s
        options = {} if self.is_file else dict(LIVE_OPTIONS)
        if self.stream.url.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = self.cfg.rtsp_transport
        started = reader.entering("open")
        try:
            container = self._open_container(options)
        except av.FFmpegError as err:
            # An interrupted open surfaces as ExitError or, from the RTSP demuxer, InvalidDataError.
            if isinstance(err, av.error.ExitError) or time.monotonic() - started >= timeout:
                raise SourceError(f"stream {name}: cannot open {where}: no answer within {timeout:g} s") from None
            if isinstance(err, av.error.InvalidDataError):
                raise SourceError(f"stream {name}: {where} is not a video: {err.strerror}") from None
            raise SourceError(f"stream {name}: cannot open {where}: {err.strerror}") from None
        finally:
            reader.left()
        if container.format.name == "tty":  # FFmpeg plays text files (.txt, .nfo) as ANSI art
            container.close()
            raise SourceError(f"stream {name}: {where} is not a video: it is a text file")
        if not container.streams.video:
            container.close()
            raise SourceError(f"stream {name}: no video stream in {where}")
        if self._hwaccel is not None:
            codec = container.streams.video[0].codec_context
            if codec.is_hwaccel != self.hw_decoding:
                log.info("stream %s: decoding %s on the %s", name, codec.name, "GPU (NVDEC)" if codec.is_hwaccel else "CPU (NVDEC cannot)")
            self.hw_decoding = codec.is_hwaccel
        return container

    def _open_container(self, options: dict[str, str]) -> av.container.InputContainer:
        """av.open, on the GPU where ingest.hwaccel asks for it. Where NVDEC refuses to open a stream
        the CPU can (seen: a CUDA context FFmpeg could not share), the stream decodes on the CPU
        from then on; where the CPU cannot open it either, the source is at fault and its error is raised."""
        timeout = (self.cfg.open_timeout_s, self.cfg.stall_timeout_s)
        try:
            return av.open(self.stream.url, options=options, timeout=timeout, hwaccel=self._hwaccel)
        except av.FFmpegError as gpu_err:
            if self._hwaccel is None or isinstance(gpu_err, (av.error.ExitError, av.error.InvalidDataError)):
                raise
            container = av.open(self.stream.url, options=options, timeout=timeout)
            log.warning("stream %s: the GPU cannot decode %s (%s); decoding on the CPU", self.stream.name, self._where, gpu_err.strerror)
            self._hwaccel, self.hw_decoding = None, False
            return container

    def _decode(self, reader: ReadThread, container: av.container.InputContainer) -> tuple[str | None, bool]:
        """Decode until the end, a stall or stop: (the error that ended it, whether it was a stall)."""
        video = container.streams.video[0]
        if self.is_file:
            video.thread_type = "AUTO"
        else:
            use_live_decoder_threads(video, self.cfg.decode_threads)
        rate = float(video.average_rate or video.guessed_rate or 25)
        sampler = FpsSampler(self.cfg.analysis_fps)
        pacer = RealtimePacer(reader.stop) if self.is_file and self.cfg.realtime else None
        guard = None if self.is_file else LagGuard(self.cfg.max_lag_s)
        gate = DemandGate(self.cfg.keyframes_only_beyond) if not self.is_file and self.cfg.decode_on_demand else None
        stall = self.cfg.stall_timeout_s
        last_frame = time.monotonic()
        t: float | None = None
        corrupt = False
        packets = container.demux(video)
        try:
            while not reader.stop.is_set():
                before = reader.entering("read")
                packet = next(packets, None)
                reader.left()
                if packet is None or reader.stop.is_set():  # the end, or stopped (or left behind) while reading
                    break
                now = time.monotonic()
                waited = now - before > READ_WAIT_S
                packet_t, keyframe = _packet_time(packet), packet.is_keyframe
                if guard is not None and guard.skip(packet_t, now, keyframe, waited):
                    self._m_skipped.inc()
                    continue
                if gate is not None and gate.skip(packet_t, now, keyframe, self.queue.next_get_at, self.queue.pace):
                    self._m_unneeded.inc()
                    last_frame = now  # data flows: not a stall
                    continue
                try:
                    frames = packet.decode()
                except av.FFmpegError as err:  # corrupt data: skip it; the watchdog catches a stream that stays bad
                    self._m_decode_errors.inc()
                    if not corrupt:
                        corrupt = True
                        log.warning("stream %s: skipping undecodable data (%s)", self.stream.name, err.strerror)
                    frames = []
                for frame in frames:
                    # RTSP gives the first frame before RTCP sync no pts: continue the timeline.
                    t = float(frame.time) if frame.time is not None else (0.0 if t is None else t + 1.0 / rate)
                    if pacer is not None:
                        pacer.wait(t)
                    last_frame = time.monotonic()
                    wall = self._frame_arrived(frame.width, frame.height)
                    if sampler.keep(t):
                        self._sampled()
                        self._deliver(reader, Frame.decoded(self.stream.name, t, wall, frame))
                if not self.is_file and now - last_frame > stall:
                    return f"no frame for {stall:g} s", True
        except av.FFmpegError as err:
            if isinstance(err, av.error.ExitError) and not self.is_file:
                return f"no data for {stall:g} s", True
            return err.strerror, False
        finally:
            reader.entering("close")
            container.close()
            reader.left()
        return None, False

    def _deliver(self, reader: ReadThread, frame: Frame) -> None:
        assert self._loop is not None
        loop = self._loop
        if not self._block_when_full:
            loop.call_soon_threadsafe(self._put_latest_or_stop, reader, frame)
            return
        pending = asyncio.run_coroutine_threadsafe(self.queue.put(frame), loop)
        while not reader.stop.is_set():
            try:
                pending.result(timeout=BLOCKED_PUT_POLL_S)
                return
            except FutureTimeout:
                continue
            except QueueClosed:
                reader.stop.set()
        pending.cancel()

    def _put_latest_or_stop(self, reader: ReadThread, frame: Frame) -> None:
        if reader.stop.is_set():  # left behind (or stopping): its frames are not the stream's any more
            return
        if not self._put_latest(frame):  # the owner stopped listening
            reader.stop.set()


def _packet_time(packet: av.Packet) -> float | None:
    """Decoding time in seconds (monotonic in read order, unlike pts with B-frames)."""
    ts = packet.dts if packet.dts is not None else packet.pts
    if ts is None or packet.time_base is None:
        return None
    return float(ts * packet.time_base)
