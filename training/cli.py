"""The `streamguard-train` command: prepare crops, fit, evaluate, export.

  prepare     a CSV manifest or DeepfakeBench JSON -> face crops + index.csv (the runtime's detector and cropper)
  sample-set  a labelled set drawn from the real faces inside installed packages (reals + self-blended fakes)
  fit         train from configs/train/NAME.yaml; resumes in its folder
  eval        metrics on an index; writes the threshold at a target false-positive rate into the checkpoint
  export      checkpoint -> engines/NAME/model.onnx + model.json (+ model.plan where TensorRT exists)

User errors print one line, `streamguard-train: error: ...`, and exit 2 without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# mediapipe/TFLite log through glog/absl; keep their start-up chatter off the console.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from streamguard.cli import run_command  # noqa: E402
from streamguard.errors import ConfigError  # noqa: E402

log = logging.getLogger("streamguard.train")


def cmd_prepare(args: argparse.Namespace) -> int:
    from streamguard.config import load_config
    from training.prepare import PrepareOptions, prepare

    if args.fps is not None and args.fps <= 0:
        raise ConfigError(f"--fps must be > 0, got {args.fps}")
    if args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    runtime = load_config(args.config, environ={})  # the runtime's detector and crop settings: no train/serve skew
    opts = PrepareOptions(frames=args.frames, fps=args.fps, detector=runtime.detector, crop=runtime.crop)
    s = prepare(args.manifest, args.out, opts, workers=args.workers, root=args.root, compression=args.compression)
    print(f"{s.videos} videos ({s.processed} processed now), {s.crops} crops; index: {s.index}")
    if s.no_face:
        print(f"{len(s.no_face)} video(s) with no face in any sampled frame (listed in {args.out / 'no_face.txt'}):")
        for path in s.no_face[:10]:
            print(f"  {path}")
    for line in s.failed:
        print(f"FAILED {line}")
    return 0


def cmd_sample_set(args: argparse.Namespace) -> int:
    from training.config import IDENTITIES, SampleFacesConfig
    from training.sample_faces import write_sample_set

    names = [n.strip() for n in args.identities.split(",") if n.strip()]
    unknown = sorted(set(names) - set(IDENTITIES))
    if unknown or not names:
        raise ConfigError(f"--identities: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(IDENTITIES)}")
    cfg = SampleFacesConfig(identities=names, reals=args.reals, fakes=args.fakes, seed=args.seed)  # type: ignore[arg-type]
    index = write_sample_set(args.out, cfg, args.size, split=args.split)
    print(f"wrote {args.reals} real and {args.fakes} self-blended crops of {', '.join(names)}; index: {index}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from training.config import load_train_config, parse_set_arg
    from training.fit import fit

    overrides = dict(parse_set_arg(a) for a in args.set or [])
    if args.out is not None:
        overrides["run.out_dir"] = str(args.out)
    cfg = load_train_config(args.config, overrides)
    result = fit(cfg)
    auc = f"; validation frame AUC {result.val_frame_auc:.3f}" if result.val_frame_auc is not None else ""
    print(f"trained {result.epochs_done} epoch(s){auc}; checkpoint: {result.checkpoint}; log and plot in {result.out_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate, format_table

    if not 0 < args.target_fpr < 1:
        raise ConfigError(f"--target-fpr must be between 0 and 1, got {args.target_fpr}")
    result = evaluate(
        args.checkpoint, args.data, split=args.split, out_dir=args.out, target_fpr=args.target_fpr,
        write=not args.no_write, device=args.device, workers=args.workers,
    )
    print(format_table(result))
    where = "" if args.no_write else f", written into {result.checkpoint}"
    print(f"threshold at {args.target_fpr:.1%} false positives on real videos: {result.threshold:.4f}{where}")
    print(f"report, scores and ROC curve in {result.out_dir}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.export import export_engine

    result = export_engine(args.checkpoint, args.out, tensorrt=not args.no_tensorrt)
    print(f"wrote {result.onnx} and {result.onnx.with_suffix('.json')}")
    if result.plan is not None:
        print(f"wrote {result.plan}")
    elif result.plan_skipped:
        print(f"no TensorRT plan: {result.plan_skipped}")
    print(f"run it: streamguard run --engine {result.onnx} --stream NAME=URL")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamguard-train", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="videos -> face crops + index.csv, with the runtime's detector and cropper")
    p.add_argument(
        "--manifest", type=Path, required=True, help="CSV (path,label,manipulation,source,split) or DeepfakeBench JSON"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for crops/, videos/ and index.csv")
    p.add_argument("--frames", type=int, default=32, help="frames per video, spread uniformly (default 32)")
    p.add_argument("--fps", type=float, help="sample at this rate instead of --frames")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (0 = in this process)")
    p.add_argument("--root", type=Path, help="where relative paths start (default: the manifest's folder)")
    p.add_argument("--compression", default="c23", help="DeepfakeBench FaceForensics++ level (default c23)")
    p.add_argument(
        "--config", type=Path, help="runtime YAML whose detector and crop settings to use (default: the runtime's defaults)"
    )
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("sample-set", help="a labelled crop set from the real faces shipped in packages")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--identities", default="astronaut,grace_hopper,cameraman", help="comma-separated")
    p.add_argument("--reals", type=int, default=256)
    p.add_argument("--fakes", type=int, default=256, help="self-blended fakes")
    p.add_argument("--seed", type=int, default=1, help="another seed = new poses and new blends")
    p.add_argument("--size", type=int, default=224, help="crop side in pixels")
    p.add_argument("--split", default="test", help="value of the index's split column")
    p.set_defaults(func=cmd_sample_set)

    p = sub.add_parser("fit", help="train from a config; resumes in its output folder")
    p.add_argument("--config", type=Path, required=True, help="configs/train/NAME.yaml")
    p.add_argument("--out", type=Path, help="run folder (default: run.out_dir of the config)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. optim.epochs=3 (repeatable)"
    )
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("eval", help="metrics, ROC curve, and the calibrated threshold")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="index.csv")
    p.add_argument("--split", help="only rows of this split (default: all rows)")
    p.add_argument("--out", type=Path, help="report folder (default: beside the checkpoint)")
    p.add_argument("--target-fpr", type=float, default=0.01, help="false-positive rate on real videos for the threshold")
    p.add_argument("--no-write", action="store_true", help="do not write the threshold into the checkpoint")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="checkpoint -> the runtime's engine folder (ONNX + sidecar, TensorRT plan if possible)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="engine folder, e.g. engines/NAME")
    p.add_argument("--no-tensorrt", action="store_true", help="skip the TensorRT plan even where TensorRT exists")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command("streamguard-train", build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
