"""Engine commands: `export-onnx`, `quantize`, `build-engine`, and `bench model`.

Each writes an engine file plus its sidecar (PATH.json) and prints one line saying
what it wrote; `--engine PATH` on `run` (and the other pipeline commands) runs it.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from streamguard.config import IngestConfig
from streamguard.errors import ConfigError

log = logging.getLogger(__name__)

RESULTS = Path("benchmarks/results")
ARCHS = ["tiny", "small", "base", "large"]


def _wrote(path: Path, what: str) -> None:
    print(f"wrote {path} ({what}, {path.stat().st_size / 1e6:.1f} MB) and {path.with_suffix('.json')}")


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from streamguard.inference.export import export_onnx
    from streamguard.model.checkpoint import load_checkpoint, untrained_model

    if args.checkpoint is None:
        log.warning("no --checkpoint: exporting untrained (random) %s weights; their scores mean nothing", args.arch or "base")
        loaded = untrained_model(args.arch or "base", seed=0, img_size=args.img_size)
    else:
        loaded = load_checkpoint(args.checkpoint, arch=args.arch, img_size=args.img_size)
    out = export_onnx(loaded, args.out, threshold=args.threshold, opset=args.opset)
    _wrote(out, f"{loaded.meta.name}, digest {loaded.meta.digest}, fp32")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from streamguard.inference.quantize import quantize_onnx

    out = quantize_onnx(args.onnx, args.out)
    _wrote(out, "int8 weights, onnxruntime dynamic quantization")
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    from streamguard.inference.tensorrt_engine import BuildOptions, build_engine

    options = BuildOptions(
        fp16=args.fp16,
        min_batch=args.min_batch,
        opt_batch=args.opt_batch,
        max_batch=args.max_batch,
        workspace_gb=args.workspace_gb,
        timing_cache=args.timing_cache,
    )
    out = build_engine(args.onnx, args.out, options)
    _wrote(out, f"TensorRT {'fp16' if args.fp16 else 'fp32'}, batch {args.min_batch}..{args.max_batch}")
    return 0


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--batch expects comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--batch sizes must be >= 1, got {text!r}")
    return values


def _word_list(text: str | None, allowed: list[str], flag: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    words = tuple(w.strip() for w in text.split(","))
    unknown = [w for w in words if w not in allowed]
    if unknown:
        raise ConfigError(f"{flag}: unknown {unknown[0]!r}; choose from {', '.join(allowed)}")
    return words


def cmd_bench_model(args: argparse.Namespace) -> int:
    from streamguard.inference.bench import BenchOptions, plot, run_bench, table
    from streamguard.inference.engine import resolve_device

    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    if not args.analysis_fps > 0:
        raise ConfigError(f"--analysis-fps must be > 0, got {args.analysis_fps}")
    opts = BenchOptions(
        arch=args.arch,
        device=resolve_device(args.device),
        batches=_int_list(args.batch),
        repeats=args.repeats,
        backends=_word_list(args.backend, ["torch", "onnxruntime", "tensorrt"], "--backend"),
        precisions=_word_list(args.precision, ["fp32", "bf16", "fp16", "int8"], "--precision"),
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


def _bench_subparsers(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `bench` command's own subcommands, whichever module registered `bench` first."""
    bench = subparsers.choices.get("bench")
    if bench is None:
        bench = subparsers.add_parser("bench", help="benchmarks: printed as a table and a JSON line")
        return bench.add_subparsers(dest="bench_command", required=True)
    return next(a for a in bench._actions if isinstance(a, argparse._SubParsersAction))


def _log_level(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--log-level", default=default, choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export-onnx", help="export a checkpoint to ONNX (uint8 crops in, p_fake and embedding out) + sidecar JSON")
    p.add_argument("--checkpoint", type=Path, help="FSFM or streamguard checkpoint (default: untrained weights, for testing)")
    p.add_argument("--out", type=Path, required=True, help="PATH.onnx; the sidecar goes to PATH.json")
    p.add_argument("--arch", choices=ARCHS, help="ViT variant (default: from the checkpoint)")
    p.add_argument("--threshold", type=float, help="calibrated decision threshold to record in the sidecar")
    p.add_argument("--img-size", type=int, default=224, help="crop size the graph takes (default 224)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    _log_level(p, "INFO")
    p.set_defaults(func=cmd_export_onnx)

    p = subparsers.add_parser("quantize", help="int8 version of an exported ONNX engine (onnxruntime dynamic quantization)")
    p.add_argument("--onnx", type=Path, required=True, help="an fp32 engine written by export-onnx")
    p.add_argument("--out", type=Path, required=True, help="PATH.onnx for the int8 engine; sidecar PATH.json")
    _log_level(p, "INFO")
    p.set_defaults(func=cmd_quantize)

    p = subparsers.add_parser("build-engine", help="build a TensorRT plan from an exported ONNX engine (needs TensorRT 10 and a GPU)")
    p.add_argument("--onnx", type=Path, required=True, help="an fp32 engine written by export-onnx")
    p.add_argument("--out", type=Path, required=True, help="engines/NAME.plan; sidecar engines/NAME.json")
    p.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True, help="allow FP16 kernels (default on)")
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--opt-batch", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace limit in GiB")
    p.add_argument("--timing-cache", type=Path, help="timing cache file, read and updated (default: trt_timing.cache beside --out)")
    _log_level(p, "INFO")
    p.set_defaults(func=cmd_build_engine)

    p = _bench_subparsers(subparsers).add_parser("model", help="engines side by side: ms per crop, crops/s, share of this machine's matmul roofline")
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
    _log_level(p, "WARNING")
    p.set_defaults(func=cmd_bench_model)
