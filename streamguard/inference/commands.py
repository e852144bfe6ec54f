"""Engine commands: `export-onnx`, `quantize` and `build-engine`.

Each writes an engine file plus its sidecar (PATH.json) and prints one line saying
what it wrote; `--engine PATH` on `run` (and the other pipeline commands) runs it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


log = logging.getLogger(__name__)

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
