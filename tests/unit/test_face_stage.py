import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from streamguard import metrics, samples
from streamguard.config import CropConfig, DetectorConfig, TrackerConfig
from lab import scenes as sequences
from streamguard.faces.detector import FaceDetector
from streamguard.faces.stage import FaceStage
from streamguard.faces.tracker import iou_matrix
from streamguard.inference.torch_engine import TorchEngine
from streamguard.model.checkpoint import untrained_model
from streamguard.types import Frame

CROP = 112  # the untrained tiny model runs at 112 px to keep these tests fast


def _frame(stream: str, t: float, rgb: np.ndarray | None = None) -> Frame:
    return Frame(stream=stream, pts=t, wall_ts=time.time(), rgb=samples.render_frame(t) if rgb is None else rgb)


def _metric(name: str, stream: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, {"stream": stream}) or 0.0


@pytest.fixture(scope="module")
def engine() -> Iterator[TorchEngine]:
    """An untrained tiny FSFM: its embeddings separate the two sample faces (test_reid.py checks).

    On one torch thread: its calls are tiny (one or two 112 px crops), where a second
    OpenMP thread adds only synchronisation, and on a busy 2-core machine spinning
    threads made each call 10-50x slower. The process-wide setting is restored after.
    """
    threads = torch.get_num_threads()
    eng = TorchEngine(untrained_model("tiny", img_size=CROP), threads=1)
    yield eng
    eng.close()
    torch.set_num_threads(threads)


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


def test_faces_with_an_appearance_end_only_after_the_reid_window(engine):
    stream = "stage-reid-window"
    blank = np.full((720, 1280, 3), 90, dtype=np.uint8)
    cfg = TrackerConfig(max_missed_s=0.5, reid_window_s=2.0)
    with FaceStage(stream, DetectorConfig(), cfg, CropConfig(size=CROP)) as stage:
        faces, _ = stage.process(_frame(stream, 0.0))
        _, embeddings = engine.infer(np.stack([f.crop for f in faces]))
        assert [f.track for f in stage.reidentify(faces, embeddings)] == [1, 2]
        ended = {}
        for i in range(1, 16):
            faces, step_ended = stage.process(_frame(stream, i / 5, blank))
            if step_ended:
                ended[round(i / 5, 1)] = step_ended
        assert ended == {2.2: [1, 2]}  # lost at 0.2, gone for good 2 s after they were last seen
        assert stage.finish() == []


def test_detecting_every_third_frame_predicts_the_faces_in_between():
    stream = "stage-detect-every"
    detected_before = _metric("streamguard_faces_detected_total", stream)
    id_of_face: dict[int, set[int]] = {0: set(), 1: set()}
    ious = []
    with FaceStage(stream, DetectorConfig(detect_every=3), TrackerConfig(), CropConfig(size=CROP)) as stage:
        for i in range(30):  # 6 s at 5 fps: the detector runs on frames 0, 3, 6, ...
            frame = _frame(stream, i / 5)
            faces, ended = stage.process(frame)
            # Frames 1 and 2: the faces were seen once, their velocity is unknown: not predicted.
            assert ended == [] and len(faces) == (0 if i in (1, 2) else 2)
            truth = samples.face_boxes(frame.pts)
            for face in faces:
                assert face.crop.shape == (CROP, CROP, 3)
                iou = iou_matrix(truth, face.box[None])[:, 0]
                id_of_face[int(iou.argmax())].add(face.track)
                ious.append(iou.max())
    assert id_of_face == {0: {1}, 1: {2}}
    assert _metric("streamguard_faces_detected_total", stream) - detected_before == 20
    print(f"\ndetect_every=3 on the sample: mean IoU {np.mean(ious):.3f}, min {np.min(ious):.3f}")
    assert min(ious) >= 0.5


def test_reidentify_keeps_faces_and_order_and_gives_a_returning_face_its_old_id(engine):
    """The pipeline's contract: process -> model -> reidentify; ids after reidentify are final."""
    seq = sequences.leave_and_return()
    stream = "stage-reid"
    with FaceStage(stream, DetectorConfig(), TrackerConfig(), CropConfig(size=CROP)) as stage:
        provisional, final, ended = set(), set(), []
        for t in seq.times():
            rgb, _ = seq.frame(float(t))
            faces, step_ended = stage.process(Frame(stream, float(t), 0.0, rgb))
            ended += step_ended
            if not faces:
                continue
            _, embeddings = engine.infer(np.stack([f.crop for f in faces]))
            out = stage.reidentify(faces, embeddings)
            assert [(f.box.tolist(), f.pts, f.crop is g.crop) for f, g in zip(out, faces)] == [
                (g.box.tolist(), g.pts, True) for g in faces
            ]
            provisional |= {f.track for f in faces}
            final |= {f.track for f in out}
        assert final == {1, 2}
        assert provisional == {1, 2, 3}  # the astronaut came back as 3, then took back 1
        assert ended == []
        assert stage.finish() == [1, 2]
        assert stage.reidentify([], np.zeros((0, 192), np.float32)) == []


@pytest.mark.parametrize(
    ("scene", "reidentify", "expected"),
    [
        # (ID switches, fragmentations); fragmentations are frames where the detector
        # missed a visible face (entering at the border, half hidden), not tracker errors.
        ("crossing", False, (1, 1)),  # the face behind is hidden > max_missed_s: new id
        ("crossing", True, (0, 1)),
        ("leave_and_return", False, (1, 1)),  # out of the frame for 2 s: new id
        ("leave_and_return", True, (0, 1)),
        ("camera_cut", False, (2, 0)),  # IoU hands each face the other's id
        ("camera_cut", True, (0, 0)),
    ],
)
def test_identity_errors_on_generated_sequences(scene, reidentify, expected, engine):
    seq = sequences.SCENES[scene]()
    with FaceStage(scene, DetectorConfig(), TrackerConfig(), CropConfig(size=CROP)) as stage:
        counts = sequences.track_sequence(seq, stage, engine if reidentify else None)
    print(f"\n{scene} reid={reidentify}: {counts}")
    assert (counts.id_switches, counts.fragmentations) == expected
    assert counts.false_positives == 0
    assert counts.matches >= 0.95 * counts.objects


def test_detecting_the_next_frame_before_reidentifying_this_one_gives_the_same_ids(engine):
    """The pipeline's look-ahead order: detect(n+1) runs while the model scores frame n,
    before reidentify(n); tracking n+1 waits for it. Ids must match the plain order."""
    seq = sequences.leave_and_return()
    frames = [Frame("stage-lookahead", float(t), 0.0, seq.frame(float(t))[0]) for t in seq.times()]

    def final_ids(lookahead: bool) -> list[list[int]]:
        out = []
        with FaceStage("stage-lookahead", DetectorConfig(), TrackerConfig(), CropConfig(size=CROP)) as stage:
            detections = stage.detect(frames[0])
            for i, frame in enumerate(frames):
                faces, _ = stage.track(frame, detections)
                if lookahead and i + 1 < len(frames):
                    detections = stage.detect(frames[i + 1])  # before this frame's reidentify
                if faces:
                    _, embeddings = engine.infer(np.stack([f.crop for f in faces]))
                    out.append([f.track for f in stage.reidentify(faces, embeddings)])
                if not lookahead and i + 1 < len(frames):
                    detections = stage.detect(frames[i + 1])
        return out

    plain = final_ids(lookahead=False)
    assert {t for ids in plain for t in ids} == {1, 2}  # the returning face took back its id
    assert final_ids(lookahead=True) == plain


def test_detect_skips_frames_between_detections_and_after_a_restart_detects_at_once():
    stream = "stage-detect-due"
    with FaceStage(stream, DetectorConfig(detect_every=3), TrackerConfig(), CropConfig(size=CROP)) as stage:
        ran = [stage.detect(_frame(stream, i / 5)) is not None for i in range(7)]
        assert ran == [True, False, False, True, False, False, True]
        assert stage.detect(_frame(stream, 1.4)) is None  # due again only at frame 9 ...
        assert stage.detect(_frame(stream, 0.0)) is not None  # ... unless the clock went back (a file restarted)
