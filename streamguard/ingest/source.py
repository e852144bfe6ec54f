"""Read one stream with PyAV in its own thread and hand sampled frames to the loop.

Why a thread per source: FFmpeg's reads and decodes block, and PyAV releases the GIL
while they run, so a plain thread decodes in parallel with the event loop and the
other streams (the default executor has too few workers to give one to every
stream for its whole life).

Lifecycle (`state`): connecting -> live -> (reconnecting -> live)* -> ended | failed.
- The first open failing is the user's problem (a wrong URL, not a video): `run`
  raises SourceError with one line naming the redacted URL and the cause.
- A live source (not a file) that drops after it was live is reopened with
  exponential back-off and jitter while `cfg.reconnect` is true.
- A file ends at its end; a live source without reconnect ends when the server
  closes it, and fails (SourceError) on an error.
- Cancelling `run` sets a stop flag that the thread checks between packets; every
  FFmpeg open and read is bounded by `cfg.open_timeout_s` (PyAV's interrupt
  callback), so the thread stops within that time even when a read is blocked.

Hand-off: live sources (and files at `cfg.realtime`) put each sampled frame with
`LatestQueue.put_nowait`, which drops the oldest when analysis is behind. A file
read as fast as possible (`cfg.realtime` false, offline analysis) must not lose
frames, so the thread instead submits `LatestQueue.put` to the loop and blocks
until the consumer has taken a frame: the queue's size is the only read-ahead.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Literal

import av
import av.container

from streamguard import metrics
from streamguard.config import IngestConfig, StreamConfig
from streamguard.errors import SourceError
from streamguard.ingest.latest import LatestQueue, QueueClosed
from streamguard.ingest.urls import is_file_url, redact_url
from streamguard.types import Frame

log = logging.getLogger(__name__)

State = Literal["connecting", "live", "reconnecting", "ended", "failed"]
StateCallback = Callable[[str, State, str], None]

# Low-latency FFmpeg options for network sources: a small probe makes av.open take
# ~60 ms instead of ~1 s. No 'fflags: nobuffer': with it FFmpeg discards the packets
# read while probing, which include the first keyframe, so the first frame came one
# GOP (~1 s) later from our RTSP server instead of ~60 ms after opening.
LIVE_OPTIONS = {"flags": "low_delay", "probesize": "32768", "analyzeduration": "0"}
PTS_TOLERANCE_S = 1e-3  # timestamps within this of the due time count as due
BLOCKED_PUT_POLL_S = 0.05  # how often a thread waiting for queue room checks its stop flag


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


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Delay before reconnect `attempt` (0-based): doubling, capped, 50-100% jitter."""
    return min(maximum, initial * 2.0**attempt) * random.uniform(0.5, 1.0)


class StreamSource:
    """One stream: open, decode, sample to `cfg.analysis_fps`, put into `queue`.

    `run` owns the decoding thread; the owner closes `queue` after `run` returns.
    `on_state(stream_name, state, detail)` is called on the event loop thread.
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
        self.frames_decoded = 0
        self.frames_sampled = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.last_frame_wall: float | None = None
        self.is_file = is_file_url(stream.url)
        self._where = redact_url(stream.url)
        self._block_when_full = self.is_file and not cfg.realtime
        self._stop = threading.Event()
        self._attempt = 0  # reconnect attempts since the source was last live
        self._loop: asyncio.AbstractEventLoop  # set by run(), used by the thread
        name = stream.name
        self._m_decoded = metrics.FRAMES_DECODED.labels(name)
        self._m_sampled = metrics.FRAMES_SAMPLED.labels(name)
        self._m_dropped = metrics.FRAMES_DROPPED.labels(name)
        self._m_up = metrics.STREAM_UP.labels(name)
        self._m_reconnects = metrics.RECONNECTS.labels(name)
        metrics.FRAME_QUEUE_DEPTH.labels(name).set_function(lambda: len(queue))

    async def run(self) -> None:
        """Decode until the source ends; SourceError if it cannot be opened or fails."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop.clear()
        done: asyncio.Future[None] = loop.create_future()

        def finish(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def target() -> None:
            error: BaseException | None = None
            try:
                self._read()
            except BaseException as err:  # handed to run(), which re-raises it
                error = err
            try:
                loop.call_soon_threadsafe(finish, error)
            except RuntimeError:  # the loop is gone: run() was abandoned
                pass

        thread = threading.Thread(target=target, name=f"ingest-{self.stream.name}", daemon=True)
        thread.start()
        try:
            await asyncio.shield(done)
        finally:
            if not done.done():  # cancelled: stop the thread and wait for it to finish
                self._stop.set()
                await asyncio.wait([done])
                if not done.cancelled():
                    done.exception()  # mark it retrieved: cancellation wins

    # --- the decoding thread -------------------------------------------------

    def _read(self) -> None:
        self._set_state("connecting", self._where)
        try:
            container = self._open()
            ever_live = False
            while True:
                live, error = self._decode(container)
                ever_live = ever_live or live
                if self._stop.is_set():
                    self._set_state("ended", "stopped")
                    return
                if error is not None and not ever_live:
                    raise SourceError(f"stream {self.stream.name}: cannot decode {self._where}: {error}")
                if self.is_file or not self.cfg.reconnect or not ever_live:
                    if error is not None:
                        raise SourceError(f"stream {self.stream.name}: lost {self._where}: {error}")
                    self._set_state("ended", "end of stream")
                    return
                reason = error or "the source closed the connection"
                log.warning("stream %s: lost %s: %s; reconnecting", self.stream.name, self._where, reason)
                reopened = self._reconnect(reason)
                if reopened is None:
                    self._set_state("ended", "stopped")
                    return
                container = reopened
        except SourceError as err:
            self._set_state("failed", str(err))
            raise

    def _reconnect(self, reason: str) -> av.container.InputContainer | None:
        """Reopen with back-off until it works; None when stopped."""
        while True:
            delay = backoff_delay(self._attempt, self.cfg.backoff_initial_s, self.cfg.backoff_max_s)
            self._attempt += 1
            self._set_state("reconnecting", f"{reason}; retry in {delay:.1f} s")
            if self._stop.wait(delay):
                return None
            self.reconnects += 1
            self._m_reconnects.inc()
            try:
                return self._open()
            except SourceError as err:
                reason = str(err)

    def _open(self) -> av.container.InputContainer:
        """Open the source and check it has video; SourceError with one clear line if not."""
        name, where, timeout = self.stream.name, self._where, self.cfg.open_timeout_s
        options = {} if self.is_file else dict(LIVE_OPTIONS)
        if self.stream.url.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = self.cfg.rtsp_transport
        started = time.monotonic()
        try:
            container = av.open(self.stream.url, options=options, timeout=(timeout, timeout))
        except av.FFmpegError as err:
            # An interrupted open surfaces as ExitError or, from the RTSP demuxer, InvalidDataError.
            if isinstance(err, av.error.ExitError) or time.monotonic() - started >= timeout:
                raise SourceError(f"stream {name}: cannot open {where}: no answer within {timeout:g} s") from None
            if isinstance(err, av.error.InvalidDataError):
                raise SourceError(f"stream {name}: {where} is not a video: {err.strerror}") from None
            raise SourceError(f"stream {name}: cannot open {where}: {err.strerror}") from None
        if container.format.name == "tty":  # FFmpeg plays text files (.txt, .nfo) as ANSI art
            container.close()
            raise SourceError(f"stream {name}: {where} is not a video: it is a text file")
        if not container.streams.video:
            container.close()
            raise SourceError(f"stream {name}: no video stream in {where}")
        return container

    def _decode(self, container: av.container.InputContainer) -> tuple[bool, str | None]:
        """Decode until the end or stop: (whether a frame came out, the error if one ended it)."""
        video = container.streams.video[0]
        # Slice threads add no frame of delay (frame threads add one per thread).
        video.thread_type = "AUTO" if self.is_file else "SLICE"
        rate = float(video.average_rate or video.guessed_rate or 25)
        sampler = FpsSampler(self.cfg.analysis_fps)
        pacer = RealtimePacer(self._stop) if self.is_file and self.cfg.realtime else None
        t: float | None = None
        live = False
        error: str | None = None
        try:
            for frame in container.decode(video):
                if self._stop.is_set():
                    break
                # RTSP gives the first frame before RTCP sync no pts: continue the timeline.
                t = float(frame.time) if frame.time is not None else (0.0 if t is None else t + 1.0 / rate)
                if pacer is not None:
                    pacer.wait(t)
                self.last_frame_wall = time.time()
                self.frames_decoded += 1
                self._m_decoded.inc()
                if not live:
                    live = True
                    self._attempt = 0
                    self._set_state("live", f"{frame.width}x{frame.height}")
                if sampler.keep(t):
                    rgb = frame.to_ndarray(format="rgb24")
                    self.frames_sampled += 1
                    self._m_sampled.inc()
                    self._deliver(Frame(self.stream.name, t, self.last_frame_wall, rgb))
        except av.FFmpegError as err:
            timed_out = isinstance(err, av.error.ExitError)
            error = f"no data for {self.cfg.open_timeout_s:g} s" if timed_out else err.strerror
        finally:
            container.close()
        return live, error

    def _deliver(self, frame: Frame) -> None:
        loop = self._loop
        if not self._block_when_full:
            loop.call_soon_threadsafe(self._put_latest, frame)
            return
        pending = asyncio.run_coroutine_threadsafe(self.queue.put(frame), loop)
        while not self._stop.is_set():
            try:
                pending.result(timeout=BLOCKED_PUT_POLL_S)
                return
            except FutureTimeout:
                continue
            except QueueClosed:
                self._stop.set()
        pending.cancel()

    def _set_state(self, state: State, detail: str) -> None:
        self.state = state
        self._m_up.set(1 if state == "live" else 0)
        log.info("stream %s: %s (%s)", self.stream.name, state, detail)
        if self.on_state is not None:
            self._loop.call_soon_threadsafe(self.on_state, self.stream.name, state, detail)

    # --- the event loop thread -----------------------------------------------

    def _put_latest(self, frame: Frame) -> None:
        before = self.queue.dropped
        try:
            self.queue.put_nowait(frame)
        except QueueClosed:  # the owner stopped listening
            self._stop.set()
            return
        dropped = self.queue.dropped - before
        if dropped:
            self.frames_dropped += dropped
            self._m_dropped.inc(dropped)

