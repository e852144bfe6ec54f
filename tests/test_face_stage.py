import asyncio
import time

import numpy as np

from streamguard import metrics, samples
from streamguard.config import CropConfig, DetectorConfig, TrackerConfig
from streamguard.faces.detector import FaceDetector
from streamguard.faces.stage import FaceStage
from streamguard.faces.tracker import iou_matrix
from streamguard.types import Frame


def _frame(stream: str, t: float, rgb: np.ndarray | None = None) -> Frame:
    return Frame(stream=stream, pts=t, wall_ts=time.time(), rgb=samples.render_frame(t) if rgb is None else rgb)


def _metric(name: str, stream: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, {"stream": stream}) or 0.0


async def test_sample_frames_give_two_stable_tracks_with_model_ready_crops():
    stream = "stage-two-faces"
    detected_before = _metric("streamguard_faces_detected_total", stream)
    id_of_face: dict[int, set[int]] = {0: set(), 1: set()}
    crops = []
    with FaceStage(stream, DetectorConfig(), TrackerConfig(), CropConfig()) as stage:
        for i in range(20):  # 4 s at 5 fps, from worker threads as in the pipeline
            frame = _frame(stream, i / 5)
            faces, ended = await asyncio.to_thread(stage.process, frame)
            assert ended == []
            assert len(faces) == 2
            truth = samples.face_boxes(frame.pts)
            for face in faces:
                assert (face.stream, face.pts, face.wall_ts) == (stream, frame.pts, frame.wall_ts)
                assert face.crop.shape == (224, 224, 3) and face.crop.dtype == np.uint8
                assert face.box_norm.dtype == np.float32
                assert ((face.box_norm >= 0) & (face.box_norm <= 1)).all()
                np.testing.assert_allclose(face.box_norm * [1280, 720, 1280, 720], face.box, rtol=1e-5)
                assert face.det_score >= 0.6
                iou = iou_matrix(truth, face.box[None])[:, 0]
                assert iou.max() >= 0.5
                id_of_face[int(iou.argmax())].add(face.track)
            crops.extend(f.crop for f in faces)
        assert _metric("streamguard_active_tracks", stream) == 2
        assert stage.finish() == [1, 2]
        assert _metric("streamguard_active_tracks", stream) == 0
    assert id_of_face == {0: {1}, 1: {2}}
    assert _metric("streamguard_faces_detected_total", stream) - detected_before == 40

    # Each crop is a face centred in it, filling about 1/1.3 of its side.
    with FaceDetector(DetectorConfig(model="short_range")) as detector:
        for crop in crops[::8]:
            (face,) = detector.detect(crop)
            centre = (face.box[:2] + face.box[2:]) / 2
            assert np.abs(centre - 112).max() < 20
            assert 0.6 < (face.box[2] - face.box[0]) / 224 < 0.95


async def test_faces_that_leave_end_their_tracks():
    stream = "stage-leave"
    blank = np.full((720, 1280, 3), 90, dtype=np.uint8)
    with FaceStage(stream, DetectorConfig(), TrackerConfig(max_missed_s=0.5), CropConfig(size=112)) as stage:
        faces, _ = await asyncio.to_thread(stage.process, _frame(stream, 0.0))
        assert [f.crop.shape for f in faces] == [(112, 112, 3)] * 2
        ended = []
        for i in range(1, 6):
            faces, step_ended = await asyncio.to_thread(stage.process, _frame(stream, i / 5, blank))
            assert faces == []
            ended += step_ended
        assert sorted(ended) == [1, 2]
        assert _metric("streamguard_active_tracks", stream) == 0
        assert stage.finish() == []
