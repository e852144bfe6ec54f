"""Analyse one video file with the live pipeline, as fast as the machine allows.

"The same pipeline": `Pipeline` runs unchanged, with the file read at full speed
(`ingest.realtime` false, so the reader waits for analysis instead of dropping
frames), a `JsonlSink` in place of Redis and a `SampleRecorder` on its per-sample
hook. The batcher does not wait for more crops (`max_wait_ms` 0): with one stream
whose frames go one at a time, waiting could only add time. Everything else (fps,
detector, tracker, crops, model, window, thresholds) comes from the same config as
`run`, so the events match what a live run of the video would publish.

Outputs in the `out` folder: events.jsonl, scores.csv, verdicts.json, timeline.png,
report.html, thumbnails/identity_<id>.jpg.

Honest results: a file whose frames cannot be decoded at all is an error (SourceError,
exit 2), not a report of "no faces found"; one whose decoding stops well before the
frames its container announces (a file cut short, damaged data: FFmpeg treats both as
the end of the file) is reported `complete: false` with the frames analysed and
expected (exit 3), not as a whole analysis.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from streamguard.events import EventV1, ModelInfo, StreamEventV1
from streamguard.config import Config, ScoringConfig, StreamConfig
from streamguard.app import running
from streamguard.errors import SourceError
from streamguard.pipeline import Pipeline, StreamReport
from streamguard.redact import redact_url
from streamguard.report.html import render_report
from streamguard.report.probe import VideoInfo, probe_video
from streamguard.report.recorder import JsonlSink, SampleRecorder, Thumbnail
from streamguard.report.timeline import plot_timeline
from streamguard.report.verdicts import AnalysisV1, IdentityScores, identity_verdict, scores_by_identity

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25
MISSING_TOLERANCE = 0.02  # frames analysed may fall this fraction (and 1 frame) short of the container's count
THUMBNAIL_DIR = "thumbnails"


def stream_name(path: Path) -> str:
    """A valid stream name from the file name (events carry it)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)[:64] or "video"


def offline_config(cfg: Config, video: Path) -> Config:
    """`cfg` for one file read at full speed without dropping frames."""
    offline = cfg.model_copy(deep=True)
    offline.ingest.realtime = False
    offline.batcher.max_wait_ms = 0.0
    offline.redis.thumbnails = False  # no Redis to hold them; the report keeps its own
    offline.streams = [StreamConfig(name=stream_name(video), url=str(video))]
    return offline


@dataclass(frozen=True)
class RunResult:
    """What one pipeline run over the file produced, and the scoring that applied."""

    report: StreamReport
    model: ModelInfo
    scoring: ScoringConfig  # with the stream's overrides
    threshold: float
    threshold_source: str
    recorder: SampleRecorder
    events: list[EventV1 | StreamEventV1]  # face verdicts and stream state changes, in order


async def analyze(video: Path, out: Path, cfg: Config) -> AnalysisV1:
    """Run the pipeline over `video` and write every output into `out`; return the verdicts."""
    info = probe_video(video, cfg.ingest.analysis_fps)  # a bad file fails before the model loads
    cfg = offline_config(cfg, video)
    out.mkdir(parents=True, exist_ok=True)
    recorder = SampleRecorder()
    sink = JsonlSink(out / "events.jsonl")
    with logging_redirect_tqdm(), tqdm(total=info.expected_frames, desc=video.name, unit="frame") as bar:
        async with running(cfg, sink, on_sample=recorder) as app:
            pipeline = app.pipeline
            progress = asyncio.create_task(_follow(pipeline, bar), name="progress")
            try:
                await pipeline.wait(asyncio.Event())  # until the file's stream ends
            finally:
                progress.cancel()
                await asyncio.gather(progress, return_exceptions=True)
            (worker,) = pipeline.workers.values()
        (report,) = app.reports
        if report.error is None and bar.total is not None:
            bar.total = report.frames_analysed  # the estimate is exact only at a constant frame rate
        bar.update(report.frames_analysed - bar.n)
    if report.frames_analysed == 0 and report.error is None:
        raise SourceError(
            f"{video}: no frame could be decoded{f' (the container announces {info.expected_frames} at this fps)' if info.expected_frames else ''}: "
            "the video data is damaged or in a form FFmpeg cannot decode"
        )
    scorer = worker.scorer
    run = RunResult(report, pipeline.model_info, scorer.cfg, scorer.threshold, scorer.threshold_source, recorder, sink.events)
    return write_report(out, video, info, cfg, run)


def stopped_early(frames_analysed: int, info: VideoInfo) -> str | None:
    """Why the run does not cover the file, when it analysed clearly fewer frames than the container announces."""
    expected = info.expected_frames
    if not expected or frames_analysed >= expected - max(1, MISSING_TOLERANCE * expected):
        return None
    return (f"decoding stopped early: {frames_analysed} of the {expected} frames the container announces were analysed "
            "(the file is cut short or its data is damaged)")


async def _follow(pipeline: Pipeline, bar: tqdm) -> None:
    """Move the bar to the frames analysed so far (the pipeline counts them per stream)."""
    while True:
        workers = list(pipeline.workers.values())
        bar.update(sum(w.frames_analysed for w in workers) - bar.n)
        bar.set_postfix(faces=sum(w.faces for w in workers), events=sum(w.events for w in workers), refresh=False)
        await asyncio.sleep(PROGRESS_INTERVAL_S)


def write_report(out: Path, video: Path, info: VideoInfo, cfg: Config, run: RunResult) -> AnalysisV1:
    """scores.csv, thumbnails, verdicts.json, timeline.png and report.html from one run."""
    scores = scores_by_identity(run.recorder.rows, run.scoring)
    write_scores_csv(out / "scores.csv", scores)
    thumbnails = write_thumbnails(out / THUMBNAIL_DIR, run.recorder.thumbnails)
    verdicts = [
        identity_verdict(
            s,
            [e for e in run.events if isinstance(e, EventV1) and e.track == identity],
            run.scoring,
            run.threshold,
            f"{THUMBNAIL_DIR}/{thumbnails[identity].name}",
            run.recorder.thumbnails[identity].t,
        )
        for identity, s in scores.items()
    ]
    error = run.report.error or stopped_early(run.report.frames_analysed, info)
    analysis = AnalysisV1(
        video=redact_url(str(video)),  # the operator's path as given, but one line (controls escaped)
        stream=cfg.streams[0].name,
        duration_s=info.duration_s,
        frames_analysed=run.report.frames_analysed,
        complete=error is None,
        error=error,
        model=run.model,
        analysis_fps=cfg.ingest.analysis_fps,
        threshold=run.threshold,
        threshold_source=run.threshold_source,
        scoring=run.scoring,
        events=len(run.events),
        identities=verdicts,
    )
    (out / "verdicts.json").write_text(analysis.to_json() + "\n", encoding="utf-8")
    png = out / "timeline.png"
    shown = plot_timeline(
        png, scores, verdicts, run.scoring, run.threshold, title=f"{video.name}: score over time per identity",
        duration_s=info.duration_s, untrained=not run.model.trained,
    )
    jpegs = {identity: path.read_bytes() for identity, path in thumbnails.items()}
    html = render_report(analysis, png.read_bytes(), jpegs, shown)
    (out / "report.html").write_text(html, encoding="utf-8")
    return analysis


def write_scores_csv(path: Path, scores: dict[int, IdentityScores]) -> None:
    """One row per sample, by time then identity: time_s, identity, p_fake, window_score, window_samples."""
    rows = sorted(
        (float(t), s.identity, float(p), float(w), int(n))
        for s in scores.values()
        for t, p, w, n in zip(s.t, s.p_fake, s.window, s.window_n)
    )
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["time_s", "identity", "p_fake", "window_score", "window_samples"])
        writer.writerows(rows)


def write_thumbnails(folder: Path, thumbnails: dict[int, Thumbnail]) -> dict[int, Path]:
    """One JPEG per identity (replacing those of an earlier run); returns their paths."""
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("identity_*.jpg"):
        stale.unlink()
    paths = {}
    for identity, thumb in thumbnails.items():
        path = folder / f"identity_{identity}.jpg"
        Image.fromarray(thumb.crop).save(path, quality=90)
        paths[identity] = path
    return paths
