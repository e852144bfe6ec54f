"""Detection cost vs tracking quality: the face stage with the detector on every k-th frame.

    .venv/bin/python benchmarks/bench_tracking.py [--every 1,2,3,5] [--reid] [--out benchmarks/results]

For each k and each sequence with ground truth (the demo's two-face sample, 20 s at
1280x720, and the generated scenes of `lab.scenes`) it runs
`FaceStage` as the pipeline does and reports the stage's time per analysed frame
(detection frames and predicted frames apart), how well the faces' boxes sit on
the truth (mean IoU: drift of the predicted boxes), the share of visible faces
delivered, and ID switches / fragmentations. `--reid` also feeds embeddings of an
untrained tiny model to `reidentify`. Prints a table and one JSON line; writes
tracking.json and tracking.png to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from streamguard.config import CropConfig, DetectorConfig, TrackerConfig
from lab import scenes as sequences
from lab.mot import MotAccumulator
from streamguard.faces.stage import FaceStage
from streamguard.types import Frame


def run_case(seq: sequences.Sequence, every: int, engine) -> dict[str, float | int | str]:
    acc = MotAccumulator()
    det_ms, pred_ms = [], []
    frames = [(float(t), *seq.frame(float(t))) for t in seq.times()]  # rendering is not timed
    with FaceStage(seq.name, DetectorConfig(detect_every=every), TrackerConfig(), CropConfig()) as stage:
        for i, (t, rgb, truth) in enumerate(frames):
            start = time.perf_counter()
            faces, _ = stage.process(Frame(seq.name, t, t, rgb))
            (det_ms if i % every == 0 else pred_ms).append(1000 * (time.perf_counter() - start))
            if faces and engine is not None:
                _, embeddings = engine.infer(np.stack([f.crop for f in faces]))
                faces = stage.reidentify(faces, embeddings)
            acc.update(truth.ids, truth.boxes, truth.visible,
                       np.array([f.track for f in faces]), np.array([f.box for f in faces]).reshape(-1, 4))
    c = acc.counts()
    return {
        "sequence": seq.name, "detect_every": every, "frames": c.frames,
        "ms_per_frame": round(float(np.mean(det_ms + pred_ms)), 2),
        "ms_detect_frame": round(float(np.mean(det_ms)), 2),
        "ms_predict_frame": round(float(np.mean(pred_ms)), 2) if pred_ms else None,
        "delivered": round(c.matches / max(c.objects, 1), 3),
        "mean_iou": round(c.mean_iou, 3),
        "id_switches": c.id_switches, "fragmentations": c.fragmentations, "false_positives": c.false_positives,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ms, ax_iou) = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["sequence"] for r in rows):
        rs = [r for r in rows if r["sequence"] == name]
        ks = [r["detect_every"] for r in rs]
        ax_ms.plot(ks, [r["ms_per_frame"] for r in rs], marker="o", label=name)
        ax_iou.plot(ks, [r["mean_iou"] for r in rs], marker="o", label=name)
    ax_ms.set(xlabel="detect_every (k)", ylabel="face stage ms per analysed frame", title="Cost")
    ax_iou.set(xlabel="detect_every (k)", ylabel="mean IoU of delivered boxes with truth", title="Drift")
    ax_iou.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", default="1,2,3,5", help="detect_every values, comma-separated")
    parser.add_argument("--reid", action="store_true", help="re-identify with an untrained tiny model's embeddings")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="where tracking.json and tracking.png go")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.every.split(",")]

    engine = None
    if args.reid:
        from streamguard.inference.torch_engine import TorchEngine
        from streamguard.model.checkpoint import untrained_model

        engine = TorchEngine(untrained_model("tiny"), threads=1)  # only its embeddings matter here, not its speed
    seqs = [sequences.two_face_sample(), *(make() for make in sequences.SCENES.values())]
    rows = [run_case(seq, k, engine) for k in tqdm(ks, desc="detect_every") for seq in seqs]

    cols = list(rows[0])
    print(" | ".join(f"{c:>16}" for c in cols))
    for r in rows:
        print(" | ".join(f"{'-' if r[c] is None else r[c]!s:>16}" for c in cols))
    result = {"benchmark": "tracking", "machine": platform.processor() or platform.machine(), "reid": args.reid, "rows": rows}
    print(json.dumps(result))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracking.json").write_text(json.dumps(result, indent=1))
    plot(rows, args.out / "tracking.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
