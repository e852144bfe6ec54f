"""`streamguard bench pipeline` and `streamguard bench model`: the benchmark commands.

`streamguard` finds them through the `streamguard.commands` entry point (pyproject.toml),
so the product never imports the lab.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from streamguard.config import IngestConfig
from streamguard.errors import ConfigError

if TYPE_CHECKING:
    from streamguard.inference.contract import Engine

RESULTS = Path("benchmarks/results")
ARCHS = ["tiny", "small", "base", "large"]


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag} expects comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise ConfigError(f"{flag} values must be >= 1, got {text!r}")
    return values


def _words(text: str | None, allowed: list[str], flag: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    words = tuple(w.strip() for w in text.split(","))
    unknown = [w for w in words if w not in allowed]
    if unknown:
        raise ConfigError(f"{flag}: unknown {unknown[0]!r}; choose from {', '.join(allowed)}")
    return words


# How the model runs, not which model: a variant of these gets an engine of its own.
ENGINE_KEYS = ("model.threads", "model.parallel_calls")


def _variants(text: str | None) -> tuple[str, list[str]] | None:
    """`KEY=V1,V2` -> (KEY, [V1, V2]); the variants share one model, so only how it runs may vary (ENGINE_KEYS)."""
    if text is None:
        return None
    key, sep, joined = text.partition("=")
    values = joined.split(",")
    if not sep or not key or not joined or "" in values:
        raise ConfigError(f"--vary takes KEY=V1,V2,... (e.g. ingest.keyframes_only_beyond=1,2), got {text!r}")
    if len(set(values)) < len(values):
        raise ConfigError(f"--vary {key}: each value once (every case runs once per value), got {joined!r}")
    if key.split(".")[0] in ("model", "crop") and key not in ENGINE_KEYS:
        raise ConfigError(
            f"--vary {key}: every variant runs the same model (of model. keys only {', '.join(ENGINE_KEYS)} can vary); "
            f"run the bench once per {key}"
        )
    return key, values


def cmd_bench_pipeline(args: argparse.Namespace) -> int:
    from lab.bench.pipeline import RESOLUTIONS, SERVERS, model_only_throughput, run_bench, stand_in_crops, streams_for_load
    from streamguard.commandline import pipeline_overrides
    from streamguard.config import load_config
    from streamguard.inference.registry import open_engine

    resolutions = args.resolutions.split(",")
    unknown = [r for r in resolutions if r not in RESOLUTIONS]
    if unknown:
        raise ConfigError(f"unknown resolution {unknown[0]!r}; choose from {', '.join(RESOLUTIONS)}")
    overrides = pipeline_overrides(args)
    if args.precision is None and args.engine is None and args.config is None:
        # The engine a trained checkpoint gets by default on a CPU; untrained weights would get torch fp32.
        overrides["model.precision"] = "int8"
    if args.server not in SERVERS:
        raise ConfigError(f"--server: unknown {args.server!r}; choose from {', '.join(SERVERS)}")
    if args.rounds < 1:
        raise ConfigError(f"--rounds must be >= 1, got {args.rounds}")
    if args.keyframe_every <= 0:
        raise ConfigError(f"--keyframe-every must be > 0 seconds, got {args.keyframe_every}")
    if args.overload is not None and not args.overload > 0:
        raise ConfigError(f"--overload must be > 0 (times what the engine alone scores), got {args.overload}")
    cfg = load_config(args.config, overrides)
    vary = _variants(args.vary)
    variants = None
    if vary is not None:
        key, values = vary
        variants = {f"{key}={v}": load_config(args.config, overrides | {key: v}) for v in values}
    engine = open_engine(cfg.model, img_size=cfg.crop.size)
    variant_engines: dict[str, Engine] = {}
    try:
        streams = _ints(args.streams, "--streams")
        if args.overload is not None:
            rate = model_only_throughput(engine, stand_in_crops(cfg.crop.size), cfg.batcher.max_batch)
            streams = [streams_for_load(args.overload, rate, cfg.ingest.analysis_fps)]
            print(f"... --overload {args.overload:g}: the engine alone scores {rate:.1f} crops/s, so {streams[0]} stream(s)",
                  flush=True)
        if vary is not None and vary[0] in ENGINE_KEYS:
            for label, variant_cfg in variants.items():
                variant_engines[label] = open_engine(variant_cfg.model, img_size=variant_cfg.crop.size)
        asyncio.run(run_bench(cfg, engine, streams, resolutions, args.seconds, args.warmup,
                              args.out, args.out / "videos", args.front_end_seconds, variants, args.keyframe_every,
                              args.rounds, variant_engines, tuple(_ints(args.front_end_streams, "--front-end-streams")), server_kind=args.server))
    finally:
        for e in [engine, *variant_engines.values()]:
            e.close()
    return 0


def add_pipeline_bench(bench_sub: argparse._SubParsersAction) -> None:
    from streamguard.commandline import add_pipeline_options

    p = bench_sub.add_parser("pipeline", help="N live RTSP streams through the whole pipeline vs the model alone")
    p.add_argument("--streams", default="1,2,4,8,16", help="stream counts to run, e.g. 1,2,4,8")
    p.add_argument("--overload", type=float, metavar="X",
                   help="instead of --streams: as many streams as offer X times what the engine alone scores (measured first)")
    p.add_argument("--resolutions", default="720p,1080p", help="720p and/or 1080p")
    p.add_argument("--seconds", type=float, default=40.0, help="measured seconds per case (>= 150 adds first/last-minute p99, >= 300 the RSS growth after minute 2)")
    p.add_argument("--warmup", type=float, default=8.0, help="seconds before measuring")
    p.add_argument("--front-end-seconds", type=float, default=20.0,
                   help="seconds of the front end alone (decode + detection, no model) per resolution and stream count (0: skip)")
    p.add_argument("--front-end-streams", default="1,4,8,16",
                   help="stream counts for the front end alone, e.g. 1,4,8: the CPU a host with a fast model needs per stream")
    p.add_argument("--keyframe-every", type=float, default=1.0,
                   help="seconds between keyframes of the generated streams")
    p.add_argument("--vary", metavar="KEY=V1,V2", help="run every case once per value of a config key, back to back "
                   "(an A/B measured side by side), e.g. ingest.keyframes_only_beyond=1,2")
    p.add_argument("--rounds", type=int, default=1, help="passes over all cases (and variants), one after another")
    p.add_argument("--server", default="rtsp", help="what serves the streams: rtsp (GStreamer, as in tests) or flv "
                   "(FLV over TCP from PyAV alone, for a host without GStreamer)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where JSON and PNG go")
    add_pipeline_options(p)
    p.set_defaults(func=cmd_bench_pipeline)


def cmd_bench_model(args: argparse.Namespace) -> int:
    from lab.bench.model import BenchOptions, plot, run_bench, table
    from streamguard.inference.registry import resolve_device

    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    if not args.analysis_fps > 0:
        raise ConfigError(f"--analysis-fps must be > 0, got {args.analysis_fps}")
    opts = BenchOptions(
        arch=args.arch,
        device=resolve_device(args.device),
        batches=tuple(_ints(args.batch, "--batch")),
        repeats=args.repeats,
        backends=_words(args.backend, ["torch", "onnxruntime", "tensorrt"], "--backend"),
        precisions=_words(args.precision, ["fp32", "bf16", "fp16", "int8"], "--precision"),
        cuda_graphs=args.cuda_graphs,
        threads=args.threads,
        img_size=args.img_size,
        checkpoint=args.checkpoint,
        plan=args.plan,
        analysis_fps=args.analysis_fps,
    )
    result = run_bench(opts)
    print(table(result))
    print(json.dumps(result))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench_model_{opts.arch}_{opts.device}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {stem.with_suffix('.json')} and {plot(result, stem.with_suffix('.png'))}")
    return 0


def add_model_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("model", help="engines side by side: ms per crop, crops/s, share of this machine's matmul roofline")
    p.add_argument("--arch", choices=ARCHS, default="base")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--backend", help="comma list of torch, onnxruntime, tensorrt (default: all that run on the device)")
    p.add_argument("--precision", help="comma list of fp32, bf16, fp16, int8 (default: CPU fp32,int8; CUDA fp16,bf16)")
    p.add_argument("--batch", default="1,8,32", help="batch sizes, e.g. 1,8,32")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per engine and batch size (median reported)")
    p.add_argument("--cuda-graphs", choices=["on", "off", "both"], default="both", help="torch on CUDA (default both)")
    p.add_argument("--threads", type=int, help="CPU threads for torch and onnxruntime (default: theirs)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--analysis-fps", type=float, default=IngestConfig().analysis_fps,
                   help="analysed frames per second per stream, for the streams-served estimate (default: the config's)")
    p.add_argument("--checkpoint", type=Path, help="weights to run (default: untrained, seeded)")
    p.add_argument("--plan", type=Path, help="a TensorRT plan to include (CUDA)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and PNG (default benchmarks/results)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_bench_model)


def cmd_bench_cluster(args: argparse.Namespace) -> int:
    from lab.bench.cluster import run_cluster_bench, table
    from lab.netns import PrivateNetwork
    from streamguard.samples import make_two_face_video

    if args.streams < 1 or args.nodes < 1 or args.seconds <= 0:
        raise ConfigError("--streams and --nodes must be >= 1 and --seconds > 0")
    if (why := PrivateNetwork.available()) is not None:
        raise ConfigError(f"bench cluster {why} (its Ray nodes run in a network namespace of their own)")
    video = Path(tempfile.gettempdir()) / "streamguard-bench-two-faces.mp4"
    if not video.is_file():
        make_two_face_video(video, seconds=20.0)
    result = run_cluster_bench(args.streams, args.nodes, args.fps, args.seconds, video)
    print(table(result))
    print(json.dumps(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


def add_cluster_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("cluster", help="run --ray against run --processes at the same load on one machine, and failover time")
    p.add_argument("--streams", type=int, default=4, help="RTSP streams (the two-face sample, looping)")
    p.add_argument("--nodes", type=int, default=2, help="Ray worker nodes of one CPU, one shard each (and --processes N)")
    p.add_argument("--fps", type=float, default=5.0, help="analysed frames per second per stream")
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window of each mode")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_bench_cluster)


def add_model_service_bench(bench_sub: argparse._SubParsersAction) -> None:
    from lab.bench.model_service import add_parser

    add_parser(bench_sub)


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks: printed as a table and a JSON line")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    add_pipeline_bench(bench_sub)
    add_model_bench(bench_sub)
    add_cluster_bench(bench_sub)
    add_model_service_bench(bench_sub)  # lab/bench/model_service.py
