import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.events import ModelInfo, parse_event
from streamguard.config import ScoringConfig
from streamguard.scoring.scorer import StreamScorer
from streamguard.scoring.lifecycle import AlertLifecycle
from streamguard.scoring.window import SlidingWindow
from streamguard.types import Face, Sample

CFG = ScoringConfig(threshold=0.5, hysteresis=0.1, window_s=4.0, min_samples=5, cooldown_s=10.0,
                    update_interval_s=2.0, update_min_delta=0.05)


def test_window_evicts_by_time_and_averages():
    w = SlidingWindow(4.0)
    assert w.score() is None
    for t, p in [(0.0, 1.0), (1.0, 0.0), (2.0, 1.0)]:
        w.add(t, p)
    assert len(w) == 3 and w.score() == pytest.approx(2 / 3)
    w.add(4.0, 0.0)  # evicts t=0 (4.0 - 4.0 is outside the window)
    assert len(w) == 3 and w.score() == pytest.approx(1 / 3)
    w.add(100.0, 0.9)
    assert len(w) == 1 and w.score() == pytest.approx(0.9)


def test_window_stretches_to_min_samples_up_to_its_limit():
    """Samples 1.5 s apart: a 4 s window holds 3, so it reaches back to hold 5, never past 10 s."""
    w = SlidingWindow(4.0, min_samples=5, max_window_s=10.0)
    for i in range(12):
        w.add(i * 1.5, float(i % 2))
    assert len(w) == 5 and w.span_s == pytest.approx(6.0)
    w.add(30.0, 1.0)  # 13.5 s after the last one: everything older than 10 s goes
    assert len(w) == 1 and w.span_s == 0.0
    for i in range(1, 8):
        w.add(30.0 + i * 3.0, 1.0)
    assert len(w) == 4 and w.span_s == pytest.approx(9.0)  # 5 samples would span 12 s > 10 s
    dense = SlidingWindow(4.0, min_samples=5, max_window_s=10.0)
    for i in range(40):
        dense.add(i * 0.2, 0.5)
    assert len(dense) == 20  # fast enough: plain 4 s window, stretching changes nothing


def test_window_limit_must_not_be_shorter_than_the_window():
    with pytest.raises(ValueError, match="max_window_s"):
        SlidingWindow(4.0, max_window_s=2.0)


@pytest.mark.parametrize("fps", [0.9, 0.45])
def test_a_fake_on_a_slowly_analysed_stream_still_alerts(fps):
    """Many streams on one model analyse each at 0.45-0.9 fps (docs/benchmarks.md): fewer
    than min_samples fit in window_s, so without stretching such a stream never alerts."""
    times = [i / fps for i in range(12)]
    scorer = StreamScorer("s", CFG, ModelInfo(name="m", digest="d", trained=True))
    events = [e for t in times if (e := scorer.add(_sample(t, 0.9)))]
    assert [e.type for e in events] == ["alert"] and events[0].samples == CFG.min_samples
    assert events[0].pts == pytest.approx(times[CFG.min_samples - 1])
    assert events[0].window_span_s == pytest.approx((CFG.min_samples - 1) / fps)  # beyond window_s: stretched
    rigid = CFG.model_copy(update={"window_max_s": CFG.window_s})
    scorer = StreamScorer("s", rigid, ModelInfo(name="m", digest="d", trained=True))
    assert not any(scorer.add(_sample(t, 0.9)) for t in times)


def run(lifecycle, scores, dt=0.2):
    """Feed window scores at 5 Hz with `samples` growing to the window's capacity."""
    out = []
    for i, s in enumerate(scores):
        v = lifecycle.step(i * dt, s, min(i + 1, 20))
        if v:
            out.append((i, v))
    return out


def test_needs_min_samples_before_alerting():
    verdicts = run(AlertLifecycle(CFG, CFG.threshold), [0.9] * 10)
    assert [v.type for _, v in verdicts] == ["alert"]
    assert verdicts[0][0] == CFG.min_samples - 1


def test_hysteresis_and_clear():
    scores = [0.9] * 6 + [0.45] * 5 + [0.39]
    verdicts = run(AlertLifecycle(CFG, CFG.threshold), scores)
    assert [v.type for _, v in verdicts] == ["alert", "clear"]
    assert verdicts[1][0] == len(scores) - 1  # 0.45 is inside the hysteresis band
    assert verdicts[0][1].alert_id == verdicts[1][1].alert_id


def test_cooldown_blocks_realert():
    lc = AlertLifecycle(CFG, CFG.threshold)
    assert lc.step(0.0, 0.9, 5).type == "alert"
    assert lc.step(1.0, 0.1, 5).type == "clear"
    assert lc.step(5.0, 0.9, 5) is None  # 4 s after clear < cooldown 10 s
    realert = lc.step(11.5, 0.9, 5)
    assert realert.type == "alert"


def test_updates_are_rate_limited_and_need_movement():
    lc = AlertLifecycle(CFG, CFG.threshold)
    assert lc.step(0.0, 0.60, 5).type == "alert"
    assert lc.step(1.0, 0.80, 5) is None  # moved but too soon
    assert lc.step(2.5, 0.61, 5) is None  # time passed but has not moved
    up = lc.step(3.0, 0.80, 5)
    assert up.type == "update" and up.score == 0.80


def test_end_clears_only_open_alerts():
    lc = AlertLifecycle(CFG, CFG.threshold)
    assert lc.end(0.0, "track_ended") is None
    lc.step(0.0, 0.9, 5)
    v = lc.end(1.0, "track_ended")
    assert v.type == "clear" and v.reason == "track_ended" and not lc.alerting


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=80))
def test_lifecycle_is_well_formed(scores):
    """Any score sequence gives alert (update*) clear ... with one id per episode and no
    alert below threshold or below min_samples."""
    lc = AlertLifecycle(CFG, CFG.threshold)
    open_id = None
    for i, s in enumerate(scores):
        samples = min(i + 1, 20)
        v = lc.step(i * 0.2, s, samples)
        if v is None:
            continue
        if v.type == "alert":
            assert open_id is None and s >= CFG.threshold and samples >= CFG.min_samples
            open_id = v.alert_id
        elif v.type == "update":
            assert v.alert_id == open_id
        else:
            assert v.alert_id == open_id and s < CFG.threshold - CFG.hysteresis
            open_id = None
    assert lc.alerting == (open_id is not None)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 19), st.floats(0.0, 1.0))
def test_one_bad_frame_never_alerts_a_real_face(bad_index, real_p):
    """A single P(fake)=1 frame among real frames (P <= 0.3) cannot raise an alert."""
    scorer = _scorer()
    ps = [min(real_p, 0.3)] * 20
    ps[bad_index] = 1.0
    events = [scorer.add(_sample(i * 0.2, p)) for i, p in enumerate(ps)]
    assert all(e is None for e in events)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 0.2), min_size=0, max_size=3), st.floats(0.7, 1.0))
def test_a_steady_fake_always_alerts(noise, p):
    """A face whose P(fake) stays >= 0.7 alerts within min_samples samples, even after
    a few low frames at the start."""
    scorer = _scorer()
    events = [scorer.add(_sample(i * 0.2, q)) for i, q in enumerate(noise + [p] * 20)]
    assert any(e is not None and e.type == "alert" for e in events)


def _scorer():
    return StreamScorer("s", CFG, ModelInfo(name="m", digest="d", trained=True))


def _sample(t, p, track=1):
    face = Face("s", track, np.array([10, 10, 50, 50], np.float32), np.array([0.1, 0.1, 0.5, 0.5], np.float32),
                0.9, np.zeros((224, 224, 3), np.uint8), t, 1000.0 + t)
    return Sample(face, p, np.zeros(8, np.float32))


def test_scorer_events_are_valid_and_clear_on_end():
    scorer = _scorer()
    events = [e for i in range(6) if (e := scorer.add(_sample(i * 0.2, 0.9)))]
    assert [e.type for e in events] == ["alert"]
    ev = parse_event(events[0].to_json())
    assert ev.schema_ == "streamguard.event.v1" and ev.track == 1 and ev.samples == 5
    assert ev.box == pytest.approx((0.1, 0.1, 0.5, 0.5)) and ev.pts == pytest.approx(0.8)
    cleared = scorer.end([1, 99])
    assert [(e.type, e.reason, e.id) for e in cleared] == [("clear", "track_ended", ev.id)]
    assert scorer.identities == []


def test_scorer_restarts_window_when_clock_goes_back():
    scorer = _scorer()
    for i in range(6):
        scorer.add(_sample(10 + i * 0.2, 0.9))
    # the source restarted: pts from 0 again; old samples must not count, and one low
    # sample is not enough to clear
    events = [scorer.add(_sample(i * 0.2, 0.1)) for i in range(5)]
    assert [e and e.type for e in events] == [None, None, None, None, "clear"]


# --- policies, duration, heartbeat, thresholds ---------------------------------

from streamguard.config import build_config  # noqa: E402
from streamguard.scoring.scorer import resolve_threshold  # noqa: E402
from streamguard.scoring.window import make_policy  # noqa: E402


def scored(policy_cfg: dict, samples: list[tuple[float, float]]) -> float:
    w = SlidingWindow(100.0, make_policy(ScoringConfig(**policy_cfg)))
    for t, p in samples:
        w.add(t, p)
    return w.score()


def test_policies_on_a_known_window():
    samples = [(0.0, 0.0), (1.0, 0.2), (2.0, 0.4), (3.0, 0.6), (4.0, 1.0)]
    assert scored({"policy": "mean"}, samples) == pytest.approx(0.44)
    assert scored({"policy": "trimmed_mean", "trim": 0.2}, samples) == pytest.approx(0.4)  # drops 0.0 and 1.0
    assert scored({"policy": "quantile", "quantile": 0.5}, samples) == pytest.approx(0.4)
    w = np.exp2(-np.array([4.0, 3, 2, 1, 0]) / 1.0)
    ema = (w * np.array([0.0, 0.2, 0.4, 0.6, 1.0])).sum() / w.sum()
    assert scored({"policy": "ema", "ema_half_life_s": 1.0}, samples) == pytest.approx(ema)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40),
       st.sampled_from(["mean", "trimmed_mean", "ema", "quantile"]))
def test_every_policy_stays_within_the_samples(ps, policy):
    score = scored({"policy": policy}, [(i * 0.2, p) for i, p in enumerate(ps)])
    assert min(ps) - 1e-9 <= score <= max(ps) + 1e-9


def test_trimmed_mean_ignores_a_burst_the_mean_does_not():
    burst = [(i * 0.2, 0.05) for i in range(18)] + [(3.6, 1.0), (3.8, 1.0)]
    assert scored({"policy": "mean"}, burst) > scored({"policy": "trimmed_mean", "trim": 0.2}, burst)


def test_min_alert_duration():
    cfg = CFG.model_copy(update={"min_alert_duration_s": 1.0})
    lc = AlertLifecycle(cfg, 0.5)
    assert lc.step(0.0, 0.9, 5) is None
    assert lc.step(0.6, 0.9, 5) is None
    assert lc.step(0.8, 0.3, 5) is None  # dipped: the clock restarts
    assert lc.step(1.4, 0.9, 5) is None
    assert lc.step(2.2, 0.9, 5) is None
    assert lc.step(2.4, 0.9, 5).type == "alert"


def test_heartbeat_update_without_movement():
    lc = AlertLifecycle(CFG.model_copy(update={"heartbeat_s": 5.0}), 0.5)
    lc.step(0.0, 0.8, 5)
    assert lc.step(4.9, 0.8, 5) is None
    beat = lc.step(5.0, 0.8, 5)
    assert (beat.type, beat.reason) == ("update", "heartbeat")


def test_threshold_precedence():
    assert resolve_threshold(ScoringConfig(threshold=0.7), 0.3) == (0.7, "config")
    assert resolve_threshold(ScoringConfig(), 0.3) == (0.3, "calibrated")
    assert resolve_threshold(ScoringConfig(), None) == (0.5, "default")
    scorer = StreamScorer("s", ScoringConfig(min_samples=1), ModelInfo(name="m", digest="d", trained=True), 0.3)
    event = scorer.add(_sample(0.0, 0.35))
    assert (event.type, event.threshold, event.threshold_source) == ("alert", 0.3, "calibrated")


def test_per_stream_overrides():
    cfg = build_config({"scoring": {"threshold": 0.6, "window_s": 8},
                        "streams": [{"name": "a", "url": "x"}, {"name": "b", "url": "y", "scoring": {"threshold": 0.9}}]})
    a, b = (cfg.scoring_for(s) for s in cfg.streams)
    assert (a.threshold, a.window_s) == (0.6, 8)
    assert (b.threshold, b.window_s) == (0.9, 8)


def test_scores_snapshot_lists_every_identity():
    scorer = _scorer()
    for i in range(6):
        scorer.add(_sample(i * 0.2, 0.9, track=1))
        scorer.add(_sample(i * 0.2, 0.1, track=2))
    snap = scorer.scores(ts=5.0)
    by_track = {s.track: s for s in snap.identities}
    assert by_track[1].score == pytest.approx(0.9) and by_track[1].alert_id is not None
    assert by_track[2].score == pytest.approx(0.1) and by_track[2].alert_id is None
    assert '"schema":"streamguard.scores.v1"' in snap.to_json()
