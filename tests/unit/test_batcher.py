"""The micro-batcher, driven with the real tiny torch engine behind a recording wrapper."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from streamguard.config import BatcherConfig
from streamguard import metrics
from streamguard.inference import BatcherClosed, CropsDropped, Engine, EngineFailed, MicroBatcher
from streamguard.inference.registry import warm_up
from streamguard.inference.torch_engine import TorchEngine
from streamguard.metrics import REGISTRY
from streamguard.model import untrained_model

SIZE = 32
TIMEOUT = 10.0  # generous: every wait below ends on an event long before this


class RecordingEngine(Engine):
    """Passes calls to a real engine, recording batch sizes; optionally held at a gate
    (every batch, or with `hold` those holding a crop whose first pixel is `hold`), and
    failing any batch that holds a crop whose first pixel is `poison`."""

    def __init__(
        self, inner: TorchEngine, gated: bool = False, poison: int | None = None, concurrency: int = 1,
        hold: int | None = None,
    ):
        self.inner = inner
        self.meta, self.embed_dim, self.input_size = inner.meta, inner.embed_dim, inner.input_size
        self.concurrency = concurrency
        self.batch_sizes: list[int] = []
        self.entered = threading.Event()  # set when a call starts
        self.calls = threading.Semaphore(0)  # released once per call started
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.poison = poison
        self.hold = hold

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batch_sizes.append(len(crops))
        self.entered.set()
        self.calls.release()
        held = self.hold is None or (crops[:, 0, 0, 0] == self.hold).any()
        if held and not self.gate.wait(TIMEOUT):
            raise TimeoutError("test gate never opened")
        if self.poison is not None and (crops[:, 0, 0, 0] == self.poison).any():
            raise RuntimeError("poisoned batch")
        return self.inner.infer(crops)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def torch_engine() -> TorchEngine:
    return TorchEngine(untrained_model("tiny", img_size=SIZE))


def make_crops(n: int, seed: int, first_pixel: int | None = None) -> np.ndarray:
    crops = np.random.default_rng(seed).integers(0, 250, size=(n, SIZE, SIZE, 3), dtype=np.uint8)
    if first_pixel is not None:
        crops[:, 0, 0, 0] = first_pixel
    return crops


async def started(engine, **cfg) -> MicroBatcher:
    batcher = MicroBatcher(engine, BatcherConfig(**cfg))
    await batcher.start()
    return batcher


def dropped_total() -> float:
    return REGISTRY.get_sample_value("streamguard_crops_dropped_total") or 0.0


async def test_concurrent_callers_get_their_own_rows(torch_engine):
    engine = RecordingEngine(torch_engine)
    batcher = await started(engine, max_batch=4, max_wait_ms=50)
    requests = [make_crops(n, seed) for seed, n in enumerate([1, 3, 2, 3, 1, 4, 2])]
    try:
        results = await asyncio.wait_for(asyncio.gather(*(batcher.infer(c) for c in requests)), TIMEOUT)
    finally:
        await batcher.close()
    for crops, (p_fake, embedding) in zip(requests, results):
        ref_p, ref_e = torch_engine.infer(crops)
        np.testing.assert_allclose(p_fake, ref_p, atol=1e-5)
        np.testing.assert_allclose(embedding, ref_e, atol=1e-4)
    assert max(engine.batch_sizes) <= 4  # requests of 3 and 4 crops were split to respect it
    assert sum(engine.batch_sizes) == 16
    assert len(engine.batch_sizes) == 4  # and the batches were full


async def test_full_batch_goes_without_waiting(torch_engine):
    engine = RecordingEngine(torch_engine)
    batcher = await started(engine, max_batch=4, max_wait_ms=5000)
    try:
        # Would take 5 s (and time out) if the batcher waited for max_wait with a full batch.
        await asyncio.wait_for(asyncio.gather(batcher.infer(make_crops(2, 0)), batcher.infer(make_crops(2, 1))), 2.0)
    finally:
        await batcher.close()
    assert engine.batch_sizes == [4]


async def test_partial_batch_waits_max_wait_then_goes(torch_engine):
    engine = RecordingEngine(torch_engine)
    batcher = await started(engine, max_batch=8, max_wait_ms=200)
    loop = asyncio.get_running_loop()
    try:
        t0 = loop.time()
        await asyncio.wait_for(batcher.infer(make_crops(1, 0)), TIMEOUT)
        elapsed = loop.time() - t0
    finally:
        await batcher.close()
    assert engine.batch_sizes == [1]
    assert elapsed >= 0.195  # it waited for company ...
    assert elapsed < 0.2 + 2.0  # ... then went alone, without a full batch


async def test_overflow_drops_the_oldest_request(torch_engine):
    engine = RecordingEngine(torch_engine, gated=True)
    batcher = await started(engine, max_batch=2, max_wait_ms=0, queue_size=4)
    before = dropped_total()
    try:
        in_flight = asyncio.create_task(batcher.infer(make_crops(2, 0)))
        assert await asyncio.to_thread(engine.entered.wait, TIMEOUT)  # the engine holds it
        oldest = asyncio.create_task(batcher.infer(make_crops(2, 1)))
        middle = asyncio.create_task(batcher.infer(make_crops(2, 2)))
        await asyncio.sleep(0)  # let both enqueue: the queue (4 crops) is now full
        assert REGISTRY.get_sample_value("streamguard_crop_queue_depth") == 4
        newest = asyncio.create_task(batcher.infer(make_crops(2, 3)))
        with pytest.raises(CropsDropped, match="model queue"):
            await asyncio.wait_for(oldest, TIMEOUT)
        assert dropped_total() - before == 2
        engine.gate.set()
        results = await asyncio.wait_for(asyncio.gather(in_flight, middle, newest), TIMEOUT)
    finally:
        engine.gate.set()
        await batcher.close()
    assert [len(p) for p, _ in results] == [2, 2, 2]
    assert engine.batch_sizes == [2, 2, 2]


async def test_request_larger_than_the_queue_is_dropped(torch_engine):
    batcher = await started(RecordingEngine(torch_engine), queue_size=3)
    before = dropped_total()
    try:
        with pytest.raises(CropsDropped):
            await batcher.infer(make_crops(4, 0))
    finally:
        await batcher.close()
    assert dropped_total() - before == 4


async def test_engine_error_fails_only_that_batch(torch_engine):
    engine = RecordingEngine(torch_engine, poison=255)
    batcher = await started(engine, max_batch=2, max_wait_ms=0)
    try:
        good_before = asyncio.create_task(batcher.infer(make_crops(2, 0)))
        bad = asyncio.create_task(batcher.infer(make_crops(2, 1, first_pixel=255)))
        good_after = asyncio.create_task(batcher.infer(make_crops(2, 2)))
        failures = metrics.ENGINE_FAILURES._value.get()
        with pytest.raises(EngineFailed, match="the engine failed on a batch of 2 crops: RuntimeError..poisoned batch") as failed:
            await asyncio.wait_for(bad, TIMEOUT)
        assert isinstance(failed.value.__cause__, RuntimeError) and metrics.ENGINE_FAILURES._value.get() == failures + 1
        for task in (good_before, good_after):
            p_fake, _ = await asyncio.wait_for(task, TIMEOUT)
            assert p_fake.shape == (2,)
        # The batcher keeps serving after the failure.
        p_fake, _ = await asyncio.wait_for(batcher.infer(make_crops(1, 3)), TIMEOUT)
        assert p_fake.shape == (1,)
    finally:
        await batcher.close()
    assert engine.batch_sizes == [2, 2, 2, 1]


async def test_close_fails_pending_requests_and_stops_the_worker(torch_engine):
    engine = RecordingEngine(torch_engine, gated=True)
    batcher = await started(engine, max_batch=2, max_wait_ms=0)
    in_flight = asyncio.create_task(batcher.infer(make_crops(2, 0)))
    assert await asyncio.to_thread(engine.entered.wait, TIMEOUT)
    waiting = asyncio.create_task(batcher.infer(make_crops(2, 1)))
    await asyncio.sleep(0)
    closing = asyncio.create_task(batcher.close())
    engine.gate.set()  # close() waits for the engine call in flight to end
    await asyncio.wait_for(closing, TIMEOUT)
    for task in (in_flight, waiting):
        with pytest.raises(BatcherClosed):
            await task
    with pytest.raises(BatcherClosed):
        await batcher.infer(make_crops(1, 2))
    await batcher.close()  # a second close is harmless
    assert not any(t.name.startswith("streamguard-infer") for t in threading.enumerate())


async def test_rejects_bad_crops_before_queueing(torch_engine):
    batcher = await started(RecordingEngine(torch_engine))
    try:
        with pytest.raises(ValueError, match="must be uint8"):
            await batcher.infer(make_crops(1, 0).astype(np.float32))
    finally:
        await batcher.close()


async def test_free_at_estimates_when_the_engine_has_scored_everything_queued(torch_engine):
    engine = RecordingEngine(torch_engine, gated=True)
    batcher = await started(engine, max_batch=2, max_wait_ms=0)
    loop = asyncio.get_running_loop()
    try:
        assert batcher.free_at() == pytest.approx(loop.time(), abs=0.05)  # idle, nothing learnt yet
        loop.call_later(0.2, engine.gate.set)  # the first batch of 2 takes >= 0.2 s
        await asyncio.wait_for(batcher.infer(make_crops(2, 0)), TIMEOUT)
        per_crop = batcher.seconds_per_crop
        assert per_crop >= 0.1
        engine.gate.clear()
        engine.entered.clear()
        first = batcher.submit(make_crops(2, 1))
        assert await asyncio.to_thread(engine.entered.wait, TIMEOUT)  # in flight, held
        held = batcher.free_at()
        queued = batcher.submit(make_crops(3, 2))  # waits behind it
        assert batcher.free_at() - held == pytest.approx(3 * per_crop, abs=0.01)
        assert held >= loop.time() + per_crop  # most of the held batch's 2 crops are still to come
        engine.gate.set()
        await asyncio.wait_for(asyncio.gather(first, queued), TIMEOUT)
    finally:
        await batcher.close()


async def test_the_first_forecast_comes_from_the_warm_up_and_one_slow_call_does_not_throw_it_off(torch_engine):
    engine = RecordingEngine(torch_engine)
    warm_up(engine)
    engine.gate.clear()  # from now on every batch waits for the test
    engine.entered.clear()
    warm = engine.warm_seconds_per_crop
    assert warm > 0
    batcher = await started(engine, max_batch=4, max_wait_ms=0)
    loop = asyncio.get_running_loop()
    try:
        first = batcher.submit(make_crops(4, 0))
        assert await asyncio.to_thread(engine.entered.wait, TIMEOUT)  # in flight, held: no batch timed yet
        assert batcher.free_at() == pytest.approx(loop.time() + 4 * warm, abs=0.05)  # a forecast from the start
        loop.call_later(0.5, engine.gate.set)  # this first call is slow (>= 0.5 s for 4 crops)
        await asyncio.wait_for(first, TIMEOUT)
        for seed in range(1, 4):  # three more at the engine's own pace
            await asyncio.wait_for(batcher.infer(make_crops(4, seed)), TIMEOUT)
        assert batcher.seconds_per_crop < 0.1  # the median of the latest calls: the slow one is outvoted
    finally:
        await batcher.close()


async def test_sleep_until_ends_when_the_engine_runs_dry_or_at_the_time_given(torch_engine):
    engine = RecordingEngine(torch_engine, gated=True)
    batcher = await started(engine, max_batch=4, max_wait_ms=0)
    loop = asyncio.get_running_loop()
    try:
        assert batcher.dry
        await asyncio.wait_for(batcher.sleep_until(loop.time() + 60), 1)  # nothing to compute: no sleep at all
        scoring = batcher.submit(make_crops(2, 0))
        assert not batcher.dry
        start = loop.time()
        await asyncio.wait_for(batcher.sleep_until(start + 0.3), TIMEOUT)  # held batch: sleeps to the time given
        assert loop.time() - start >= 0.29 and not batcher.dry
        sleeper = asyncio.create_task(batcher.sleep_until(loop.time() + 60))
        await asyncio.sleep(0)
        assert not sleeper.done()
        engine.gate.set()  # the batch ends and nothing else waits: the sleeper wakes long before 60 s
        await asyncio.wait_for(asyncio.gather(scoring, sleeper), TIMEOUT)
        assert batcher.dry
    finally:
        await batcher.close()


async def test_a_partial_batch_goes_at_once_when_every_member_stream_has_submitted(torch_engine):
    engine = RecordingEngine(torch_engine)
    batcher = await started(engine, max_batch=16, max_wait_ms=5000)  # waiting for company would time out
    try:
        one = batcher.join()
        await asyncio.wait_for(batcher.submit(make_crops(2, 0), member=one), 2.0)  # the only member: no wait
        two = batcher.join()
        first = batcher.submit(make_crops(2, 1), member=one)  # must wait: the other member is still to come
        # A negative can only be watched for a while: 0.2 s is ample for a batcher that went early.
        await asyncio.sleep(0.2)
        assert len(engine.batch_sizes) == 1 and not first.done()
        second = batcher.submit(make_crops(3, 2), member=two)
        await asyncio.wait_for(asyncio.gather(first, second), 2.0)
        assert engine.batch_sizes == [2, 5]  # both members' crops in one batch, without the 5 s wait
        batcher.leave(one)
        batcher.leave(two)
    finally:
        await batcher.close()


async def call_started(engine: RecordingEngine) -> None:
    assert await asyncio.to_thread(engine.calls.acquire, True, TIMEOUT), "no engine call started"


async def test_with_two_workers_what_waits_is_shared_and_computed_at_once(torch_engine):
    engine = RecordingEngine(torch_engine, gated=True, concurrency=2)
    batcher = await started(engine, max_batch=16, max_wait_ms=0)
    try:
        assert batcher.workers == 2
        crops = make_crops(3, 0)
        first = batcher.submit(crops)
        await call_started(engine)
        await call_started(engine)  # the second call starts while the first is held at the gate
        assert sorted(engine.batch_sizes) == [1, 2]  # three crops, both workers free: shared out
        later = batcher.submit(make_crops(2, 1))  # both workers busy: it waits for one
        engine.gate.set()
        (p_fake, embedding), _ = await asyncio.wait_for(asyncio.gather(first, later), TIMEOUT)
        expected_p, expected_e = torch_engine.infer(crops)
        np.testing.assert_allclose(p_fake, expected_p, atol=1e-5)  # its own rows, in order, across two batches
        np.testing.assert_allclose(embedding, expected_e, atol=1e-5)
        assert sum(engine.batch_sizes[2:]) == 2
    finally:
        await batcher.close()


async def test_with_two_workers_free_at_shares_the_queued_work(torch_engine):
    engine = RecordingEngine(torch_engine, gated=True, concurrency=2)
    batcher = await started(engine, max_batch=2, max_wait_ms=0)
    loop = asyncio.get_running_loop()
    try:
        loop.call_later(0.2, engine.gate.set)
        await asyncio.wait_for(batcher.infer(make_crops(2, 0)), TIMEOUT)  # shared out: one crop per worker
        await call_started(engine)
        await call_started(engine)
        per_crop = batcher.seconds_per_crop
        assert engine.batch_sizes == [1, 1] and per_crop >= 0.1
        engine.gate.clear()
        held = [batcher.submit(make_crops(4, 1))]
        await call_started(engine)
        await call_started(engine)
        assert engine.batch_sizes[2:] == [2, 2]  # both workers hold a batch of two
        before = batcher.free_at()
        assert before >= loop.time() + per_crop  # most of each held batch is still to come
        queued = batcher.submit(make_crops(4, 3))
        assert batcher.free_at() - before == pytest.approx(4 * per_crop / 2, abs=0.01)  # two workers share it
        engine.gate.set()
        await asyncio.wait_for(asyncio.gather(*held, queued), TIMEOUT)
    finally:
        await batcher.close()


async def test_close_with_two_batches_in_flight_fails_both_and_stops_every_worker(torch_engine):
    engine = RecordingEngine(torch_engine, gated=True, concurrency=2)
    batcher = await started(engine, max_batch=2, max_wait_ms=0)
    requests = [batcher.submit(make_crops(2, i)) for i in range(3)]
    await call_started(engine)
    await call_started(engine)
    closing = asyncio.create_task(batcher.close())
    engine.gate.set()  # close() waits for both engine calls to end
    await asyncio.wait_for(closing, TIMEOUT)
    for request in requests:
        with pytest.raises(BatcherClosed):
            await request
    assert not any(t.name.startswith("streamguard-infer") for t in threading.enumerate())


async def test_with_two_workers_no_stream_laps_one_whose_batch_is_still_computing(torch_engine):
    engine = RecordingEngine(torch_engine, gated=True, hold=7, concurrency=2)  # only the slow stream's batch waits
    batcher = await started(engine, max_batch=16, max_wait_ms=0)
    slow, quick = batcher.join(), batcher.join()
    try:
        held = batcher.submit(make_crops(1, 0, first_pixel=7), member=slow)  # one crop: one worker
        await call_started(engine)
        for seed in (1, 2):  # rounds 1 and 2 of the quick stream: at most one round ahead of slow's
            await asyncio.wait_for(batcher.submit(make_crops(2, seed), member=quick), TIMEOUT)
        ahead = batcher.submit(make_crops(2, 3), member=quick)  # round 3: waits for slow's batch
        # A negative can only be watched for a while: 0.2 s is ample for a batcher that went early.
        await asyncio.sleep(0.2)
        assert not ahead.done() and engine.batch_sizes == [1, 2, 2]
        engine.gate.set()
        await asyncio.wait_for(asyncio.gather(held, ahead), TIMEOUT)
        assert sum(engine.batch_sizes[3:]) == 2
    finally:
        batcher.leave(slow)
        batcher.leave(quick)
        await batcher.close()


async def test_a_stream_that_ran_slow_stays_behind_and_one_that_sat_out_comes_back_level(torch_engine):
    engine = RecordingEngine(torch_engine, gated=True, hold=7, concurrency=2)  # batches with pixel 7 wait
    batcher = await started(engine, max_batch=16, max_wait_ms=0)
    slow, quick, idle = batcher.join(), batcher.join(), batcher.join()
    try:
        first = batcher.submit(make_crops(1, 0, first_pixel=7), member=slow)  # round 1, held
        await call_started(engine)
        for seed in (1, 2):  # quick's rounds 1 and 2
            await asyncio.wait_for(batcher.submit(make_crops(2, seed), member=quick), TIMEOUT)
        engine.gate.set()
        await asyncio.wait_for(first, TIMEOUT)
        engine.gate.clear()
        while engine.calls.acquire(blocking=False):  # forget the calls so far
            pass
        third = batcher.submit(make_crops(1, 3, first_pixel=7), member=quick)  # round 3, held on one worker
        await call_started(engine)
        second = batcher.submit(make_crops(1, 4), member=slow)
        assert slow.requests == 2  # still behind: being slow is not sitting out
        batcher.sit_out(idle)  # a stream that had no faces until now
        returning = batcher.submit(make_crops(2, 5), member=idle)
        assert idle.requests == 2  # level with the lowest open round, not behind everyone
        done = await asyncio.wait_for(asyncio.gather(second, returning), TIMEOUT)  # neither waits for quick's
        assert [len(p) for p, _ in done] == [1, 2] and not third.done()
        engine.gate.set()
        await asyncio.wait_for(third, TIMEOUT)
    finally:
        for member in (slow, quick, idle):
            batcher.leave(member)
        await batcher.close()
