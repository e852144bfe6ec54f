from collections.abc import Iterator

import mediapipe as mp
import numpy as np
import pytest
import skimage.data

from streamguard import samples
from streamguard.config import DetectorConfig
from streamguard.errors import ConfigError
from streamguard.faces.detector import SHORT_RANGE_MODEL, FaceDetector, _LegacyFullRange
from streamguard.faces.tracker import iou_matrix

FULL_RANGE_MODEL = SHORT_RANGE_MODEL.with_name("face_detection_full_range_sparse.tflite")
ASTRONAUT_FACE = np.array([[226 - 52, 120 - 52, 226 + 52, 120 + 52]], dtype=np.float32)


@pytest.fixture(scope="module")
def full_range() -> Iterator[FaceDetector]:
    with FaceDetector(DetectorConfig(model="full_range")) as detector:
        yield detector


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


def _boxes(detections) -> np.ndarray:
    return np.array([d.box for d in detections], dtype=np.float32).reshape(-1, 4)


def test_full_range_finds_the_astronaut(full_range, astronaut):
    (face,) = full_range.detect(astronaut)
    assert face.score >= 0.8
    assert face.box.dtype == np.float32 and face.box.shape == (4,)
    assert iou_matrix(ASTRONAUT_FACE, face.box[None])[0, 0] >= 0.8


def test_short_range_loads_from_the_package_and_finds_the_astronaut(astronaut):
    with FaceDetector(DetectorConfig(model="short_range")) as detector:
        (face,) = detector.detect(astronaut)
    assert face.score >= 0.8
    assert iou_matrix(ASTRONAUT_FACE, face.box[None])[0, 0] >= 0.7


def test_model_path_loads_that_file(astronaut):
    with FaceDetector(DetectorConfig(model_path=SHORT_RANGE_MODEL)) as detector:
        assert len(detector.detect(astronaut)) == 1


@pytest.mark.parametrize("value", [0, 128, 255])
def test_uniform_image_has_no_face(full_range, value):
    assert full_range.detect(np.full((480, 640, 3), value, dtype=np.uint8)) == []


@pytest.mark.parametrize("t", [0.0, 2.5, 5.0, 7.5, 10.0])
def test_full_range_finds_both_sample_faces(full_range, t):
    detections = full_range.detect(samples.render_frame(t))
    assert len(detections) == 2
    iou = iou_matrix(samples.face_boxes(t), _boxes(detections))
    assert (iou.max(axis=1) >= 0.5).all()
    assert all(d.score >= 0.6 for d in detections)


def test_full_range_detections_are_what_mediapipes_process_gives(astronaut):
    """`_LegacyFullRange.detections` reaches into mediapipe's solution to skip the namedtuple
    its `process` builds per call; this pins it to `process` on faces, no faces and two faces."""
    ours, theirs = _LegacyFullRange(0.3), mp.solutions.face_detection.FaceDetection(
        min_detection_confidence=0.3, model_selection=1
    )
    try:
        frames = [astronaut, np.zeros((240, 320, 3), np.uint8), *(samples.render_frame(t) for t in (0.0, 3.3, 6.6))]
        for rgb in frames:
            assert ours.detections(rgb) == (theirs.process(rgb).detections or [])
        assert [len(ours.detections(rgb)) for rgb in frames] == [1, 0, 2, 2, 2]
    finally:
        ours.close()
        theirs.close()


def test_boxes_are_clipped_to_the_frame(full_range, astronaut):
    cut = astronaut[:, 190:]  # the face sticks out of the left border; the raw box starts at x < 0
    (face,) = full_range.detect(cut)
    h, w = cut.shape[:2]
    assert face.box[0] == 0.0
    assert (face.box >= 0).all() and face.box[2] <= w and face.box[3] <= h


def test_min_confidence_filters(astronaut):
    with FaceDetector(DetectorConfig(min_confidence=0.97)) as detector:
        assert detector.detect(astronaut) == []


def test_min_face_px_filters(astronaut):
    with FaceDetector(DetectorConfig(min_face_px=120)) as detector:  # the face is ~104 px
        assert detector.detect(astronaut) == []


def test_missing_model_path_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.tflite"
    with pytest.raises(ConfigError, match="nope.tflite"):
        FaceDetector(DetectorConfig(model_path=missing))


def test_garbage_model_file_is_a_config_error(tmp_path):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a model" * 100)
    with pytest.raises(ConfigError, match="garbage.tflite"):
        FaceDetector(DetectorConfig(model_path=garbage))


def test_full_range_file_through_the_tasks_api_is_a_config_error_at_startup():
    with pytest.raises(ConfigError, match="not a BlazeFace short-range model"):
        FaceDetector(DetectorConfig(model_path=FULL_RANGE_MODEL))


def test_detect_after_close_fails_and_close_is_idempotent(astronaut):
    detector = FaceDetector(DetectorConfig())
    detector.close()
    detector.close()
    with pytest.raises(RuntimeError, match="after close"):
        detector.detect(astronaut)
