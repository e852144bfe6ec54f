"""The per-packet policies of ingest/pacing.py, on synthetic timelines: no server, no decoder, no loop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamguard.ingest.pacing import DemandGate, FpsSampler, LagGuard, RateMeter, RealtimePacer, backoff_delay


# --- FpsSampler -----------------------------------------------------------------------


def kept(times: list[float], fps: float) -> list[float]:
    sampler = FpsSampler(fps)
    return [t for t in times if sampler.keep(t)]


@pytest.mark.parametrize("source_fps", [24, 25, 30, 29.97, 60])
def test_sampler_keeps_the_analysis_rate(source_fps):
    times = [i / source_fps for i in range(int(source_fps * 20))]  # 20 s
    out = kept(times, 5.0)
    assert len(out) in (100, 101)
    assert out[0] == 0.0
    assert max(np.diff(out)) < 0.2 + 1.5 / source_fps


def test_sampler_keeps_everything_from_a_slower_source():
    times = [i / 4 for i in range(20)]
    assert kept(times, 5.0) == times


def test_sampler_survives_timestamp_jumps_and_resets():
    before = [i / 25 for i in range(50)]  # 0 .. 1.96 s
    jumped = [1000 + i / 25 for i in range(50)]  # forward jump
    reset = [i / 25 for i in range(50)]  # a restarted stream starts at 0 again
    out = kept(before + jumped + reset, 5.0)
    assert out[10] == 1000.0 and out[20] == 0.0
    assert len(out) == 30


# --- DemandGate -----------------------------------------------------------------------


def test_demand_gate_decodes_only_keyframes_while_the_consumer_is_slow():
    gate = DemandGate(keyframes_only_beyond=2.0)
    packets = [(k / 25, k % 25 == 0) for k in range(25 * 8)]  # 8 s of 25 fps, a keyframe every second

    def skipped(seconds: range, consumer_interval: float | None) -> list[bool]:
        # No prediction of the next take: only the consumer's pace decides.
        return [gate.skip(t, t, key, None, consumer_interval) for t, key in packets if int(t) in seconds]

    assert not any(skipped(range(0, 2), None))  # the consumer's pace is unknown yet
    assert not any(skipped(range(2, 3), 1.9))  # under twice the keyframe interval: decode all
    slow = skipped(range(3, 5), 2.5)
    assert slow == [t % 1 != 0 for t, _ in packets[75:125]]  # keyframes only, from the first keyframe on
    assert skipped(range(5, 6), 1.7)[1:] == [True] * 24  # inside the 1.5-2 band: stays (hysteresis)
    assert not any(skipped(range(6, 7), 1.4))  # it caught up: everything again, from the keyframe on
    gate.skip(100.0, 100.0, False, None, 9.0)  # no keyframe, no change of mind
    assert not gate.keyframes_only


def replay(
    gate: DemandGate, takes: list[float], seconds: float, announced: list[float | None] | None = None, fps: int = 25, gop: int = 25
) -> tuple[list[float], list[float]]:
    """Packets of a live stream through `gate` while a consumer takes the newest decoded frame at `takes`,
    each announced (as the pipeline's look-ahead does) right after the take before it, as `announced`
    (default: the take itself; None: not announced): (age of each frame taken, times of the frames decoded)."""
    announced = announced or list(takes)
    decoded_at: list[float] = []
    ages: list[float] = []
    i, next_get = 0, None
    for k in range(int(seconds * fps)):
        t = k / fps
        while i < len(takes) and takes[i] < t:  # takes due before this packet arrives
            ages.append(takes[i] - decoded_at[-1])
            i += 1
            next_get = announced[i] if i < len(takes) else None
        interval = None if i < 2 else takes[i - 1] - takes[i - 2]
        if not gate.skip(t, t, k % gop == 0, next_get, interval):
            decoded_at.append(t)
    return ages, decoded_at


@pytest.mark.parametrize(("interval", "most_decoded"), [(0.3, 0.95), (0.7, 0.8), (1.0, 0.5), (1.4, 0.55), (1.9, 0.55)])
def test_demand_gate_gives_the_consumer_the_newest_frame_and_leaves_group_tails_undecoded(interval, most_decoded):
    # Keyframes every second; a consumer under the keyframes-only pace (2 s here) taking a frame every `interval`.
    takes = [0.31 + interval * i for i in range(int(19.0 / interval))]
    ages, decoded = replay(DemandGate(keyframes_only_beyond=2.0), takes, seconds=20.0)
    assert max(ages) < 0.045  # every frame taken is the newest of the stream: nothing it needed was skipped
    assert len(decoded) < most_decoded * 20 * 25  # the rest of a group after its last take is not decoded (all was before)
    for group in range(2, int(takes[-1])):  # a group the next take falls after is not decoded at all, keyframe included
        next_take = min(t for t in takes if t >= group)
        if next_take > group + 1 + DemandGate.MARGIN_S:
            assert not any(group <= t < group + 1 for t in decoded)


def test_demand_gate_decodes_only_the_keyframe_before_each_announced_take_while_the_consumer_is_slow():
    takes = [0.31 + 2.5 * i for i in range(15)]
    announced_ages, announced_decoded = replay(DemandGate(), takes, seconds=38.0)
    ages, decoded = replay(DemandGate(), takes, seconds=38.0, announced=[None] * len(takes))
    assert max(announced_ages) < 1.0 and max(ages) < 1.0  # at most one group old either way
    assert len(decoded) - len(announced_decoded) >= 18  # of the keyframes of 38 s, those no take needs are not decoded


def test_demand_gate_switches_to_keyframes_at_the_configured_spacing_of_takes():
    takes = [0.31 + 1.4 * i for i in range(13)]  # 1.4 keyframe intervals apart
    fresh_ages, fresh = replay(DemandGate(keyframes_only_beyond=2.0), takes, seconds=20.0)
    ages, decoded = replay(DemandGate(), takes, seconds=20.0)  # the default: beyond one interval
    assert max(fresh_ages) < 0.045 and 0.045 < max(ages) < 1.0  # then a frame is up to one group old
    assert len(decoded) < 0.3 * len(fresh)


def test_demand_gate_a_take_earlier_than_announced_gets_a_frame_at_most_one_group_old():
    takes = [0.31 + 1.4 * i for i in range(11)] + [14.9]
    announced = takes[:-1] + [15.71]  # the last comes 0.81 s before it was announced
    ages, _ = replay(DemandGate(keyframes_only_beyond=2.0), takes, seconds=16.0, announced=announced)
    assert max(ages[:-1]) < 0.045 and 0.045 < ages[-1] < 1.0


# --- backoff_delay --------------------------------------------------------------------


def test_backoff_grows_with_jitter_up_to_the_cap():
    for attempt, nominal in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0)]:
        delays = [backoff_delay(attempt, 0.5, 30.0) for _ in range(200)]
        assert all(nominal * 0.5 <= d <= nominal for d in delays)
        assert max(delays) - min(delays) > nominal * 0.2  # jittered


# --- LagGuard ---------------------------------------------------------------------------


def simulate(decode_s: float, seconds: float, clock: float = 1.0, fps: int = 25, gop: int = 25) -> tuple[list[float], int]:
    """A live source sending `fps` frames a second (its clock runs `clock` x ours) read by a
    decoder taking `decode_s` a frame: (latency of each decoded frame, packets skipped)."""
    guard = LagGuard(max_lag_s=1.0)
    now, latency, skipped = 0.0, [], 0
    for i in range(int(seconds * fps)):
        t = i / fps
        arrival = t * clock
        waited = arrival > now  # the read blocked until the packet arrived
        now = max(now, arrival)
        if guard.skip(t, now, i % gop == 0, waited):
            skipped += 1
            now += 0.0005  # reading without decoding is cheap
            continue
        now += decode_s
        latency.append(now - arrival)
    return latency, skipped


def test_lag_guard_never_skips_when_decoding_keeps_up():
    latency, skipped = simulate(decode_s=0.03, seconds=600)
    assert skipped == 0 and max(latency) < 0.031


def test_lag_guard_bounds_latency_when_decoding_falls_behind():
    latency, skipped = simulate(decode_s=0.06, seconds=600)  # 1.5x slower than real time
    assert 0.2 < skipped / (600 * 25) < 0.5  # about a third skipped, undecoded
    assert max(latency) < 1.0 + 1.0 + 0.06  # max_lag_s + one GOP + a frame
    assert max(latency[-1000:]) <= max(latency[:1000]) + 0.06  # not growing with time


def test_lag_guard_ignores_clock_drift():
    # A source clock 0.1% slower than ours for an hour: the lag it adds is not a backlog.
    latency, skipped = simulate(decode_s=0.02, seconds=3600, clock=1.001)
    assert skipped == 0 and max(latency) < 0.021


def test_lag_guard_restarts_with_the_timeline():
    guard = LagGuard(max_lag_s=1.0)
    # 100 s of a stream read without waiting (a fast decoder on a burst), then the source restarts at 0.
    assert not any(guard.skip(i / 25, i / 25, i % 25 == 0, waited=False) for i in range(2500))
    assert not any(guard.skip(i / 25, 100 + i / 25, i % 25 == 0, waited=False) for i in range(250))


# --- RealtimePacer ----------------------------------------------------------------------


def test_realtime_pacer_holds_each_frame_until_its_timestamp_is_due():
    pacer = RealtimePacer(threading.Event())
    start = time.monotonic()
    pacer.wait(10.0)  # the first frame sets the origin: due at once, whatever its timestamp
    assert time.monotonic() - start < 0.05
    pacer.wait(10.3)
    assert 0.29 <= time.monotonic() - start < 1.0  # 0.3 s of stream time later
    held = time.monotonic()
    pacer.wait(10.1)  # already due: no wait
    assert time.monotonic() - held < 0.05


def test_realtime_pacer_starts_over_when_the_timestamps_go_back():
    pacer = RealtimePacer(threading.Event())
    pacer.wait(5.0)
    start = time.monotonic()
    pacer.wait(0.0)  # a restarted file: a new origin, not a frame 5 s early
    pacer.wait(0.2)
    assert 0.19 <= time.monotonic() - start < 1.0


def test_realtime_pacer_returns_at_once_when_stopped():
    stop = threading.Event()
    pacer = RealtimePacer(stop)
    pacer.wait(0.0)
    stop.set()
    start = time.monotonic()
    pacer.wait(3600.0)
    assert time.monotonic() - start < 0.5


# --- RateMeter --------------------------------------------------------------------------


def test_rate_meter_measures_the_rate_over_its_last_full_window():
    meter = RateMeter(window_s=1.0)
    assert meter.rate(0.0) == 0.0  # nothing yet
    for k in range(20):  # 25 fps for 0.76 s: no window complete yet
        meter.tick(k * 0.04)
    assert meter.rate(0.8) == 0.0
    for k in range(20, 76):  # up to 3 s
        meter.tick(k * 0.04)
    assert meter.rate(3.0) == pytest.approx(25.0, rel=0.05)
    for k in range(31):  # then 10 fps for 3 s
        meter.tick(3.0 + k * 0.1)
    assert meter.rate(6.0) == pytest.approx(10.0, rel=0.05)


def test_rate_meter_reads_zero_once_frames_stop_for_two_windows():
    meter = RateMeter(window_s=1.0)
    for k in range(51):
        meter.tick(k * 0.04)  # 25 fps for 2 s
    assert meter.rate(2.0 + 1.9) == pytest.approx(25.0, rel=0.05)  # a gap under two windows: the last measure
    assert meter.rate(2.0 + 2.1) == 0.0
