"""`streamguard analyze VIDEO --out DIR`: offline analysis of a file, with a report.

It takes `run`'s model and scoring options; `--redis-url` and `--duration` do not
apply (events go to events.jsonl, and the whole file is analysed), so they are not
offered. Exit codes: 0 ok, 2 bad input (not a video, no frame of it decodable, bad
config or checkpoint), 3 decoding failed or stopped part-way, e.g. a file cut short
(`complete: false`; the report of the part analysed is still written).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamguard.commandline import EXIT_STREAM_FAILED, check_sources
from streamguard.config import StreamConfig, load_config
from streamguard.report.html import format_time
from streamguard.report.probe import probe_video

if TYPE_CHECKING:  # the pipeline's imports (torch, mediapipe, scipy) load only when analysing
    from streamguard.report.verdicts import AnalysisV1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="analyse a video file as fast as possible; write events, scores, verdicts and an HTML report",
        description="Run the live pipeline over a video file without dropping frames and write events.jsonl, "
        "scores.csv, verdicts.json, timeline.png and report.html into --out.",
    )
    p.add_argument("video", type=Path, help="the video file")
    p.add_argument("--out", type=Path, required=True, help="folder for the outputs (created if missing)")
    p.add_argument("--config", type=Path, help="YAML config (see configs/streamguard.yaml)")
    p.add_argument("--checkpoint", type=Path, help="FSFM or streamguard checkpoint (.pth)")
    p.add_argument("--arch", choices=["tiny", "small", "base", "large"], help="ViT variant (default: from the checkpoint)")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="CPU inference precision")
    p.add_argument("--threshold", type=float, help="alert threshold on the window score, 0..1")
    p.add_argument("--window", type=float, help="sliding window length in seconds")
    p.add_argument("--fps", type=float, help="frames analysed per second of video")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_analyze)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields set on the command line (dotted paths; None = not given)."""
    return {
        "model.checkpoint": args.checkpoint and str(args.checkpoint),
        "model.arch": args.arch,
        "model.precision": args.precision,
        "scoring.threshold": args.threshold,
        "scoring.window_s": args.window,
        "ingest.analysis_fps": args.fps,
    }


def cmd_analyze(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, overrides(args))
    check_sources(cfg, [StreamConfig(name="video", url=str(args.video))])  # a FIFO or device would never end
    probe_video(args.video, cfg.ingest.analysis_fps)  # a wrong path is reported before torch and mediapipe load
    from streamguard.report.analyze import analyze

    analysis = asyncio.run(analyze(args.video, args.out, cfg))
    print(summary(analysis, args.out))
    return 0 if analysis.complete else EXIT_STREAM_FAILED


def summary(analysis: AnalysisV1, out: Path) -> str:
    """The verdict table printed at the end, with where the report is."""
    lines = []
    if not analysis.model.trained:
        lines.append("*** UNTRAINED MODEL: these scores mean NOTHING (give --checkpoint PATH) ***")
    if not analysis.complete:
        lines.append(f"*** INCOMPLETE: {analysis.error} ***")
    lines.append(f"{'identity':>8}  {'verdict':<12} {'video':>6} {'window':>6} {'samples':>7}  {'seen':<17} alerts")
    for v in analysis.identities:
        window = "-" if v.max_window_score is None else f"{v.max_window_score:.3f}"
        seen = f"{format_time(v.first_s)}-{format_time(v.last_s)}"
        lines.append(
            f"{v.identity:>8}  {v.verdict:<12} {v.video_score:>6.3f} {window:>6} {v.samples:>7}  {seen:<17} {len(v.alerts)}"
        )
    if not analysis.identities:
        lines.append("no faces found")
    lines.append(f"report: {out / 'report.html'}")
    return "\n".join(lines)
