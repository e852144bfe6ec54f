"""One micro-batcher per process: crops of every stream share each model call.

A ViT call costs far less per crop in a batch of 8-16 than one by one, and each
stream has only a few faces per frame, so crops from all streams are pooled: a batch
goes to the engine as soon as `max_batch` crops are waiting, or `max_wait_ms` after
the oldest waiting crop arrived, whichever comes first. A request larger than the
room left in a batch is split across batches; its caller still gets its own rows
back, in order. The engine runs in dedicated worker threads so the event loop
keeps decoding and detecting while the model computes: one, or `engine.concurrency`
batches at once for an engine that runs independent calls better than one wide one
(onnxruntime on CPU, one thread per call). With several workers free, what waits is
shared out evenly so that all of them compute.

Under overload the newest frames matter most (this is live video): when more than
`queue_size` crops wait, whole requests are failed oldest first with `CropsDropped`.
An engine call that raises fails only its own batch's requests, with `EngineFailed`;
the next batch is tried afresh.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from streamguard.config import BatcherConfig
from streamguard.inference.contract import Engine, check_crops
from streamguard.metrics import BATCH_SIZE, CROP_QUEUE_DEPTH, CROPS_DROPPED, ENGINE_FAILURES, INFER_SECONDS

log = logging.getLogger(__name__)


RECENT_CALLS = 5  # engine calls the forecast's time per crop is the median of
FAILURE_LOG_INTERVAL_S = 30.0  # a failing engine is logged once, then at most this often with a count


class CropsDropped(Exception):
    """The request's crops were dropped unscored: the model queue was full."""


class EngineFailed(Exception):
    """The engine call that held the request's crops raised (its error is the cause): the crops
    are unscored. A stream goes on with its next frame; one failed call (a CUDA error, say)
    must not end every stream that had a crop in it."""


class BatcherClosed(Exception):
    """The micro-batcher was closed before the request was scored."""


@dataclass(eq=False)
class Member:
    """A stream that joined the batcher (`MicroBatcher.join`): one request open at a time."""

    requests: int = 0  # the round its latest request belongs to: one per request, or level on return
    sat_out: bool = True  # it had nothing to score since its last request (or has made none)


@dataclass(eq=False)
class _Request:
    crops: np.ndarray  # uint8 [n, S, S, 3]
    future: asyncio.Future[tuple[np.ndarray, np.ndarray]]
    arrival: float  # loop time
    p_fake: np.ndarray  # float32 [n], filled as batches finish
    embedding: np.ndarray  # float32 [n, D]
    round: int | None = None  # its member's request count; None for a caller that did not join
    taken: int = 0  # rows handed to a batch
    scored: int = 0  # rows with results

    @property
    def remaining(self) -> int:
        return len(self.crops) - self.taken


@dataclass(frozen=True)
class _Slice:
    request: _Request
    start: int
    stop: int


@dataclass(frozen=True)
class _Batch:
    slices: list[_Slice]
    started: float  # loop time it went to the engine

    @property
    def size(self) -> int:
        """Crops in the batch."""
        return sum(s.stop - s.start for s in self.slices)


class MicroBatcher:
    """Pools crops from concurrent callers into engine calls of at most `cfg.max_batch`.

    Lifetime: `await start()` creates the worker threads and the batching task, which
    owns one task per batch in flight; `await close()` cancels them, waits for the
    workers to go idle, shuts them down and fails whatever was still waiting with
    `BatcherClosed`. The engine is not closed: whoever opened it closes it, after the
    batcher.

    A stream submits its crops (`join`, `submit`, `sit_out`, `leave`) and times its
    next frame by the batcher's forecast (`free_at`, `seconds_per_crop`, `sleep_until`:
    the `Forecast` its `ingest.demand.TakePacer` reads).
    """

    def __init__(self, engine: Engine, cfg: BatcherConfig):
        self._engine = engine
        self._cfg = cfg
        self._queue: deque[_Request] = deque()
        self._pending = 0  # crops in `_queue` not yet handed to a batch
        self._workers = max(1, engine.concurrency)
        self._running: dict[asyncio.Task[None], _Batch] = {}  # the batches the engine is computing
        self._wakeup = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._members = 0  # streams that joined: each has at most one request open
        self._open_member_requests = 0  # their requests queued or in flight
        # One call's time per crop, for free_at: the median of the latest calls (one slow call, say while
        # every stream starts at once, does not throw the forecasts off), from one crop's time at warm-up.
        warm = engine.warm_seconds_per_crop or 0.0
        self._recent_per_crop: deque[float] = deque([warm] if warm else [], maxlen=RECENT_CALLS)
        self._dry = asyncio.Event()  # set while a worker is free and no crop waits (see sleep_until)
        self._dry.set()
        self._failures_unlogged = 0
        self._failure_logged_at: float | None = None

    async def start(self) -> None:
        if self._task is not None or self._closed:
            raise RuntimeError("MicroBatcher can be started once")
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="streamguard-infer")
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """crops uint8 [n, S, S, 3] -> (p_fake float32 [n], embedding float32 [n, D]) for these rows."""
        return await self.submit(crops)

    def join(self) -> Member:
        """A stream joins: a caller with at most one `submit(..., member=...)` open at a time.

        While every member has a request open nobody else is about to submit, so a
        partial batch goes at once instead of waiting `max_wait_ms` for company (that
        wait was 8% of the engine's time with one stream and batches of two crops).
        With several workers, a member's request waits while it is more than one round
        ahead of another member's open request, so that streams in quick batches cannot
        lap one in a long batch; a member that had nothing to score says so (`sit_out`)
        and comes back level instead of behind.
        """
        self._members += 1
        return Member()

    def sit_out(self, member: Member) -> None:
        """The member analysed a frame with nothing to score: it does not count as behind."""
        member.sat_out = True

    def leave(self, member: Member) -> None:
        self._members -= 1
        self._wakeup.set()

    def submit(self, crops: np.ndarray, member: Member | None = None) -> asyncio.Future[tuple[np.ndarray, np.ndarray]]:
        """Queue `crops` now; the future resolves as `infer` returns (cancel it to withdraw them).

        For a caller that wants `free_at` to count its own crops before it awaits them;
        `member`: what the caller's `join` returned.
        """
        check_crops(crops, self._engine.input_size)
        if self._closed:
            raise BatcherClosed("micro-batcher is closed")
        if self._task is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        n = len(crops)
        loop = asyncio.get_running_loop()
        if n == 0:
            done = loop.create_future()
            done.set_result((np.zeros(0, np.float32), np.zeros((0, self._engine.embed_dim), np.float32)))
            return done
        if n > self._cfg.queue_size:
            CROPS_DROPPED.inc(n)
            raise CropsDropped(f"{n} crops dropped: more than the whole model queue ({self._cfg.queue_size} crops)")
        while self._pending + n > self._cfg.queue_size:
            self._drop_oldest()
        request = _Request(
            crops=crops,
            future=loop.create_future(),
            arrival=loop.time(),
            p_fake=np.empty(n, np.float32),
            embedding=np.empty((n, self._engine.embed_dim), np.float32),
        )
        if member is not None:
            # One that sat out (no faces) is level with the others on return, so that it does
            # not count as behind and hold them back; one that only ran slow stays behind.
            member.requests += 1
            if member.sat_out:
                member.requests = max(member.requests, min(self._open_rounds(), default=0))
            member.sat_out = False
            request.round = member.requests
            self._open_member_requests += 1
            request.future.add_done_callback(self._member_request_done)
        self._queue.append(request)
        self._pending += n
        CROP_QUEUE_DEPTH.set(self._pending)
        self._dry.clear()
        self._wakeup.set()
        return request.future

    async def sleep_until(self, at: float) -> None:
        """Sleep until loop time `at`, or until the engine runs dry (a worker free, no crop
        waiting), whichever comes first.

        For a stream that times its next frame by `free_at`, which is a forecast from the
        recent seconds per crop. After a slow spell it overshoots: at start-up 16 x 1080p
        streams decoding every frame made the first batches 4-7x slower per crop, the
        forecasts ran 12-24 s ahead, and the engine sat idle while every stream slept on
        them (ratio to the model alone 0.40-0.48). Woken when the engine runs dry, a
        stream whose forecast was late costs one detection's wait, not the rest of the
        forecast.
        """
        timeout = at - asyncio.get_running_loop().time()
        if timeout > 0 and not self._dry.is_set():
            try:
                await asyncio.wait_for(self._dry.wait(), timeout)
            except TimeoutError:
                pass

    @property
    def dry(self) -> bool:
        """A worker is free and no crop waits: the engine has nothing to compute."""
        return self._dry.is_set()

    @property
    def seconds_per_crop(self) -> float:
        """One engine call's recent time per crop (the median of the latest calls, from the warm-up; 0 without either)."""
        return statistics.median(self._recent_per_crop) if self._recent_per_crop else 0.0

    @property
    def workers(self) -> int:
        """Batches the engine computes at once."""
        return self._workers

    def _member_request_done(self, _: asyncio.Future[tuple[np.ndarray, np.ndarray]]) -> None:
        self._open_member_requests -= 1
        self._wakeup.set()  # requests held a round back may go now

    def free_at(self) -> float:
        """Loop time by which the engine should have scored every crop queued now.

        An estimate from the recent seconds per crop, following the batches the workers
        will take; a stream uses it right after it queued its crops (the newest) to take
        and detect its next frame just in time for its crops' batch to end, neither too
        early (a stale frame) nor too late (its next crops miss the batch after). With
        nothing queued, when the batches in flight end; before the first batch, now.
        """
        now = asyncio.get_running_loop().time()
        per_crop = self.seconds_per_crop
        ends = sorted(max(now, b.started + per_crop * b.size) for b in self._running.values())
        ends += [now] * (self._workers - len(ends))  # workers free now
        waiting, last = self._pending, max(ends)
        while waiting > 0:  # the batches to come, as _take_batch shares what waits among free workers
            t = ends[0]
            free = sum(1 for e in ends if e <= t)
            share = min(self._cfg.max_batch, -(-waiting // free))
            for i in range(free):
                n = min(share, waiting)
                if n == 0:
                    break
                waiting -= n
                ends[i] = last = t + per_crop * n
            ends.sort()
        return last

    async def close(self) -> None:
        self._closed = True
        in_flight = [s.request for b in self._running.values() for s in b.slices]
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})  # finished, whether cancelled or not; it awaited its batches
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown)  # returns once every engine call has ended
            self._executor = None
        for request in [*self._queue, *in_flight]:
            if not request.future.done():
                request.future.set_exception(BatcherClosed("micro-batcher closed before these crops were scored"))
        self._queue.clear()
        self._pending = 0
        CROP_QUEUE_DEPTH.set(0)

    # --- the batching task ---------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wait_for_worker()
                batch = self._take_batch(await self._wait_for_batch(loop))
                if batch:
                    task = asyncio.create_task(self._run_batch(loop, batch), name="micro-batch")
                    self._running[task] = _Batch(batch, loop.time())
                    task.add_done_callback(self._batch_done)
                    self._note_if_dry()  # another worker may be free with nothing to take
        finally:
            batches = list(self._running)
            for task in batches:
                task.cancel()
            await asyncio.gather(*batches, return_exceptions=True)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        del self._running[task]
        self._discard_finished_head()
        self._note_if_dry()
        self._wakeup.set()  # a worker is free

    def _note_if_dry(self) -> None:
        """Set `dry` when a worker is free and no crop waits (`submit` clears it)."""
        if not self._pending and len(self._running) < self._workers:
            self._dry.set()

    async def _wait_for_worker(self) -> None:
        while len(self._running) >= self._workers:
            self._wakeup.clear()
            await self._wakeup.wait()

    def _open_rounds(self) -> list[int]:
        """Rounds of the member requests queued or being computed."""
        requests = [*self._queue, *(s.request for b in self._running.values() for s in b.slices)]
        return [r.round for r in requests if r.round is not None and not r.future.done()]

    def _ready(self) -> list[_Request]:
        """Waiting requests a batch may take now, oldest first: with several workers, not
        those more than one round ahead of the lowest open member request (see `join`)."""
        rounds = self._open_rounds() if self._workers > 1 else []
        limit = min(rounds) + 1 if rounds else None
        return [
            r for r in self._queue
            if r.remaining and not r.future.done() and (limit is None or r.round is None or r.round <= limit)
        ]

    async def _wait_for_batch(self, loop: asyncio.AbstractEventLoop) -> list[_Request]:
        """The ready requests, once max_batch crops are ready, every member has a request
        open, or the oldest ready waited max_wait_ms."""
        while True:
            self._discard_finished_head()
            ready = self._ready()
            crops = sum(r.remaining for r in ready)
            if crops >= self._cfg.max_batch:
                return ready
            if crops and self._members and self._open_member_requests >= self._members:
                return ready
            timeout = None
            if ready:
                timeout = ready[0].arrival + self._cfg.max_wait_ms / 1000 - loop.time()
                if timeout <= 0:
                    return ready
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                return self._ready()

    def _take_batch(self, ready: list[_Request]) -> list[_Slice]:
        """Move up to max_batch of the `ready` crops, oldest first, into a batch.

        While other workers are free too, only an even share of what waits, in whole
        requests where they fit: a request split across batches is scored only when the
        later one ends, and it ties its stream to both.
        """
        free = self._workers - len(self._running)
        room = min(self._cfg.max_batch, -(-sum(r.remaining for r in ready) // free))
        batch: list[_Slice] = []
        for request in ready:
            if not room or (free > 1 and batch and request.remaining > room):
                break  # the rest (whole requests) for another free worker
            n = min(room, request.remaining)
            batch.append(_Slice(request, request.taken, request.taken + n))
            request.taken += n
            self._pending -= n
            room -= n
        if batch:
            self._queue = deque(r for r in self._queue if r.remaining)
        CROP_QUEUE_DEPTH.set(self._pending)
        return batch

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Slice]) -> None:
        crops = np.concatenate([s.request.crops[s.start : s.stop] for s in batch])  # [B, S, S, 3]
        try:
            p_fake, embedding, seconds = await loop.run_in_executor(self._executor, self._timed_infer, crops)
        except Exception as err:  # the engine failed: only this batch's callers hear of it
            ENGINE_FAILURES.inc()
            self._log_failure(err, len(crops))
            message = f"the engine failed on a batch of {len(crops)} crops: {err!r}"
            for s in batch:
                if not s.request.future.done():
                    failed = EngineFailed(message)  # one each: a raised exception collects its own traceback
                    failed.__cause__ = err
                    s.request.future.set_exception(failed)
            return
        per_crop = seconds / len(crops)
        self._recent_per_crop.append(per_crop)
        row = 0
        for s in batch:
            request, n = s.request, s.stop - s.start
            request.p_fake[s.start : s.stop] = p_fake[row : row + n]
            request.embedding[s.start : s.stop] = embedding[row : row + n]
            request.scored += n
            row += n
            if request.scored == len(request.crops) and not request.future.done():
                request.future.set_result((request.p_fake, request.embedding))

    def _log_failure(self, err: Exception, crops: int) -> None:
        """The first failure with its traceback; after that one line per FAILURE_LOG_INTERVAL_S with a count."""
        now = time.monotonic()
        self._failures_unlogged += 1
        if self._failure_logged_at is None:
            log.error("the engine failed on a batch of %d crops; those crops go unscored", crops, exc_info=err)
        elif now - self._failure_logged_at >= FAILURE_LOG_INTERVAL_S:
            log.error("the engine failed on %d more batches in the last %.0f s, the latest: %r",
                      self._failures_unlogged, now - self._failure_logged_at, err)
        else:
            return
        self._failure_logged_at, self._failures_unlogged = now, 0

    def _timed_infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Runs in a worker thread: (p_fake, embedding, seconds the call took)."""
        t0 = time.perf_counter()
        p_fake, embedding = self._engine.infer(crops)
        seconds = time.perf_counter() - t0
        INFER_SECONDS.observe(seconds)
        BATCH_SIZE.observe(len(crops))
        return p_fake, embedding, seconds

    # --- queue upkeep --------------------------------------------------------------------

    def _discard_finished_head(self) -> None:
        """Forget leading requests that no longer need scoring (cancelled, dropped or failed)."""
        while self._queue and self._queue[0].future.done():
            self._pending -= self._queue.popleft().remaining

    def _drop_oldest(self) -> None:
        request = self._queue.popleft()
        self._pending -= request.remaining
        if not request.future.done():
            CROPS_DROPPED.inc(request.remaining)
            request.future.set_exception(
                CropsDropped(f"{len(request.crops)} crops dropped: the model queue ({self._cfg.queue_size} crops) was full")
            )
        CROP_QUEUE_DEPTH.set(self._pending)

