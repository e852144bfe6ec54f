import numpy as np
import pytest

from streamguard import samples
from streamguard.config import TrackerConfig
from streamguard.faces.tracker import IouTracker, assign, iou_matrix
from streamguard.types import Detection


def _det(box, score: float = 0.9) -> Detection:
    return Detection(box=np.asarray(box, dtype=np.float32), score=score)


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


def test_two_noisy_sample_faces_with_missed_detections_keep_two_ids():
    rng = np.random.default_rng(0)
    tracker = IouTracker(TrackerConfig(iou_threshold=0.3, max_missed_s=1.0))
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
        for track in step.tracks:
            id_of_face[by_box[tuple(track.box)]].add(track.id)
    assert id_of_face == {0: {1}, 1: {2}}
    assert sorted(tr.id for tr in tracker.active) == [1, 2]


def test_track_unmatched_longer_than_max_missed_ends_once():
    tracker = IouTracker(TrackerConfig(max_missed_s=1.0))
    first = tracker.update([_det([0, 0, 100, 100])], 0.0)
    assert [tr.id for tr in first.tracks] == [1]
    ended = {}
    for t in (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 2.0):
        step = tracker.update([], t)
        assert step.tracks == []
        if step.ended:
            ended[t] = step.ended
    assert ended == {1.2: [1]}  # still alive at exactly max_missed_s
    assert tracker.active == []


def test_missed_track_stays_active_but_is_not_in_the_step():
    tracker = IouTracker(TrackerConfig())
    tracker.update([_det([0, 0, 100, 100]), _det([300, 0, 400, 100])], 0.0)
    step = tracker.update([_det([2, 0, 102, 100])], 0.2)
    assert [tr.id for tr in step.tracks] == [1]
    assert sorted(tr.id for tr in tracker.active) == [1, 2]


def test_new_face_gets_a_new_id_and_ids_are_never_reused():
    tracker = IouTracker(TrackerConfig(max_missed_s=0.5))
    a, b = [0, 0, 100, 100], [500, 0, 600, 100]
    assert [tr.id for tr in tracker.update([_det(a)], 0.0).tracks] == [1]
    assert [tr.id for tr in tracker.update([_det(a), _det(b)], 0.2).tracks] == [1, 2]
    # Face 1 leaves; when it comes back after max_missed_s it is a new track.
    assert tracker.update([_det(b)], 0.4).ended == []
    assert tracker.update([_det(b)], 0.8).ended == [1]
    assert [tr.id for tr in tracker.update([_det(a), _det(b)], 1.0).tracks] == [2, 3]
    assert tracker.end_all() == [2, 3]
    assert [tr.id for tr in tracker.update([_det(a)], 2.0).tracks] == [4]


def test_a_jump_beyond_the_iou_threshold_starts_a_new_track():
    tracker = IouTracker(TrackerConfig(iou_threshold=0.3))
    tracker.update([_det([0, 0, 100, 100])], 0.0)
    step = tracker.update([_det([80, 0, 180, 100])], 0.2)  # IoU 20/180
    assert [tr.id for tr in step.tracks] == [2]


def test_track_fields_follow_the_matched_detections():
    tracker = IouTracker(TrackerConfig())
    tracker.update([_det([0, 0, 100, 100], 0.7)], 1.0)
    (track,) = tracker.update([_det([4, 0, 104, 100], 0.8)], 1.2).tracks
    assert track.box.dtype == np.float32
    np.testing.assert_allclose(track.box, [4, 0, 104, 100])
    assert (track.score, track.hits, track.first_seen, track.last_seen) == (pytest.approx(0.8), 2, 1.0, 1.2)


def test_time_going_backwards_ends_every_track():
    tracker = IouTracker(TrackerConfig())
    tracker.update([_det([0, 0, 100, 100])], 5.0)
    step = tracker.update([_det([0, 0, 100, 100])], 0.0)
    assert step.ended == [1]
    assert [tr.id for tr in step.tracks] == [2]
