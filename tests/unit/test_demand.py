"""TakePacer (ingest/demand.py): when a stream takes its next frame, and what it tells ingest,
on a real LatestQueue and a forecast with given numbers (the pipeline tests run it on the real
micro-batcher)."""

from __future__ import annotations

import asyncio

import pytest

from streamguard.ingest.demand import LOOKAHEAD_MARGIN_S, TakePacer
from streamguard.ingest.latest import LatestQueue


class GivenForecast:
    """A `Forecast` with the numbers given: `sleep_until` sleeps until its time, or until `run_dry`."""

    def __init__(self, free_at: float, seconds_per_crop: float = 0.0) -> None:
        self.at = free_at
        self.seconds_per_crop = seconds_per_crop
        self._dry = asyncio.Event()

    def free_at(self) -> float:
        return self.at

    def run_dry(self) -> None:
        self._dry.set()

    async def sleep_until(self, at: float) -> None:
        timeout = at - asyncio.get_running_loop().time()
        if timeout > 0 and not self._dry.is_set():
            try:
                await asyncio.wait_for(self._dry.wait(), timeout)
            except TimeoutError:
                pass


def pacer_on(forecast: GivenForecast) -> tuple[TakePacer, LatestQueue[int]]:
    queue: LatestQueue[int] = LatestQueue(1)
    return TakePacer(queue, forecast), queue


async def test_a_take_is_announced_and_waits_until_its_detection_would_end_as_the_engine_frees_up():
    loop = asyncio.get_running_loop()
    free_at = loop.time() + 0.3
    pacer, queue = pacer_on(GivenForecast(free_at))
    pacer.detect_seconds = 0.1
    ready_by = pacer.ready_by()
    assert ready_by == free_at  # the batcher's forecast, nothing added
    take_at = free_at - 0.1 - LOOKAHEAD_MARGIN_S
    assert pacer.take_time(ready_by) == pytest.approx(take_at)
    await pacer.wait_to_take(ready_by)
    assert loop.time() >= take_at - 0.002  # not taken early (asyncio's timer may fire a hair before)
    assert queue.next_get_at == pytest.approx(take_at)  # announced for the take time, for DemandGate


async def test_a_take_woken_early_by_an_engine_that_ran_dry_is_announced_again_for_now():
    loop = asyncio.get_running_loop()
    forecast = GivenForecast(loop.time() + 30.0)  # a forecast far too late
    pacer, queue = pacer_on(forecast)
    waiting = asyncio.create_task(pacer.wait_to_take(pacer.ready_by()))
    await asyncio.sleep(0)  # it announced the take and sleeps on it
    assert queue.next_get_at == pytest.approx(forecast.at - LOOKAHEAD_MARGIN_S)
    forecast.run_dry()
    await asyncio.wait_for(waiting, 1.0)
    assert queue.next_get_at is not None and queue.next_get_at <= loop.time()  # ingest must not skip the frames before now


async def test_the_detection_time_is_a_moving_average_of_the_runs_of_the_detector():
    loop = asyncio.get_running_loop()
    pacer, _ = pacer_on(GivenForecast(loop.time()))
    started = loop.time()
    pacer.took()
    await asyncio.sleep(0.1)  # the detector's run
    pacer.detected()
    first = loop.time() - started
    assert 0.2 * 0.1 <= pacer.detect_seconds <= 0.2 * first
    before = pacer.detect_seconds
    pacer.took()  # a tracked-only frame: the detector did not run, nothing is learnt
    assert pacer.detect_seconds == before
    started = loop.time()
    pacer.took()
    await asyncio.sleep(0.1)
    pacer.detected()
    second = loop.time() - started
    assert 0.8 * before + 0.2 * 0.1 <= pacer.detect_seconds <= 0.8 * before + 0.2 * second


async def test_right_after_a_take_ingest_hears_when_the_next_comes_behind_every_crop_queued_and_its_own():
    loop = asyncio.get_running_loop()
    forecast = GivenForecast(loop.time() + 2.0, seconds_per_crop=0.05)
    pacer, queue = pacer_on(forecast)
    pacer.detect_seconds = 0.1
    pacer.note_crops(3)
    queue.announce_get(loop.time())
    await queue.put(1)
    await queue.get()  # an announced take: the queue counts the pace from it
    pacer.took()
    assert queue.next_get_at == pytest.approx(forecast.at + 3 * 0.05 - 0.1 - LOOKAHEAD_MARGIN_S)
    assert queue.announced_interval is None  # an estimate: it does not count towards the pace DemandGate reads


async def test_without_a_forecast_nothing_is_expected_after_a_take():
    pacer, queue = pacer_on(GivenForecast(asyncio.get_running_loop().time() + 2.0, seconds_per_crop=0.0))
    pacer.took()  # no warm-up and no batch timed yet: no time per crop
    assert queue.next_get_at is None
