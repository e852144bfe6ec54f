"""`eval`: score a checkpoint on an index, report the DeepfakeBench metrics, calibrate the threshold.

Metrics come overall, per source data set and per manipulation type (each
manipulation's fakes against all reals). The alert threshold is chosen where real
*videos* reach the target false-positive rate (default 1%): the runtime alerts on a
window mean of P(fake), which is what a video score is. It is written into the
checkpoint (a streamguard checkpoint in place; anything else gets a calibrated
streamguard copy beside the report), so `streamguard run` uses it with no flag.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from streamguard.errors import ConfigError
from streamguard.model.checkpoint import LoadedModel, save_checkpoint
from training.datasets import CropDataset
from training.device import amp_dtype, pick_device
from training.index import CropRecord, read_index
from training.metrics import Report, report, roc_auc, roc_curve, threshold_at_fpr, video_scores
from training.model import load_trained, training_config_of
from training.predict import predict

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    overall: Report
    by_source: dict[str, Report]
    by_manipulation: dict[str, Report]
    threshold: float
    target_fpr: float
    out_dir: Path
    checkpoint: Path  # where the threshold was written

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_dict(),
            "by_source": {k: v.to_dict() for k, v in self.by_source.items()},
            "by_manipulation": {k: v.to_dict() for k, v in self.by_manipulation.items()},
            "threshold": self.threshold,
            "target_fpr": self.target_fpr,
            "checkpoint": str(self.checkpoint),
        }


def _subset_report(mask: np.ndarray, videos: list[str], y: np.ndarray, p: np.ndarray, threshold: float) -> Report | None:
    y_sub = y[mask]
    if y_sub.all() or not y_sub.any():
        return None  # one class only: no AUC
    return report([v for v, m in zip(videos, mask) if m], y_sub, p[mask], threshold)


def calibrate(videos: list[str], y: np.ndarray, p: np.ndarray, target_fpr: float) -> float:
    """The video-level threshold at `target_fpr` (frame level when every video has one frame)."""
    _, vy, vs = video_scores(videos, y, p)
    if 0 < vy.sum() < len(vy):
        return threshold_at_fpr(vy, vs, target_fpr)
    return threshold_at_fpr(y, p, target_fpr)


def plot_roc(videos: list[str], y: np.ndarray, p: np.ndarray, records: list[CropRecord], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))

    def curve(yy: np.ndarray, ss: np.ndarray, label: str, **style: Any) -> None:
        fpr, tpr, _ = roc_curve(yy, ss)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc(yy, ss):.3f})", **style)

    curve(y, p, "all, frames", lw=2)
    _, vy, vs = video_scores(videos, y, p)
    if 0 < vy.sum() < len(vy):
        curve(vy, vs, "all, videos", lw=2, ls="--")
    manipulations = sorted({r.manipulation for r in records if r.label == "fake"})
    if len(manipulations) > 1:
        for m in manipulations:
            mask = np.array([r.label == "real" or r.manipulation == m for r in records])
            curve(y[mask], p[mask], f"{m}, frames", lw=1, alpha=0.7)
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8)
    ax.set(xlabel="false-positive rate (reals called fake)", ylabel="true-positive rate (fakes caught)", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_threshold(checkpoint: Path, loaded: LoadedModel, threshold: float, summary: dict[str, Any], out_dir: Path) -> Path:
    """Store the threshold (and the evaluation summary) in a streamguard checkpoint."""
    config = training_config_of(checkpoint)
    target = checkpoint if loaded.meta.source == "streamguard" else out_dir / "calibrated.pth"
    meta = replace(loaded.meta, threshold=float(threshold))
    return save_checkpoint(target, LoadedModel(loaded.model, meta), extra={**config, "eval": summary})


def evaluate(
    checkpoint: Path,
    index: Path,
    split: str | None = None,
    out_dir: Path | None = None,
    target_fpr: float = 0.01,
    write: bool = True,
    device: str = "auto",
    workers: int = 2,
) -> EvalResult:
    checkpoint, index = Path(checkpoint), Path(index)
    out_dir = Path(out_dir) if out_dir else checkpoint.parent / f"eval-{index.parent.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_trained(checkpoint)
    records = read_index(index, split)
    if len({r.label for r in records}) < 2:
        raise ConfigError(f"{index}: evaluating needs real and fake crops; all {len(records)} are {records[0].label}")
    dev = pick_device(device)
    data = CropDataset(records, loaded.meta.img_size)
    loader = DataLoader(data, batch_size=64, num_workers=workers)
    p = predict(loaded.model.to(dev), loaded.meta, loader, dev, amp_dtype(dev, "auto"))
    y = data.targets == 0  # fake = positive
    videos = data.videos
    threshold = calibrate(videos, y, p, target_fpr)
    result = EvalResult(
        overall=report(videos, y, p, threshold),
        by_source={},
        by_manipulation={},
        threshold=threshold,
        target_fpr=target_fpr,
        out_dir=out_dir,
        checkpoint=checkpoint,
    )
    for source in sorted({r.source for r in records}):
        if (r := _subset_report(np.array([x.source == source for x in records]), videos, y, p, threshold)) is not None:
            result.by_source[source] = r
    for m in sorted({r.manipulation for r in records if r.label == "fake"}):
        mask = np.array([x.label == "real" or x.manipulation == m for x in records])
        if (r := _subset_report(mask, videos, y, p, threshold)) is not None:
            result.by_manipulation[m] = r
    with (out_dir / "scores.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["crop", "video", "label", "manipulation", "source", "p_fake"])
        writer.writerows([r.crop, r.video, r.label, r.manipulation, r.source, f"{s:.9g}"] for r, s in zip(records, p))
    plot_roc(videos, y, p, records, out_dir / "roc.png")
    if write:
        result.checkpoint = write_threshold(checkpoint, loaded, threshold, result.to_dict(), out_dir)
    (out_dir / "eval.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def format_table(result: EvalResult) -> str:
    """The metrics as a fixed-width table, one row per subset: frame level, then video level (v)."""
    columns = ("AUC", "EER", "AP", "vAUC", "vEER", "vAP", "vbACC")
    head = f"{'subset':28s} {'frames':>7s} {'videos':>6s} " + " ".join(f"{c:>6s}" for c in columns)
    rows = [("all", result.overall)]
    rows += [(f"source {k}", v) for k, v in result.by_source.items()]
    rows += [(f"manipulation {k}", v) for k, v in result.by_manipulation.items()]

    def f(v: float | None) -> str:
        return f"{v:6.3f}" if v is not None else f"{'-':>6s}"

    lines = [head] + [
        f"{name[:28]:28s} {r.frames:7d} {r.videos:6d} {f(r.frame_auc)} {f(r.frame_eer)} {f(r.frame_ap)} "
        f"{f(r.video_auc)} {f(r.video_eer)} {f(r.video_ap)} {f(r.balanced_accuracy)}"
        for name, r in rows
    ]
    return "\n".join(lines)
