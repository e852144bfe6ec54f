"""How fast `streamguard analyze` gets through a video, per model size.

Runs the whole command path (probe, model load, pipeline without dropping frames,
report) on the 30 s two-face sample and reports video seconds analysed per wall
second ("x realtime"; above 1 it is faster than playing the video), frames and crops
per second, and the CPU seconds the process used per video second (less sensitive
than wall time when other jobs share the machine; the load average is recorded).
Prints a table and one JSON line.

    .venv/bin/python benchmarks/bench_analyze.py [--archs tiny,small,base] [--fps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from streamguard.config import load_config
from streamguard.report.analyze import analyze
from streamguard.samples import make_two_face_video

SAMPLE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamguard" / "bench_two_faces_30s.mp4"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_one(video: Path, arch: str, fps: float) -> dict:
    cfg = load_config(None, {"model.arch": arch, "ingest.analysis_fps": fps}, environ={})
    with tempfile.TemporaryDirectory() as out:
        load = os.getloadavg()[0]
        cpu_before, started = cpu_seconds(), time.perf_counter()
        analysis = asyncio.run(analyze(video, Path(out), cfg))
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    crops = sum(v.samples for v in analysis.identities)
    return {
        "arch": arch,
        "fps": fps,
        "video_s": analysis.duration_s,
        "wall_s": round(wall, 2),
        "x_realtime": round(analysis.duration_s / wall, 2),
        "frames_per_s": round(analysis.frames_analysed / wall, 2),
        "crops_per_s": round(crops / wall, 2),
        "cpu_s_per_video_s": round(cpu / analysis.duration_s, 2),
        "load_avg_1min": round(load, 2),
        "frames": analysis.frames_analysed,
        "crops": crops,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="tiny,small,base")
    parser.add_argument("--fps", type=float, default=5.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if not SAMPLE.is_file():
        make_two_face_video(SAMPLE, seconds=30.0)
    results = [bench_one(SAMPLE, arch, args.fps) for arch in args.archs.split(",")]
    print(f"\n{'arch':<6} {'fps':>4} {'video s':>8} {'wall s':>7} {'x realtime':>10} {'frames/s':>9} {'crops/s':>8} "
          f"{'cpu s/video s':>13} {'load':>5}")
    for r in results:
        print(
            f"{r['arch']:<6} {r['fps']:>4g} {r['video_s']:>8.1f} {r['wall_s']:>7.1f} {r['x_realtime']:>10.2f} "
            f"{r['frames_per_s']:>9.1f} {r['crops_per_s']:>8.1f} {r['cpu_s_per_video_s']:>13.2f} {r['load_avg_1min']:>5.1f}"
        )
    print(json.dumps({"bench": "analyze", "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                      "results": results}))


if __name__ == "__main__":
    main()
