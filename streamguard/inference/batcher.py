"""One micro-batcher per process: crops of every stream share each model call.

A ViT call costs far less per crop in a batch of 8-16 than one by one, and each
stream has only a few faces per frame, so crops from all streams are pooled: a batch
goes to the engine as soon as `max_batch` crops are waiting, or `max_wait_ms` after
the oldest waiting crop arrived, whichever comes first. A request larger than the
room left in a batch is split across batches; its caller still gets its own rows
back, in order. The engine runs in one dedicated worker thread so the event loop
keeps decoding and detecting while the model computes.

Under overload the newest frames matter most (this is live video): when more than
`queue_size` crops wait, whole requests are failed oldest first with `CropsDropped`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from streamguard.config import BatcherConfig
from streamguard.inference.engine import Engine, check_crops
from streamguard.metrics import BATCH_SIZE, CROP_QUEUE_DEPTH, CROPS_DROPPED, INFER_SECONDS


class CropsDropped(Exception):
    """The request's crops were dropped unscored: the model queue was full."""


class BatcherClosed(Exception):
    """The micro-batcher was closed before the request was scored."""


@dataclass(eq=False)
class _Request:
    crops: np.ndarray  # uint8 [n, S, S, 3]
    future: asyncio.Future[tuple[np.ndarray, np.ndarray]]
    arrival: float  # loop time
    p_fake: np.ndarray  # float32 [n], filled as batches finish
    embedding: np.ndarray  # float32 [n, D]
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


class MicroBatcher:
    """Pools crops from concurrent callers into engine calls of at most `cfg.max_batch`.

    Lifetime: `await start()` creates the worker thread and the batching task;
    `await close()` cancels the task, waits for the worker to go idle, shuts it down
    and fails whatever was still waiting with `BatcherClosed`. The engine is not
    closed: whoever opened it closes it, after the batcher.
    """

    def __init__(self, engine: Engine, cfg: BatcherConfig):
        self._engine = engine
        self._cfg = cfg
        self._queue: deque[_Request] = deque()
        self._pending = 0  # crops in `_queue` not yet handed to a batch
        self._in_flight: list[_Slice] = []  # the batch the engine is computing
        self._wakeup = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._members = 0  # streams that joined: each has at most one request open
        self._open_member_requests = 0  # their requests queued or in flight
        self._batch_started = 0.0  # loop time the in-flight batch went to the engine
        self._seconds_per_crop = 0.0  # moving average of the engine's time per crop, for free_at

    async def start(self) -> None:
        if self._task is not None or self._closed:
            raise RuntimeError("MicroBatcher can be started once")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamguard-infer")
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """crops uint8 [n, S, S, 3] -> (p_fake float32 [n], embedding float32 [n, D]) for these rows."""
        return await self.submit(crops)

    def join(self) -> None:
        """A stream joins: a caller with at most one `submit(..., member=True)` open at a time.

        While every member has a request open nobody else is about to submit, so a
        partial batch goes at once instead of waiting `max_wait_ms` for company (that
        wait was 8% of the engine's time with one stream and batches of two crops).
        """
        self._members += 1

    def leave(self) -> None:
        self._members -= 1
        self._wakeup.set()

    def submit(self, crops: np.ndarray, member: bool = False) -> asyncio.Future[tuple[np.ndarray, np.ndarray]]:
        """Queue `crops` now; the future resolves as `infer` returns (cancel it to withdraw them).

        For a caller that wants `free_at` to count its own crops before it awaits them;
        `member`: the caller has `join`ed.
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
        if member:
            self._open_member_requests += 1
            request.future.add_done_callback(self._member_request_done)
        self._queue.append(request)
        self._pending += n
        CROP_QUEUE_DEPTH.set(self._pending)
        self._wakeup.set()
        return request.future

    @property
    def seconds_per_crop(self) -> float:
        """The engine's recent time per crop (a moving average; 0 before the first batch)."""
        return self._seconds_per_crop

    def _member_request_done(self, _: asyncio.Future[tuple[np.ndarray, np.ndarray]]) -> None:
        self._open_member_requests -= 1

    def free_at(self) -> float:
        """Loop time by which the engine should have scored every crop queued or in flight now.

        An estimate from the recent seconds per crop; a stream uses it to take and detect
        its next frame just in time for the engine, neither too early (a stale frame)
        nor too late (an idle engine). Before the first batch it is simply now.
        """
        now = asyncio.get_running_loop().time()
        per_crop = self.seconds_per_crop
        busy_until = now
        if self._in_flight:
            busy_until = max(now, self._batch_started + per_crop * sum(s.stop - s.start for s in self._in_flight))
        return busy_until + per_crop * self._pending

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})  # finished, whether cancelled or not
        if self._executor is not None:
            # The single worker runs jobs in order: once this no-op ran, the engine is idle.
            await asyncio.get_running_loop().run_in_executor(self._executor, _idle)
            self._executor.shutdown()
            self._executor = None
        for request in [*self._queue, *(s.request for s in self._in_flight)]:
            if not request.future.done():
                request.future.set_exception(BatcherClosed("micro-batcher closed before these crops were scored"))
        self._queue.clear()
        self._in_flight = []
        self._pending = 0
        CROP_QUEUE_DEPTH.set(0)

    # --- the batching task ---------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_batch(loop)
            batch = self._take_batch()
            if batch:
                await self._run_batch(loop, batch)

    async def _wait_for_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Return once max_batch crops wait, every member has a request open, or the oldest waited max_wait_ms."""
        while True:
            self._discard_finished_head()
            if self._pending >= self._cfg.max_batch:
                return
            if self._pending and self._members and self._open_member_requests >= self._members:
                return
            timeout = None
            if self._queue:
                timeout = self._queue[0].arrival + self._cfg.max_wait_ms / 1000 - loop.time()
                if timeout <= 0:
                    return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Slice]:
        """Move up to max_batch waiting crops, oldest first, into a batch."""
        batch: list[_Slice] = []
        room = self._cfg.max_batch
        while room:
            self._discard_finished_head()
            if not self._queue:
                break
            request = self._queue[0]
            n = min(room, request.remaining)
            batch.append(_Slice(request, request.taken, request.taken + n))
            request.taken += n
            self._pending -= n
            room -= n
            if request.remaining == 0:
                self._queue.popleft()
        CROP_QUEUE_DEPTH.set(self._pending)
        return batch

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Slice]) -> None:
        crops = np.concatenate([s.request.crops[s.start : s.stop] for s in batch])  # [B, S, S, 3]
        self._in_flight = batch
        self._batch_started = loop.time()
        try:
            p_fake, embedding = await loop.run_in_executor(self._executor, self._timed_infer, crops)
        except Exception as err:  # the engine failed: only this batch's callers hear of it
            for s in batch:
                if not s.request.future.done():
                    s.request.future.set_exception(err)
            self._in_flight = []
            return
        self._in_flight = []
        row = 0
        for s in batch:
            request, n = s.request, s.stop - s.start
            request.p_fake[s.start : s.stop] = p_fake[row : row + n]
            request.embedding[s.start : s.stop] = embedding[row : row + n]
            request.scored += n
            row += n
            if request.scored == len(request.crops) and not request.future.done():
                request.future.set_result((request.p_fake, request.embedding))

    def _timed_infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Runs in the worker thread."""
        t0 = time.perf_counter()
        out = self._engine.infer(crops)
        seconds = time.perf_counter() - t0
        per_crop = seconds / len(crops)
        self._seconds_per_crop = per_crop if self._seconds_per_crop == 0 else 0.8 * self._seconds_per_crop + 0.2 * per_crop
        INFER_SECONDS.observe(seconds)
        BATCH_SIZE.observe(len(crops))
        return out

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


def _idle() -> None:
    """A no-op job for the worker thread (see MicroBatcher.close)."""
