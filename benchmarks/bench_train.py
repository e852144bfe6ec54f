"""Training benchmarks: ViT-B/16 step time and peak memory, `prepare` throughput, the sbi-demo run.

- step: one full `fit` training step of the FSFM ViT-B/16 at 224 px (augmented crops,
  normalisation, drop path 0.1, CE + batch-all triplet, AdamW with layer-wise lr
  decay, gradient clipping) at each batch size, in fp32 and with autocast (bf16 on
  CPU, fp16 on CUDA). Each configuration runs in its own process, so its peak memory
  is its own: the peak resident set on CPU, torch's peak allocation on CUDA. CPU: batch
  16 and 32; CUDA (when torch sees a GPU): 64 and 128.
- prepare: videos per minute through `streamguard-train prepare` (BlazeFace
  full-range, 32 frames per video, 2 worker processes) on 10 s two-face 720p clips.
- sbi-demo: `fit --config configs/train/sbi-demo.yaml`, then the held-out-identity
  AUC against training time, from its epochs.csv.

    .venv/bin/python benchmarks/bench_train.py [--only step,prepare,sbi-demo] [--batch 16,32] [--precisions fp32,amp]
                                               [--steps 2]

Prints a table per part and one JSON line; writes benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train.json"


def step_config(out: Path, batch: int, amp: str, device: str, steps: int) -> dict:
    faces = {"identities": ["astronaut", "grace_hopper", "cameraman"], "reals": batch, "seed": 0}
    return {
        "name": "bench-step",
        "data": {"img_size": 224, "train": {"sample_faces": faces}, "sbi": True},
        "model": {"family": "fsfm", "arch": "base", "drop_path": 0.1},
        "loss": {"triplet": {"variant": "batch_all"}},
        "batch": {"size": batch, "sampler": "pk", "p": 2},
        "optim": {"epochs": 2, "steps_per_epoch": steps, "amp": amp},
        "run": {"out_dir": str(out), "workers": 0, "device": device, "resume": False},
    }


def measure_step(batch: int, amp: str, device: str, steps: int) -> dict:
    """In this process: one warm-up step, then `steps` timed steps."""
    import torch

    from training.config import TrainConfig
    from training.fit import Trainer

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig.model_validate(step_config(Path(out), batch, amp, device, steps))
        trainer = Trainer(cfg)
        trainer.steps_per_epoch = 1
        trainer.train_epoch()  # warm-up: allocator, kernels, autotuning
        trainer.steps_per_epoch = steps
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        trainer.train_epoch()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / steps
        peak = (
            torch.cuda.max_memory_allocated() / 2**30
            if trainer.device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        )
    return {
        "device": trainer.device.type,
        "batch": batch,
        "precision": str(trainer.amp or "fp32").replace("torch.", ""),
        "s_per_step": round(seconds, 2),
        "img_per_s": round(batch / seconds, 2),
        "peak_gib": round(peak, 2),
        "threads": torch.get_num_threads(),
    }


def bench_steps(batches: list[int], amps: list[str], steps: int) -> list[dict]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and batches == [16, 32]:
        batches = [64, 128]
    rows = []
    for batch in batches:
        for amp in amps:
            cmd = [sys.executable, __file__, "_step", "--batch", str(batch), "--amp", amp, "--device", device]
            cmd += ["--steps", str(steps)]
            load = os.getloadavg()[0]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({**row, "load_avg": round(load, 1)})
            print(f"  {row['device']} batch {batch:4d} {row['precision']:9s} {row['s_per_step']:8.2f} s/step "
                  f"{row['img_per_s']:7.2f} img/s  peak {row['peak_gib']:.2f} GiB", flush=True)
    return rows


def bench_prepare(videos: int, seconds: float, workers: int) -> dict:
    from streamguard.samples import make_two_face_video
    from training.prepare import PrepareOptions, prepare

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = make_two_face_video(root / "clip.mp4", seconds=seconds)
        lines = ["path,label,manipulation,source,split"]
        for i in range(videos):  # distinct paths, one clip: every video is decoded and detected anew
            (root / f"v{i}.mp4").symlink_to(clip)
            lines.append(f"v{i}.mp4,{'real' if i % 2 else 'fake'},,bench,train")
        (root / "set.csv").write_text("\n".join(lines) + "\n")
        load = os.getloadavg()[0]
        started = time.perf_counter()
        summary = prepare(root / "set.csv", root / "out", PrepareOptions(frames=32), workers=workers)
        wall = time.perf_counter() - started
    return {
        "videos": videos,
        "video_s": seconds,
        "frames_per_video": 32,
        "workers": workers,
        "crops": summary.crops,
        "wall_s": round(wall, 1),
        "videos_per_min": round(60 * videos / wall, 1),
        "load_avg": round(load, 1),
    }


def bench_sbi_demo(out: Path) -> dict:
    from training.config import load_train_config
    from training.fit import fit
    from training.runlog import read_csv

    result = fit(load_train_config(ROOT / "configs" / "train" / "sbi-demo.yaml", {"run.out_dir": str(out)}))
    rows = read_csv(out / "epochs.csv")
    return {
        "out_dir": str(out),
        "plot": str(out / "training.png"),
        "epochs": [
            {
                "epoch": int(r["epoch"]),
                "elapsed_s": float(r["elapsed_s"]),
                "train_loss": round(float(r["train_loss"]), 4),
                "heldout_frame_auc": round(float(r["val_frame_auc"]), 3),
                "heldout_video_auc": round(float(r["val_video_auc"]), 3) if r["val_video_auc"] else None,
            }
            for r in rows
        ],
        "final_heldout_frame_auc": result.val_frame_auc,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="all", choices=["all", "_step"], help=argparse.SUPPRESS)
    parser.add_argument("--only", default="step,prepare,sbi-demo", help="comma-separated parts to run")
    parser.add_argument("--batch", default="16,32", help="batch sizes of the step benchmark (CUDA default: 64,128)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration (after one warm-up step)")
    parser.add_argument(
        "--precisions", default="fp32,amp", help="fp32 and/or amp (bf16 on CPU, fp16 on CUDA); bf16 on a CPU without it is slow"
    )
    parser.add_argument("--amp", default="off", choices=["off", "on"], help=argparse.SUPPRESS)  # of one _step
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--videos", type=int, default=8, help="videos for the prepare benchmark")
    parser.add_argument("--sbi-out", type=Path, default=ROOT / "runs" / "sbi-demo", help="run folder of sbi-demo")
    args = parser.parse_args()
    if args.mode == "_step":  # one configuration, in its own process
        print(json.dumps(measure_step(int(args.batch), args.amp, args.device, args.steps)))
        return 0

    import torch

    parts = {p.strip() for p in args.only.split(",")}
    results: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
    }
    if "step" in parts:
        print("ViT-B/16 training step (224 px):", flush=True)
        amps = [{"fp32": "off", "amp": "on"}[p.strip()] for p in args.precisions.split(",")]
        results["step"] = bench_steps([int(b) for b in args.batch.split(",")], amps, args.steps)
    if "prepare" in parts:
        r = results["prepare"] = bench_prepare(args.videos, 10.0, workers=2)
        print(f"prepare: {r['videos']} videos of {r['video_s']:.0f} s (32 frames each, {r['workers']} workers): "
              f"{r['wall_s']} s, {r['videos_per_min']} videos/min, {r['crops']} crops", flush=True)
    if "sbi-demo" in parts:
        r = results["sbi_demo"] = bench_sbi_demo(args.sbi_out)
        print("sbi-demo: AUC on the held-out identity (Grace Hopper) against training time")
        print(f"{'epoch':>5s} {'minutes':>8s} {'loss':>7s} {'frame AUC':>10s} {'video AUC':>10s}")
        for e in r["epochs"]:
            video = f"{e['heldout_video_auc']:10.3f}" if e["heldout_video_auc"] is not None else f"{'-':>10s}"
            print(f"{e['epoch']:5d} {e['elapsed_s'] / 60:8.1f} {e['train_loss']:7.4f} {e['heldout_frame_auc']:10.3f} {video}")
        print(f"plot: {r['plot']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    RESULTS.write_text(json.dumps({**previous, **results}, indent=2) + "\n")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
