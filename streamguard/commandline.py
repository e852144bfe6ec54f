"""What every `streamguard` subcommand shares: exit codes, the pipeline options and
how they override the config.

It sits below `cli.py` so that the modules adding subcommands (and the lab's
`streamguard bench`) take these from here instead of importing the command itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamguard.errors import ConfigError

if TYPE_CHECKING:
    from streamguard.config import Config, StreamConfig

EXIT_BAD_INPUT = 2
EXIT_STREAM_FAILED = 3
EXIT_INTERRUPTED = 130


def add_pipeline_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config (see configs/streamguard.yaml)")
    p.add_argument("--checkpoint", type=Path, help="FSFM or streamguard checkpoint (.pth)")
    p.add_argument("--arch", choices=["tiny", "small", "base", "large"], help="ViT variant (default: from the checkpoint)")
    p.add_argument("--engine", type=Path, help="engine file run as is: .pth/.pt torch, .onnx onnxruntime, .plan TensorRT")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"],
                   help="how a checkpoint runs (auto: CPU onnxruntime int8 for trained weights, CUDA torch fp16)")
    p.add_argument("--redis-url", help="redis://host:port/db (default: an embedded redis-server)")
    p.add_argument("--threshold", type=float, help="alert threshold on the window score, 0..1")
    p.add_argument("--window", type=float, help="sliding window length in seconds")
    p.add_argument("--fps", type=float, help="frames analysed per second per stream")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--http", metavar="HOST:PORT", help="serve the control API, WHIP ingest and /metrics, e.g. 127.0.0.1:8080")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def pipeline_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the pipeline options set (None: not given, the config's value stands)."""
    return {
        "model.checkpoint": args.checkpoint and str(args.checkpoint),
        "model.arch": args.arch,
        "model.engine": getattr(args, "engine", None) and str(args.engine),  # commands without --engine lack it
        "model.precision": args.precision,
        "redis.url": args.redis_url,
        "scoring.threshold": args.threshold,
        "scoring.window_s": args.window,
        "ingest.analysis_fps": args.fps,
        "http.bind": args.http,
    }


def check_sources(cfg: Config, streams: list[StreamConfig]) -> None:
    """The source policy on the operator's streams and call servers (command line and config): ConfigError
    naming the stream or connector if refused."""
    from streamguard.ingest.policy import SourcePolicy, SourceRefused

    policy = SourcePolicy(cfg.sources)
    named = [(f"stream {s.name}", s.url) for s in streams] + [(f"connector {j.name}", j.url) for j in cfg.connectors.janus]
    for what, url in named:
        try:
            policy.check(url, "cli")
        except SourceRefused as err:
            raise ConfigError(f"{what}: {err}") from None
