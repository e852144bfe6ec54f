import numpy as np
import pytest

from streamguard import samples
from streamguard.config import TrackerConfig
from streamguard.faces import kalman
from lab.mot import MotAccumulator
from streamguard.faces.tracker import FaceTracker, assign, iou_matrix
from streamguard.types import Detection

DIAGONAL = float(np.hypot(1280, 720))


def _det(box, score: float = 0.9) -> Detection:
    return Detection(box=np.asarray(box, dtype=np.float32), score=score)


def _box(cx: float, cy: float, side: float = 100.0) -> list[float]:
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def _ids(step) -> list[int]:
    return [tb.id for tb in step.tracks]


def _embedding(seed: int, noise: float = 0.0, noise_seed: int = 0) -> np.ndarray:
    """A 64-d 'identity' vector, optionally perturbed (another view of the same face)."""
    e = np.random.default_rng(seed).normal(size=64)
    return (e + noise * np.random.default_rng(1000 + noise_seed).normal(size=64)).astype(np.float32)


def _reid(tracker: FaceTracker, step, embeddings: list[np.ndarray]) -> list[int]:
    """What the pipeline does after the model ran: final ids of the step's faces."""
    ids = _ids(step)
    boxes = np.array([tb.box for tb in step.tracks], dtype=np.float32).reshape(-1, 4)
    merged = tracker.reidentify(ids, boxes, np.stack(embeddings), DIAGONAL)
    return [merged.get(i, i) for i in ids]


# --- assignment and Kalman -----------------------------------------------------------


def test_iou_matrix_values():
    a = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 0, 0]], dtype=np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6)
    assert iou_matrix(a, np.zeros((0, 4), dtype=np.float32)).shape == (2, 0)


def test_assign_maximises_total_iou_and_rejects_pairs_below_threshold():
    iou = np.array([[0.9, 0.8], [0.85, 0.1]])
    # Greedy would take (0, 0) and leave row 1 unmatched; the optimum matches both.
    assert sorted(assign(iou, 0.3)) == [(0, 1), (1, 0)]
    assert assign(np.array([[0.2]]), 0.3) == []
    assert assign(np.zeros((0, 2)), 0.3) == []


def test_kalman_learns_a_constant_velocity_and_extrapolates_it():
    mean, cov = kalman.initiate(np.array(_box(100, 200)))
    for i in range(1, 6):  # 200 px/s to the right, at 5 fps
        mean, cov = kalman.predict(mean, cov, 0.2)
        mean, cov = kalman.update(mean, cov, np.array(_box(100 + 40 * i, 200)))
    assert mean[4] == pytest.approx(200, rel=0.1) and abs(mean[5]) < 10
    far, far_cov = kalman.predict(mean, cov, 1.0)
    np.testing.assert_allclose(kalman.state_to_box(far), _box(500, 200), atol=25)
    assert np.trace(far_cov) > np.trace(cov)  # less sure the longer it extrapolates
    np.testing.assert_allclose(kalman.state_to_box(kalman.initiate(np.array([10, 20, 50, 100]))[0]), [10, 20, 50, 100], atol=1e-4)


# --- motion: ByteTrack association ----------------------------------------------------


def test_two_noisy_sample_faces_with_missed_detections_keep_two_ids():
    rng = np.random.default_rng(0)
    tracker = FaceTracker(TrackerConfig(iou_threshold=0.3, max_missed_s=1.0))
    # Frames where a face goes undetected: single misses and a 0.8 s gap (4 frames) per face.
    missed = {0: {7, 20, 21, 22, 23, 40}, 1: {3, 15, 30, 31, 32, 33}}
    id_of_face: dict[int, set[int]] = {0: set(), 1: set()}
    for frame in range(50):  # 10 s at 5 fps
        t = frame / 5
        detections = [
            (face, _det(box + rng.normal(0, 2.0, 4)))
            for face, box in enumerate(samples.face_boxes(t))
            if frame not in missed[face]
        ]
        rng.shuffle(detections)  # matching must not depend on order
        step = tracker.update([d for _, d in detections], t)
        assert step.ended == []
        assert len(step.tracks) == len(detections)
        by_box = {tuple(d.box): face for face, d in detections}
        for tb in step.tracks:
            assert not tb.predicted
            id_of_face[by_box[tuple(tb.box)]].add(tb.id)
    assert id_of_face == {0: {1}, 1: {2}}
    assert sorted(tr.id for tr in tracker.active) == [1, 2]


def test_a_fast_face_missed_for_0_8_s_is_found_where_its_velocity_predicts():
    tracker = FaceTracker(TrackerConfig())
    for i in range(5):  # 250 px/s: after 0.8 s unseen it is 200 px (2 face widths) further
        tracker.update([_det(_box(100 + 50 * i, 300))], i / 5)
    for i in range(5, 9):
        assert tracker.update([], i / 5).tracks == []
    assert _ids(tracker.update([_det(_box(100 + 50 * 9, 300))], 9 / 5)) == [1]


def test_faces_crossing_with_one_hidden_keep_their_ids():
    """Two faces walk across each other; while they overlap the one behind is not detected."""
    tracker = FaceTracker(TrackerConfig())
    for i in range(30):
        t = i / 5
        a, b = _box(100 + 30 * i, 300), _box(1000 - 30 * i, 320)
        hidden = abs((100 + 30 * i) - (1000 - 30 * i)) < 100 and i > 0
        step = tracker.update([_det(a)] if hidden else [_det(a), _det(b)][:: 1 if i % 2 == 0 else -1], t)
        by_id = {tb.id: tb.box for tb in step.tracks}
        assert iou_matrix(np.array([a]), np.array([by_id[1]]))[0, 0] > 0.9
        if not hidden:
            assert iou_matrix(np.array([b]), np.array([by_id[2]]))[0, 0] > 0.9


def test_low_confidence_detections_continue_tracked_faces_but_never_start_one():
    tracker = FaceTracker(TrackerConfig(), new_track_score=0.6)
    assert tracker.update([_det(_box(100, 100), 0.45)], 0.0).tracks == []  # not a face for sure
    assert _ids(tracker.update([_det(_box(100, 100), 0.9)], 0.2)) == [1]
    step = tracker.update([_det(_box(104, 100), 0.45), _det(_box(600, 100), 0.5)], 0.4)
    assert [(tb.id, round(tb.score, 2)) for tb in step.tracks] == [(1, 0.45)]
    assert [tr.id for tr in tracker.active] == [1]


def test_low_confidence_detections_do_not_revive_a_lost_face():
    tracker = FaceTracker(TrackerConfig(), new_track_score=0.6)
    tracker.update([_det(_box(100, 100))], 0.0)
    tracker.update([], 0.2)  # lost
    assert tracker.update([_det(_box(100, 100), 0.45)], 0.4).tracks == []
    assert _ids(tracker.update([_det(_box(100, 100), 0.8)], 0.6)) == [1]  # a sure one does


def test_track_unmatched_longer_than_max_missed_ends_once():
    tracker = FaceTracker(TrackerConfig(max_missed_s=1.0))
    first = tracker.update([_det([0, 0, 100, 100])], 0.0)
    assert _ids(first) == [1]
    ended = {}
    for t in (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 2.0):
        step = tracker.update([], t)
        assert step.tracks == []
        if step.ended:
            ended[t] = step.ended
    assert ended == {1.2: [1]}  # still alive at exactly max_missed_s; no appearance, so no re-id wait
    assert tracker.active == []


def test_missed_track_stays_active_but_is_not_in_the_step():
    tracker = FaceTracker(TrackerConfig())
    tracker.update([_det([0, 0, 100, 100]), _det([300, 0, 400, 100])], 0.0)
    step = tracker.update([_det([2, 0, 102, 100])], 0.2)
    assert _ids(step) == [1]
    assert sorted(tr.id for tr in tracker.active) == [1, 2]


def test_new_face_gets_a_new_id_and_ids_are_never_reused():
    tracker = FaceTracker(TrackerConfig(max_missed_s=0.5))
    a, b = [0, 0, 100, 100], [500, 0, 600, 100]
    assert _ids(tracker.update([_det(a)], 0.0)) == [1]
    assert _ids(tracker.update([_det(a), _det(b)], 0.2)) == [1, 2]
    # Face 1 leaves; when it comes back after max_missed_s it is a new track.
    assert tracker.update([_det(b)], 0.4).ended == []
    assert tracker.update([_det(b)], 0.8).ended == [1]
    assert _ids(tracker.update([_det(a), _det(b)], 1.0)) == [2, 3]
    assert tracker.end_all() == [2, 3]
    assert _ids(tracker.update([_det(a)], 2.0)) == [4]


def test_a_jump_beyond_the_buffered_iou_threshold_starts_a_new_track():
    tracker = FaceTracker(TrackerConfig(iou_threshold=0.3))
    tracker.update([_det([0, 0, 100, 100])], 0.0)
    # Seen once, so its velocity is unknown: its box is buffered by ~25 px (1 sd after 0.2 s).
    assert _ids(tracker.update([_det([60, 0, 160, 100])], 0.2)) == [1]  # plain IoU 40/160, buffered 0.43
    step = tracker.update([_det([200, 0, 300, 100])], 0.4)
    assert _ids(step) == [2]


def test_buffered_iou_grows_both_boxes_of_a_row():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=np.float32)
    b = np.array([[12, 0, 22, 10]], dtype=np.float32)
    np.testing.assert_allclose(iou_matrix(a, b, np.array([0.0, 2.0]))[:, 0], [0.0, 2 * 14 / (2 * 14 * 14 - 2 * 14)], rtol=1e-6)


def test_step_boxes_are_the_matched_detections():
    tracker = FaceTracker(TrackerConfig())
    tracker.update([_det([0, 0, 100, 100], 0.7)], 1.0)
    (tb,) = tracker.update([_det([4, 0, 104, 100], 0.8)], 1.2).tracks
    assert tb.box.dtype == np.float32 and not tb.predicted
    np.testing.assert_allclose(tb.box, [4, 0, 104, 100])
    assert tb.score == pytest.approx(0.8)
    (track,) = tracker.active
    assert (track.hits, track.first_seen, track.last_seen) == (2, 1.0, 1.2)


def test_time_going_backwards_ends_every_track():
    tracker = FaceTracker(TrackerConfig())
    tracker.update([_det([0, 0, 100, 100])], 5.0)
    step = tracker.update([_det([0, 0, 100, 100])], 0.0)
    assert step.ended == [1]
    assert _ids(step) == [2]


def test_predict_moves_tracked_faces_and_leaves_lost_ones_out():
    tracker = FaceTracker(TrackerConfig())
    for i in range(5):
        tracker.update([_det(_box(100 + 20 * i, 300)), _det(_box(900, 300))], i / 5)
    tracker.update([_det(_box(200, 300))], 1.0)  # face 2 missed: lost
    step = tracker.predict(1.2)
    assert step.ended == []
    (tb,) = step.tracks
    assert (tb.id, tb.predicted) == (1, True)
    np.testing.assert_allclose(tb.box, _box(220, 300), atol=6)


# --- re-identification ----------------------------------------------------------------


def test_a_face_back_within_the_reid_window_gets_its_old_id_and_does_not_end():
    tracker = FaceTracker(TrackerConfig(max_missed_s=1.0, reid_window_s=3.0))
    for i in range(5):
        step = tracker.update([_det(_box(300, 300)), _det(_box(900, 300))], i / 5)
        assert _reid(tracker, step, [_embedding(1, 0.3, i), _embedding(2, 0.3, i)]) == [1, 2]
    for i in range(5, 15):  # face 1 gone for 2 s; lost past max_missed_s but not ended
        step = tracker.update([_det(_box(900, 300))], i / 5)
        assert step.ended == []
        _reid(tracker, step, [_embedding(2, 0.3, i)])
    # It comes back elsewhere (motion cannot know): a new track, then its old id.
    step = tracker.update([_det(_box(600, 500)), _det(_box(900, 300))], 3.0)
    assert sorted(_ids(step)) == [2, 3]
    final = _reid(tracker, step, [_embedding(1, 0.3, 99) if tb.id == 3 else _embedding(2, 0.3, 99) for tb in step.tracks])
    assert sorted(final) == [1, 2]
    assert sorted(tr.id for tr in tracker.active) == [1, 2]
    assert _ids(tracker.update([_det(_box(602, 500)), _det(_box(900, 300))], 3.2)) == [1, 2]  # and keeps it


def test_a_stranger_keeps_a_new_id_and_the_lost_face_ends_after_the_reid_window():
    tracker = FaceTracker(TrackerConfig(max_missed_s=1.0, reid_window_s=3.0))
    _reid(tracker, tracker.update([_det(_box(300, 300))], 0.0), [_embedding(1)])
    ended = {}
    for i in range(1, 25):
        t = i / 5
        step = tracker.update([_det(_box(300, 300))] if i >= 10 else [], t)
        if step.tracks:
            assert _reid(tracker, step, [_embedding(7)]) == [2]  # someone else, where face 1 was
        if step.ended:
            ended[round(t, 1)] = step.ended
    assert ended == {3.2: [1]}  # lost at 0.2 after being seen at 0.0: ends once 3 s have passed


def test_reid_refuses_a_face_seen_at_the_same_time_and_one_beyond_the_window():
    tracker = FaceTracker(TrackerConfig(reid_window_s=1.0))
    step = tracker.update([_det(_box(300, 300)), _det(_box(900, 300))], 0.0)
    _reid(tracker, step, [_embedding(1), _embedding(2)])
    step = tracker.update([_det(_box(300, 300)), _det(_box(600, 600))], 0.2)  # a look-alike of 2 while 2 is... gone?
    # 2 was seen at 0.0 and 3 first at 0.2: allowed in time, and it looks like 2.
    assert sorted(_reid(tracker, step, [_embedding(1), _embedding(2, 0.2)])) == [1, 2]
    # A look-alike of 1 appearing while 1 is in view is never 1.
    step = tracker.update([_det(_box(300, 300)), _det(_box(600, 600)), _det(_box(1000, 100))], 0.4)
    assert sorted(_reid(tracker, step, [_embedding(1), _embedding(2), _embedding(1, 0.1)])) == [1, 2, 4]
    # Beyond the window nobody comes back.
    for i in range(3, 15):
        step = tracker.update([_det(_box(300, 300))], i / 5)
        _reid(tracker, step, [_embedding(1)])
    step = tracker.update([_det(_box(300, 300)), _det(_box(600, 600))], 3.0)
    assert sorted(_reid(tracker, step, [_embedding(1), _embedding(2)])) == [1, 5]


def test_a_final_id_is_never_renamed_even_when_its_face_later_looks_like_a_lost_one():
    tracker = FaceTracker(TrackerConfig())
    _reid(tracker, tracker.update([_det(_box(300, 300))], 0.0), [_embedding(1)])
    tracker.update([], 0.2)
    step = tracker.update([_det(_box(900, 300))], 0.4)
    assert _reid(tracker, step, [_embedding(7)]) == [2]  # a stranger: id 2 is final
    step = tracker.update([_det(_box(902, 300))], 0.6)
    # This crop looks like face 1 and not like 2: the crop goes to 1; 2 stays 2 (lost), not renamed.
    assert _reid(tracker, step, [_embedding(1)]) == [1]
    assert {tr.id: tr.tracked for tr in tracker.active} == {1: True, 2: False}


def test_reid_prefers_the_lost_face_that_left_nearer_when_looks_tie():
    tracker = FaceTracker(TrackerConfig(reid_position_weight=0.5))
    same = _embedding(1)
    step = tracker.update([_det(_box(200, 300)), _det(_box(1000, 300))], 0.0)
    _reid(tracker, step, [same, same])  # two look-alikes
    step = tracker.update([_det(_box(980, 320))], 1.5)  # both lost, one face back on the right
    assert _reid(tracker, step, [same]) == [2]


def test_a_camera_cut_that_swaps_two_faces_is_undone_by_their_looks():
    """Motion gives each face the other's id (IoU); their embeddings take them back."""
    tracker = FaceTracker(TrackerConfig())
    left, right = _box(300, 300, 120), _box(700, 300, 120)
    for i in range(5):
        step = tracker.update([_det(left), _det(right)], i / 5)
        assert _reid(tracker, step, [_embedding(1, 0.3, i), _embedding(2, 0.3, i)]) == [1, 2]
    cut_left, cut_right = _box(330, 300, 120), _box(670, 300, 120)  # overlaps the other's old place
    step = tracker.update([_det(cut_left), _det(cut_right)], 1.0)
    assert _ids(step) == [1, 2]  # motion alone: face 2 is now left, called 1
    final = _reid(tracker, step, [_embedding(2, 0.3, 50), _embedding(1, 0.3, 51)])
    assert final == [2, 1]
    step = tracker.update([_det(cut_left), _det(cut_right)], 1.2)  # and motion follows them from there
    assert {tb.id: tuple(tb.box) for tb in step.tracks} == {2: tuple(cut_left), 1: tuple(cut_right)}
    assert sorted(tr.id for tr in tracker.active) == [1, 2]


def test_a_cut_on_a_frame_the_detector_skipped_is_undone_too():
    tracker = FaceTracker(TrackerConfig())
    left, right = _box(300, 300, 120), _box(700, 300, 120)
    for i in range(5):
        step = tracker.update([_det(left), _det(right)], i / 5)
        _reid(tracker, step, [_embedding(1, 0.3, i), _embedding(2, 0.3, i)])
    step = tracker.predict(1.0)  # the predicted boxes now show the other face
    assert _ids(step) == [1, 2] and all(tb.predicted for tb in step.tracks)
    assert _reid(tracker, step, [_embedding(2, 0.3, 60), _embedding(1, 0.3, 61)]) == [2, 1]
    step = tracker.predict(1.2)  # each id now predicted where its face is
    assert {tb.id: tb.box[0] < 500 for tb in step.tracks} == {2: True, 1: False}
    step = tracker.update([_det(left), _det(right)], 1.4)
    assert {tb.id: tuple(tb.box) for tb in step.tracks} == {2: tuple(left), 1: tuple(right)}


def test_a_face_unlike_its_track_but_like_nobody_known_keeps_its_id():
    tracker = FaceTracker(TrackerConfig())
    step = tracker.update([_det(_box(300, 300))], 0.0)
    _reid(tracker, step, [_embedding(1)])
    step = tracker.update([_det(_box(305, 300))], 0.2)
    assert _reid(tracker, step, [_embedding(1, 3.0)]) == [1]  # a turned head, a noisy crop: motion wins


def test_overlapping_crops_do_not_teach_the_appearance():
    tracker = FaceTracker(TrackerConfig())
    step = tracker.update([_det(_box(300, 300)), _det(_box(700, 300))], 0.0)
    _reid(tracker, step, [_embedding(1), _embedding(2)])
    before = {tr.id: tr.appearance.copy() for tr in tracker.active}
    step = tracker.update([_det(_box(300, 300)), _det(_box(380, 300))], 0.2)  # 2 jumps in front of 1
    step = tracker.update([_det(_box(300, 300)), _det(_box(380, 300))], 0.4)
    _reid(tracker, step, [_embedding(3), _embedding(4)])
    for tr in tracker.active:
        if tr.id in before:
            np.testing.assert_array_equal(tr.appearance, before[tr.id])


# --- MOT counting ---------------------------------------------------------------------


def test_mot_counts_switches_fragmentations_and_ignores_hidden_faces():
    acc = MotAccumulator()
    a, b = _box(100, 100), _box(500, 100)
    frames = [
        # (visible, hypotheses as (id, box))
        ([True, True], [(1, a), (2, b)]),
        ([True, True], [(1, a), (2, b)]),
        ([True, True], [(1, a)]),  # b missed while visible
        ([True, True], [(1, a), (2, b)]),  # b tracked again: one fragmentation
        ([True, False], [(1, a), (2, b)]),  # b hidden: its hypothesis is no false positive
        ([True, True], [(1, a), (3, b)]),  # b comes back as 3: one ID switch
        ([True, True], [(1, a), (3, b), (4, _box(900, 500))]),  # a false positive
    ]
    for visible, hyps in frames:
        acc.update(
            np.array([0, 1]), np.array([a, b]), np.array(visible),
            np.array([h for h, _ in hyps]), np.array([box for _, box in hyps]),
        )
    c = acc.counts()
    assert (c.frames, c.objects, c.matches, c.misses) == (7, 13, 12, 1)
    assert (c.false_positives, c.id_switches, c.fragmentations) == (1, 1, 1)
    assert c.mean_iou == pytest.approx(1.0)
