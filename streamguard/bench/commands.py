"""`streamguard bench pipeline`: the whole-pipeline benchmark (see bench/pipeline.py)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from streamguard.errors import ConfigError

if TYPE_CHECKING:
    from streamguard.inference.engine import Engine

RESULTS = Path("benchmarks/results")


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise ConfigError(f"stream counts must be >= 1, got {text!r}")
    return values


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
    from streamguard.bench.pipeline import RESOLUTIONS, SERVERS, model_only_throughput, run_bench, stand_in_crops, streams_for_load
    from streamguard.cli import _overrides
    from streamguard.config import load_config
    from streamguard.inference.engine import open_engine

    resolutions = args.resolutions.split(",")
    unknown = [r for r in resolutions if r not in RESOLUTIONS]
    if unknown:
        raise ConfigError(f"unknown resolution {unknown[0]!r}; choose from {', '.join(RESOLUTIONS)}")
    overrides = _overrides(args)
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
        streams = _ints(args.streams)
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
                              args.rounds, variant_engines, tuple(_ints(args.front_end_streams)), server_kind=args.server))
    finally:
        for e in [engine, *variant_engines.values()]:
            e.close()
    return 0


def add_pipeline_bench(bench_sub: argparse._SubParsersAction) -> None:
    from streamguard.cli import _add_pipeline_options

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
    _add_pipeline_options(p)
    p.set_defaults(func=cmd_bench_pipeline)


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks: printed as a table and a JSON line")
    add_pipeline_bench(bench.add_subparsers(dest="bench_command", required=True))
