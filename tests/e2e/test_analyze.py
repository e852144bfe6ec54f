"""`streamguard analyze` as a user runs it, on a short two-face video, and its report."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streamguard.events import EventV1, parse_any_event
from streamguard.config import load_config
from streamguard.report.analyze import analyze
from streamguard.report.verdicts import AnalysisV1
from streamguard.samples import make_two_face_video

STREAMGUARD = str(Path(sys.executable).parent / "streamguard")
SECONDS = 6
FPS = 2


def run_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STREAMGUARD, "analyze", *args], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report folder of a 6 s two-face video at threshold 0 (every tracked face alerts)."""
    folder = tmp_path_factory.mktemp("analyze")
    video = make_two_face_video(folder / "two faces.mp4", seconds=SECONDS)
    out = folder / "report"
    proc = run_analyze(str(video), "--out", str(out), "--arch", "tiny", "--fps", str(FPS), "--threshold", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "UNTRAINED" in proc.stdout and "report.html" in proc.stdout
    return out


def read_scores(out: Path) -> dict[int, list[dict[str, float]]]:
    with (out / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_id: dict[int, list[dict[str, float]]] = {}
    for row in rows:
        by_id.setdefault(int(row["identity"]), []).append({k: float(v) for k, v in row.items()})
    return by_id


def read_analysis(out: Path) -> AnalysisV1:
    return AnalysisV1.model_validate_json((out / "verdicts.json").read_text())


def test_writes_every_output_and_the_png_opens(report: Path):
    for name in ("events.jsonl", "scores.csv", "verdicts.json", "timeline.png", "report.html"):
        assert (report / name).stat().st_size > 0, name
    with Image.open(report / "timeline.png") as png:
        png.verify()
    with Image.open(report / "timeline.png") as png:
        assert png.format == "PNG" and png.width >= 800
    for v in read_analysis(report).identities:
        with Image.open(report / v.thumbnail) as jpeg:
            assert jpeg.format == "JPEG" and jpeg.size == (224, 224)


def test_verdicts_match_the_scores_in_the_csv(report: Path):
    analysis = read_analysis(report)
    scores = read_scores(report)
    assert analysis.complete and analysis.frames_analysed == SECONDS * FPS
    assert len(analysis.identities) >= 2  # both faces
    assert sorted(v.identity for v in analysis.identities) == sorted(scores)
    for v in analysis.identities:
        rows = scores[v.identity]
        p = np.array([r["p_fake"] for r in rows])
        assert v.samples == len(rows)
        assert v.video_score == pytest.approx(p.mean(), abs=1e-9)
        assert v.max_p_fake == pytest.approx(p.max(), abs=1e-9)
        assert (v.first_s, v.last_s) == (rows[0]["time_s"], rows[-1]["time_s"])
        full = [r["window_score"] for r in rows if r["window_samples"] >= analysis.scoring.min_samples]
        assert v.max_window_score == pytest.approx(max(full), abs=1e-9)
        assert v.verdict == "fake"  # threshold 0


def test_events_are_valid_and_every_identity_alerts_at_threshold_0(report: Path):
    lines = [parse_any_event(line) for line in (report / "events.jsonl").read_text().splitlines()]
    events = [e for e in lines if isinstance(e, EventV1)]  # the rest are the stream's state changes
    analysis = read_analysis(report)
    scores = read_scores(report)
    alerts = [e for e in events if e.type == "alert"]
    assert {e.track for e in alerts} == set(scores)
    assert {e.id for e in alerts} == {e.id for e in events if e.type == "clear"}  # the end of the file clears them
    for e in alerts:
        # The window score recomputed for the CSV is the one the scorer alerted on.
        row = next(r for r in scores[e.track] if r["time_s"] == e.pts)
        assert row["window_score"] == pytest.approx(e.score, abs=1e-6) and row["window_samples"] == e.samples
    for v in analysis.identities:
        assert v.alerted
        assert [a.id for a in v.alerts] == [e.id for e in alerts if e.track == v.identity]
    assert analysis.events == len(lines)


def test_html_names_each_identity_and_says_the_model_is_untrained(report: Path):
    html = (report / "report.html").read_text()
    for identity in read_scores(report):
        assert f"identity {identity}<" in html
    assert "UNTRAINED MODEL" in html
    assert html.count("data:image/jpeg;base64,") == len(read_scores(report))
    assert "data:image/png;base64," in html
    assert "two faces.mp4" in html


async def test_video_without_faces_gives_an_empty_report(tmp_path: Path):
    import av

    video = tmp_path / "empty.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 10)
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 90, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    cfg = load_config(None, {"model.arch": "tiny", "ingest.analysis_fps": 5}, environ={})
    analysis = await analyze(video, tmp_path / "out", cfg)
    assert analysis.complete and analysis.identities == [] and analysis.frames_analysed == 10
    assert json.loads((tmp_path / "out" / "verdicts.json").read_text())["identities"] == []
    assert (tmp_path / "out" / "scores.csv").read_text().splitlines() == [
        "time_s,identity,p_fake,window_score,window_samples"
    ]
    assert "No faces were found" in (tmp_path / "out" / "report.html").read_text()
    with Image.open(tmp_path / "out" / "timeline.png") as png:
        png.verify()


@pytest.mark.parametrize("kind", ["missing", "text"])
def test_bad_input_is_one_clear_error(kind: str, tmp_path: Path):
    video = tmp_path / ("nope.mp4" if kind == "missing" else "notes.txt")
    if kind == "text":
        video.write_text("this is not a video\n" * 100)
    proc = run_analyze(str(video), "--out", str(tmp_path / "out"), "--arch", "tiny")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert str(video) in line and ("no such file" in line if kind == "missing" else "not a video" in line)
    assert not (tmp_path / "out").exists()  # nothing written for a bad input


def _solid_video(path: Path, frames: int = 40, fps: int = 10) -> Path:
    """A small H.264 MP4 with its index first (faststart), so a copy cut short still opens, as a partial download does."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.codec_context.gop_size = fps
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), (i * 5) % 255, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _garbled_copy(src: Path, dst: Path) -> Path:
    """The same container and timing, every packet's data replaced by a slice no decoder can read."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        video = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is None:
                continue
            garbage = av.Packet(b"\x00\x00\x00\x01\x65" + bytes(packet.size))
            garbage.pts, garbage.dts, garbage.time_base, garbage.is_keyframe = packet.pts, packet.dts, packet.time_base, packet.is_keyframe
            garbage.stream = video
            out.mux(garbage)
    return dst


def test_a_file_cut_short_is_reported_incomplete_with_exit_3(tmp_path: Path):
    whole = _solid_video(tmp_path / "whole.mp4")
    half = tmp_path / "half.mp4"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    proc = run_analyze(str(whole), "--out", str(tmp_path / "whole"), "--arch", "tiny", "--fps", "5")
    assert proc.returncode == 0 and read_analysis(tmp_path / "whole").complete  # the same file whole: complete
    proc = run_analyze(str(half), "--out", str(tmp_path / "half"), "--arch", "tiny", "--fps", "5")
    assert proc.returncode == 3, proc.stderr[-2000:]
    analysis = read_analysis(tmp_path / "half")
    assert not analysis.complete and 0 < analysis.frames_analysed < 20
    assert "decoding stopped early" in analysis.error and "of the 20 frames" in analysis.error
    assert "INCOMPLETE: decoding stopped early" in proc.stdout and "Traceback" not in proc.stderr


def test_a_file_whose_frames_cannot_be_decoded_is_an_error_not_no_faces(tmp_path: Path):
    garbled = _garbled_copy(_solid_video(tmp_path / "whole.mp4"), tmp_path / "garbled.mp4")
    proc = run_analyze(str(garbled), "--out", str(tmp_path / "out"), "--arch", "tiny", "--fps", "5")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no faces found" not in proc.stdout and "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert line.startswith("streamguard: error:") and str(garbled) in line and "no frame could be decoded" in line
