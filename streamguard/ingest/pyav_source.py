"""Read one stream with PyAV in its own thread and hand sampled frames to the loop.

Why a thread per source: FFmpeg's reads and decodes block, and PyAV releases the GIL
while they run, so a plain thread decodes in parallel with the event loop and the
other streams (the default executor has too few workers to give one to every
stream for its whole life).

The lifecycle, reconnect policy and newest-wins hand-off are `SourceBase`'s
(source_base.py); the per-packet policies are in pacing.py. Here, what FFmpeg adds:
- The first open failing makes `run` raise SourceError (unless `cfg.retry_first_open`).
- Watchdog: a live source that delivers no frame for `cfg.stall_timeout_s` (the
  server stopped sending without closing, or sends only undecodable data) is
  `stalled`, then closed and reopened like a drop. FFmpeg's read timeout (PyAV's
  interrupt callback) bounds a blocked read by the same time.
- Corrupt data: a packet the decoder rejects is skipped and counted; the watchdog
  catches a stream that never recovers. A change of resolution or frame rate needs
  nothing: frames are sampled by timestamp and converted at their own size.
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
up to the next keyframe, so latency stays bounded before decoding too; `DemandGate`
leaves undecoded what no take of analysis needs. A file read as fast as possible
(`cfg.realtime` false, offline analysis) must not lose frames, so the thread instead
submits `LatestQueue.put` to the loop and blocks until the consumer has taken a
frame: the queue's size is the only read-ahead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout

import av
import av.container

from streamguard import metrics
from streamguard.config import IngestConfig, StreamConfig
from streamguard.errors import SourceError
from streamguard.ingest.hwaccel import decoder_hwaccel
from streamguard.ingest.latest import LatestQueue, QueueClosed
from streamguard.ingest.pacing import DemandGate, FpsSampler, LagGuard, RealtimePacer
from streamguard.ingest.protocols import protocol_whitelist
from streamguard.ingest.source_base import SourceBase, StateCallback
from streamguard.types import Frame

log = logging.getLogger(__name__)

# Low-latency FFmpeg options for network sources: a small probe makes av.open take
# ~60 ms instead of ~1 s. No 'fflags: nobuffer': with it FFmpeg discards the packets
# read while probing, which include the first keyframe, so the first frame came one
# GOP (~1 s) later from our RTSP server instead of ~60 ms after opening.
LIVE_OPTIONS = {"flags": "low_delay", "probesize": "32768", "analyzeduration": "0"}
BLOCKED_PUT_POLL_S = 0.05  # how often a thread waiting for queue room checks its stop flag
READ_WAIT_S = 0.002  # a packet read that took longer waited for the network: we are at the live edge
STOP_GRACE_S = 1.0  # after the longest FFmpeg timeout, how long a cancelled run still waits for its thread


def use_live_decoder_threads(video: av.video.stream.VideoStream, threads: int) -> None:
    """Slice threads for a live stream: they add no frame of delay, where frame threads add one per thread."""
    video.thread_type = "SLICE"
    video.codec_context.thread_count = threads


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
        options["protocol_whitelist"] = protocol_whitelist(self.stream.url)  # nothing nested escapes the source policy
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
