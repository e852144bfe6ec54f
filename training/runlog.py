"""The record of a training run: CSV files anyone can open, a PNG to look at, TensorBoard if installed.

`steps.csv` has one row per optimiser step (losses, lr), `epochs.csv` one row per
epoch (mean training loss, validation AUCs, elapsed time). Both are appended to, so a
resumed run continues its own history; `plot()` redraws `training.png` from them.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

STEP_COLUMNS = ("epoch", "step", "lr", "loss", "ce", "triplet", "attribution")
EPOCH_COLUMNS = ("epoch", "step", "train_loss", "val_frame_auc", "val_video_auc", "elapsed_s")


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class RunLog:
    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.steps_path = self.out_dir / "steps.csv"
        self.epochs_path = self.out_dir / "epochs.csv"
        self.plot_path = self.out_dir / "training.png"
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional
            pass

    def truncate_after(self, epoch: int) -> None:
        """Forget rows past `epoch` (a run resumed from an earlier checkpoint than its logs reach)."""
        for path, columns in ((self.steps_path, STEP_COLUMNS), (self.epochs_path, EPOCH_COLUMNS)):
            rows = [r for r in read_csv(path) if int(r["epoch"]) <= epoch]
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, columns)
                writer.writeheader()
                writer.writerows(rows)

    def _append(self, path: Path, columns: tuple[str, ...], row: dict[str, Any]) -> None:
        new = not path.is_file()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, columns)
            if new:
                writer.writeheader()
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})

    def step(self, row: dict[str, Any]) -> None:
        self._append(self.steps_path, STEP_COLUMNS, row)
        if self._tb is not None:
            for key in ("lr", "loss", "ce", "triplet", "attribution"):
                if row.get(key) is not None:
                    self._tb.add_scalar(f"train/{key}", row[key], row["step"])

    def epoch(self, row: dict[str, Any]) -> None:
        self._append(self.epochs_path, EPOCH_COLUMNS, row)
        if self._tb is not None:
            for key in ("train_loss", "val_frame_auc", "val_video_auc"):
                if row.get(key) is not None:
                    self._tb.add_scalar(f"epoch/{key}", row[key], row["step"])
        self.plot()

    def plot(self) -> Path:
        """training.png: loss per step (and its running mean) above validation AUC per epoch."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps, epochs = read_csv(self.steps_path), read_csv(self.epochs_path)
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
        if steps:
            x = np.array([int(r["step"]) for r in steps])
            loss = np.array([float(r["loss"]) for r in steps])
            top.plot(x, loss, color="0.75", lw=0.8, label="loss per step")
            window = max(1, len(loss) // 20)
            top.plot(x[window - 1 :], np.convolve(loss, np.ones(window) / window, "valid"), color="C0", label=f"mean of {window}")
            top.legend(loc="upper right")
        top.set_ylabel("training loss")
        for key, label, color in (("val_frame_auc", "frame AUC", "C1"), ("val_video_auc", "video AUC", "C2")):
            pts = [(int(r["step"]), float(r[key])) for r in epochs if r.get(key)]
            if pts:
                bottom.plot(*zip(*pts), marker="o", color=color, label=label)
        bottom.axhline(0.5, color="0.6", ls="--", lw=0.8)
        bottom.set_ylim(0.0, 1.0)
        bottom.set_ylabel("validation AUC")
        bottom.set_xlabel("optimiser step")
        if bottom.lines[1:]:
            bottom.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(self.plot_path, dpi=100)
        plt.close(fig)
        return self.plot_path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
