"""What `streamguard run --processes N` buys: analysed fps per stream, 1 worker against N, side by side.

One process carries some 16-32 streams (its GIL: docs/benchmarks.md); past that, workers.
Each case runs `streamguard run --processes P` as a user does, on S live two-face streams
(FLV over TCP from `lab/servers/flv_server.py`, so it runs on a host without
GStreamer) into one embedded Redis, and reads what every stream achieved from the live
scores each worker publishes (`streamguard:scores:<stream>`, every `scores_interval_s`):
an identity's `samples` are its scored frames in the last `window_s`, so samples /
window is the stream's analysed fps, whichever process analysed it. The window opens
once every stream has published scores (all workers up), plus `--settle`.

    .venv/bin/python benchmarks/bench_processes.py [--streams 32,64] [--processes 1,2,4] \\
        [--seconds 30] [--resolution 1080p] [--config gpu.yaml] [--out benchmarks/results/processes.json]

Prints a table and one JSON line: per case the analysed fps per stream (lowest, median,
highest, each stream's the median of its messages in the window), the fairness (largest
deviation from the mean), the streams that published nothing in the window, and the CPU
of the whole run (all workers, start-up included) in cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
import yaml

from streamguard.redis.embedded import EmbeddedRedis
from streamguard.events import ScoresV1
from lab.bench.pipeline import RESOLUTIONS, sample_videos
from streamguard.config import DEFAULT_SCHEMES, load_config
from lab.servers.rtsp import FlvServer

RESULTS = Path(__file__).with_name("results") / "processes.json"
START_TIMEOUT_S = 300.0  # every stream publishing scores: N workers load their models one after another


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for descendants: the run and its workers
    return usage.ru_utime + usage.ru_stime


def allowing_tcp(config: Path | None, folder: Path) -> Path:
    """The runs' config: `config` with tcp:// allowed, the FLV server's URLs (the source policy refuses tcp by default)."""
    data = (yaml.safe_load(config.read_text()) or {}) if config else {}
    sources = data.setdefault("sources", {})
    sources["schemes"] = [*sources.get("schemes", DEFAULT_SCHEMES), "tcp"]
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def run_case(url: str, redis_url: str, config: Path | None, streams: int, processes: int,
                   seconds: float, settle: float) -> dict:
    cfg = load_config(config)
    prefix, window = cfg.redis.scores_channel_prefix, cfg.scoring.window_s
    names = [f"s{i}" for i in range(streams)]
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.psubscribe(f"{prefix}*")
    cmd = [sys.executable, "-m", "streamguard.cli", "run", "--processes", str(processes), "--redis-url", redis_url,
           "--log-level", "WARNING", *(["--config", str(config)] if config else []),
           *(arg for name in names for arg in ("--stream", f"{name}={url}"))]
    cpu0, started = children_cpu_seconds(), time.monotonic()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL)
    rates: dict[str, list[float]] = {name: [] for name in names}  # per stream: samples / window per message
    seen: set[str] = set()
    window_end: float | None = None
    try:
        while window_end is None or time.monotonic() < window_end:
            if proc.returncode is not None:
                raise RuntimeError(f"streamguard run ended early (exit code {proc.returncode})")
            if window_end is None and time.monotonic() - started > START_TIMEOUT_S:
                raise RuntimeError(f"only {len(seen)} of {streams} streams published scores in {START_TIMEOUT_S:.0f} s")
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                continue
            scores = ScoresV1.model_validate_json(message["data"])
            if window_end is None:
                seen.add(scores.stream)
                if len(seen) == streams:  # every worker is up: settle, then measure
                    window_start = time.monotonic() + settle
                    window_end = window_start + seconds
            elif time.monotonic() >= window_start and scores.identities:
                rates[scores.stream].append(statistics.mean(i.samples for i in scores.identities) / window)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 120)
        await pubsub.aclose()
        await client.aclose()
    cores = (children_cpu_seconds() - cpu0) / (time.monotonic() - started)
    fps = {name: statistics.median(r) for name, r in rates.items() if r}
    values = sorted(fps.values())
    mean = statistics.mean(values) if values else 0.0
    return {
        "streams": streams,
        "processes": processes,
        "seconds": seconds,
        "analysed_fps_per_stream": [round(values[0], 2), round(statistics.median(values), 2), round(values[-1], 2)]
        if values else None,
        "fairness_max_dev": round(max(abs(v - mean) / mean for v in values), 3) if mean else None,
        "streams_silent": streams - len(values),
        "cores_whole_run": round(cores, 2),
        "exit_code": proc.returncode,
    }


async def main_async(args: argparse.Namespace) -> list[dict]:
    results = []
    video_dir = args.out.parent / "videos"
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory(prefix="bench-processes-") as folder:
        server = FlvServer(sample_videos(video_dir, [args.resolution]), Path(folder), loop=True)
        config = allowing_tcp(args.config, Path(folder))
        server.start()
        try:
            for streams in args.streams:
                for processes in args.processes:
                    print(f"... {streams} stream(s) in {processes} process(es): {args.seconds:.0f} s", flush=True)
                    results.append(await run_case(server.url(args.resolution), redis_server.url, config, streams,
                                                  processes, args.seconds, args.settle))
        finally:
            server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="32,64", help="stream counts, e.g. 32,64")
    parser.add_argument("--processes", default="1,2,4", help="worker process counts to compare, e.g. 1,2,4")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per case")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after every stream first published, before measuring")
    parser.add_argument("--resolution", default="1080p", choices=sorted(RESOLUTIONS))
    parser.add_argument("--config", type=Path, help="the workers' config (engine, precision, batcher), e.g. CUDA on a GPU host")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.streams = [int(v) for v in args.streams.split(",")]
    args.processes = [int(v) for v in args.processes.split(",")]
    results = asyncio.run(main_async(args))
    print(f"\n{'streams':>7} {'processes':>9} {'analysed fps per stream (low / median / high)':>46} {'fairness':>8} "
          f"{'silent':>6} {'cores (whole run)':>17}")
    for r in results:
        fps = r["analysed_fps_per_stream"]
        shown = " / ".join(f"{v:.2f}" for v in fps) if fps else "-"
        fair = "-" if r["fairness_max_dev"] is None else f"{r['fairness_max_dev']:.2f}"
        print(f"{r['streams']:>7} {r['processes']:>9} {shown:>46} {fair:>8} {r['streams_silent']:>6} {r['cores_whole_run']:>17.2f}")
    doc = {"bench": "processes", "cpus": os.cpu_count(), "resolution": args.resolution,
           "config": str(args.config) if args.config else None, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
