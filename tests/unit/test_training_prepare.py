"""`prepare` on short generated videos: the runtime's detector and cropper, resumable, parallel."""

import json

import cv2
import numpy as np
import pytest

from streamguard.config import CropConfig, DetectorConfig
from streamguard.faces.crops import crop_face
from streamguard.faces.detector import FaceDetector
from streamguard.samples import make_two_face_video, render_frame
from training.cli import main
from training.index import read_index
from training.prepare import PrepareOptions, prepare, sample_video, uniform_indices

FPS = 10


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two 2-second two-face videos and a faceless image, listed in a CSV manifest."""
    root = tmp_path_factory.mktemp("videos")
    make_two_face_video(root / "a.mp4", seconds=2.0, fps=FPS)
    make_two_face_video(root / "b.mp4", seconds=2.0, fps=FPS)
    cv2.imwrite(str(root / "blank.png"), np.full((240, 320, 3), 127, np.uint8))
    manifest = root / "set.csv"
    manifest.write_text(
        "path,label,manipulation,source,split\n"
        "a.mp4,real,,demo,train\n"
        "b.mp4,fake,SBI,demo,test\n"
        "blank.png,real,,demo,train\n"
    )
    return manifest


def test_uniform_indices_spread_over_the_video():
    assert uniform_indices(20, 4).tolist() == [0, 6, 13, 19]
    assert uniform_indices(3, 32).tolist() == [0, 1, 2]


def test_sample_video_by_count_and_by_rate(dataset):
    video = dataset.parent / "a.mp4"
    assert [i for i, _ in sample_video(video, PrepareOptions(frames=4))] == [0, 6, 13, 19]
    by_rate = sample_video(video, PrepareOptions(fps=2.0))
    assert [i for i, _ in by_rate] == [0, 5, 10, 15]
    assert by_rate[0][1].shape == (720, 1280, 3)


def test_prepare_crops_like_the_runtime_resumes_and_lists_faceless_videos(dataset, tmp_path):
    out = tmp_path / "prepared"
    summary = prepare(dataset, out, PrepareOptions(frames=4), workers=0)
    assert (summary.videos, summary.processed, summary.crops) == (3, 3, 8)
    assert summary.no_face == [str(dataset.parent / "blank.png")] and not summary.failed
    records = read_index(summary.index)
    assert {(r.label, r.manipulation, r.split) for r in records} == {("real", "real", "train"), ("fake", "SBI", "test")}
    assert sorted({r.frame for r in records}) == [0, 6, 13, 19]

    # No train/serve skew: the crop is exactly what the runtime cuts from that frame (the largest face).
    first = next(r for r in records if r.label == "real" and r.frame == 6)
    frame = dict(sample_video(dataset.parent / "a.mp4", PrepareOptions(frames=4)))[6]
    with FaceDetector(DetectorConfig()) as detector:
        faces = detector.detect(frame)
    largest = max(faces, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
    expected = crop_face(frame, largest.box, scale=CropConfig().scale, size=CropConfig().size)
    saved = cv2.cvtColor(cv2.imread(str(first.crop)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(saved, expected)

    again = prepare(dataset, out, PrepareOptions(frames=4), workers=0)
    assert again.processed == 0 and again.crops == 8  # resumed: nothing redone


def test_prepare_command_with_worker_processes_matches_in_process_results(dataset, tmp_path, capsys):
    assert main(["prepare", "--manifest", str(dataset), "--out", str(tmp_path / "p"), "--frames", "3", "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "3 videos (3 processed now), 6 crops" in printed and "blank.png" in printed
    marker = json.loads(next((tmp_path / "p" / "videos").glob("a-*.json")).read_text())
    assert [c["frame"] for c in marker["crops"]] == [0, 10, 19]


def test_prepare_reads_deepfakebench_frame_lists(tmp_path):
    frames = []
    for i, t in enumerate((0.0, 1.0, 2.0)):
        path = tmp_path / "frames" / f"{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(render_frame(t), cv2.COLOR_RGB2BGR))
        frames.append(f"frames/{path.name}")
    manifest = tmp_path / "dfb.json"
    manifest.write_text(json.dumps({"Demo": {"Demo_real": {"test": {"v0": {"label": "Demo_real", "frames": frames}}}}}))
    summary = prepare(manifest, tmp_path / "out", PrepareOptions(frames=2), workers=0)
    records = read_index(summary.index)
    assert [(r.frame, r.label, r.source) for r in records] == [(0, "real", "Demo"), (2, "real", "Demo")]


def test_a_missing_manifest_is_one_clear_error(tmp_path, capsys):
    assert main(["prepare", "--manifest", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"streamguard-train: error: manifest not found: {tmp_path / 'none.csv'}"
