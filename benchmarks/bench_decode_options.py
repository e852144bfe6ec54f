"""What FFmpeg decoder options would save in decoding, and what they cost in pixels.

Decoding is what the front end spends most of its CPU on at 1080p (docs/benchmarks.md,
Whole pipeline), so any decoder shortcut is a candidate lever. A shortcut that changes
the pixels also changes what the detector sees, and a deepfake detector looks at exactly
the fine texture that such shortcuts disturb, so each variant is reported with its error
against the normal decode: PSNR of the RGB frames analysis would take (5 fps).

Decodes bench_ingest's camera-like clip (two faces, sensor-like noise, 25 fps, a keyframe
a second, no B-frames, ~6 Mbit/s at 1080p) in this process, one decoder thread as
the live ingest uses, each variant in turn for `--rounds` rounds so that other load hits
them alike; the CPU time is this thread's (decode plus the RGB conversion of every fifth
frame), per decoded frame.

    .venv/bin/python benchmarks/bench_decode_options.py [--size 1920x1080] [--rounds 3] \
        [--variants "default;skip_loop_filter=all"]

A variant is `;`-separated; `default` is no options, else `name=value[,name=value]` as
FFmpeg's codec options. Prints a table and one JSON line; writes
benchmarks/results/decode_options.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import av
import numpy as np
from bench_ingest import make_clip

from streamguard.config import IngestConfig
from streamguard.ingest.pacing import FpsSampler
from streamguard.ingest.pyav_source import use_live_decoder_threads

RESULTS = Path(__file__).with_name("results") / "decode_options.json"
LIVE = IngestConfig()  # the live ingest's defaults: its decoder threads and analysed fps


def parse_variant(text: str) -> dict[str, str]:
    """'default' -> {}; 'a=1,b=2' -> {'a': '1', 'b': '2'}."""
    if text.strip() == "default":
        return {}
    options = dict(item.split("=", 1) for item in text.split(","))
    return {k.strip(): v.strip() for k, v in options.items()}


def decode(clip: Path, options: dict[str, str]) -> tuple[float, int, list[np.ndarray]]:
    """(CPU seconds, frames decoded, the sampled frames as RGB)."""
    sampled: list[np.ndarray] = []
    with av.open(str(clip)) as container:
        video = container.streams.video[0]
        use_live_decoder_threads(video, LIVE.decode_threads)
        video.codec_context.options = options
        sampler = FpsSampler(LIVE.analysis_fps)  # keeps the frames the live ingest would analyse
        start = time.thread_time()
        n = 0
        for frame in container.decode(video):
            if sampler.keep(float(frame.time)):
                sampled.append(frame.to_ndarray(format="rgb24"))
            n += 1
        return time.thread_time() - start, n, sampled


def psnr(reference: np.ndarray, other: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (inf where identical)."""
    mse = float(np.mean((reference.astype(np.float32) - other.astype(np.float32)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="default;skip_loop_filter=all")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    width, height = (int(v) for v in args.size.split("x"))
    clip = make_clip(width, height)
    names = [v.strip() for v in args.variants.split(";")]
    variants = {name: parse_variant(name) for name in names}
    reference = decode(clip, {})[2]  # also warms the file cache and the decoder's code
    ms_per_frame: dict[str, list[float]] = {name: [] for name in names}
    errors: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, options in variants.items():
            cpu_s, n, frames = decode(clip, options)
            ms_per_frame[name].append(1000 * cpu_s / n)
            if name not in errors:  # the pixels are the same every round
                errors[name] = [psnr(a, b) for a, b in zip(reference, frames, strict=True)]

    base = statistics.median(ms_per_frame[names[0]])
    rows = []
    for name in names:
        median = statistics.median(ms_per_frame[name])
        finite = [e for e in errors[name] if e != float("inf")]
        rows.append({
            "variant": name,
            "ms_per_frame_median": round(median, 3),
            "ms_per_frame_rounds": [round(v, 3) for v in ms_per_frame[name]],
            "cpu_vs_first": round(median / base, 3),
            "psnr_db_min": round(min(finite), 1) if finite else None,
            "psnr_db_median": round(statistics.median(finite), 1) if finite else None,
            "frames_identical": len(errors[name]) - len(finite),
        })
    summary = {"clip": str(clip), "size": args.size, "rounds": args.rounds, "rows": rows}

    print(f"{'variant':<28} {'ms/frame':>9} {'vs first':>9} {'PSNR min':>9} {'PSNR med':>9} {'identical':>10}")
    for r in rows:
        pmin = "-" if r["psnr_db_min"] is None else f"{r['psnr_db_min']:.1f}"
        pmed = "-" if r["psnr_db_median"] is None else f"{r['psnr_db_median']:.1f}"
        print(f"{r['variant']:<28} {r['ms_per_frame_median']:>9.2f} {r['cpu_vs_first']:>9.2f} {pmin:>9} {pmed:>9} "
              f"{r['frames_identical']:>10}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
