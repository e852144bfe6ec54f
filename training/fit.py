"""`fit`: fine-tune a detector from a training config, resumably.

One epoch = `steps_per_epoch` optimiser steps (default: one pass over the training
crops). Each step: augmented uint8 crops -> normalise on the device -> random
erasing / mixup -> network under autocast -> cross-entropy with label smoothing
(+ triplet loss on the embeddings, + attribution cross-entropy) -> clipped AdamW
step -> per-step warm-up/cosine lr. After each epoch: validation AUC, a checkpoint
(`last.pth`, the runtime's format, plus `last.state.pth` with the optimiser), the
CSV logs and the plot. A run started again in the same folder resumes after the
last completed epoch.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch.utils.data import BatchSampler, DataLoader, RandomSampler
from tqdm import tqdm

from streamguard.errors import ConfigError
from streamguard.model.checkpoint import LoadedModel, ModelMeta, save_checkpoint, weights_digest
from training.augment import BatchAugment, CropAugment, Normalize
from training.config import DataSplit, TrainConfig
from training.datasets import CropDataset, attribution_classes
from training.device import amp_dtype, pick_device
from training.index import CropRecord, read_index
from training.losses import TRIPLET_LOSSES
from training.metrics import report
from training.model import Detector, build_net, param_groups
from training.predict import predict
from training.runlog import RunLog, read_csv
from training.sample_faces import write_sample_set
from training.sampler import PKSampler

log = logging.getLogger(__name__)

LAST = "last.pth"  # the runtime-format checkpoint
STATE = "last.state.pth"  # optimiser, schedule and heads: what resuming needs besides the weights
# Config sections that must match to resume a run (run.* and the epoch count may change).
RESUME_KEYS = ("data", "model", "loss", "batch", "augment")


def split_records(split: DataSplit, name: str, img_size: int, out_dir: Path) -> list[CropRecord]:
    """The crops of one data section; sample-face sets are drawn into out_dir/data/NAME once."""
    if split.sample_faces is not None:
        index = out_dir / "data" / name / "index.csv"
        if not index.is_file():
            write_sample_set(index.parent, split.sample_faces, img_size, split=name)
        return read_index(index)
    return read_index(split.index, split.split or name)  # type: ignore[arg-type]


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up from 0 over `warmup` steps, then half a cosine down to `min_ratio`."""
    if step < warmup:
        return step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class FitResult:
    out_dir: Path
    checkpoint: Path
    epochs_done: int
    val_frame_auc: float | None
    val_video_auc: float | None


class Trainer:
    """Owns the model, data, optimiser and logs of one run folder."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.out_dir = cfg.run.out_dir
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.run.seed)
        self.device = pick_device(cfg.run.device)
        self.amp = amp_dtype(self.device, cfg.optim.amp)
        d = cfg.data
        train_records = split_records(d.train, "train", d.img_size, self.out_dir)
        self.attribution_names = attribution_classes(train_records, d.attribution, d.sbi)
        self.train_set = CropDataset(
            train_records, d.img_size, CropAugment(cfg.augment, d.img_size), d.sbi, d.attribution,
            self.attribution_names, cfg.run.seed,
        )
        self.val_set = (
            CropDataset(split_records(d.val, "val", d.img_size, self.out_dir), d.img_size) if d.val is not None else None
        )
        if self.val_set is not None and len(set(self.val_set.targets.tolist())) < 2:
            raise ConfigError("data.val holds only one class (real or fake): its AUC needs both")
        start = build_net(cfg.model, d.img_size)
        self.meta: ModelMeta = start.meta
        self.model = Detector(start.model, len(self.attribution_names)).to(self.device)
        self.steps_per_epoch = cfg.optim.steps_per_epoch or max(1, len(self.train_set) // cfg.batch.size)
        self.lr = cfg.optim.blr * cfg.batch.size / 256
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.optim, self.lr), lr=self.lr, betas=(0.9, 0.999))
        total = cfg.optim.epochs * self.steps_per_epoch
        warmup = round(cfg.optim.warmup_epochs * self.steps_per_epoch)
        min_ratio = min(1.0, cfg.optim.min_lr / self.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup, total, min_ratio)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.normalize = Normalize(self.meta.mean, self.meta.std, self.device)
        self.batch_augment = BatchAugment(cfg.augment, cfg.loss.label_smoothing, self.device)
        self.soft_ce = SoftTargetCrossEntropy()
        self.triplet = TRIPLET_LOSSES.get(cfg.loss.triplet.variant)
        self.runlog = RunLog(self.out_dir)
        self.epoch = 0  # completed epochs
        self.step = 0

    # --- data ---------------------------------------------------------------------

    def _train_loader(self) -> DataLoader:
        b = self.cfg.batch
        n = self.steps_per_epoch
        seed = self.cfg.run.seed * 100_003 + self.epoch
        if b.sampler == "pk":
            classes = self.train_set.targets if b.classes == "label" else self.train_set.attribution
            sampler: Any = PKSampler(classes, b.p, b.size // b.p, n, seed=self.cfg.run.seed)
            sampler.set_epoch(self.epoch)
        else:
            generator = torch.Generator().manual_seed(seed)
            crops = RandomSampler(self.train_set, num_samples=n * b.size, generator=generator)
            sampler = BatchSampler(crops, b.size, drop_last=True)
        self.train_set.set_epoch(self.epoch)
        workers = self.cfg.run.workers
        return DataLoader(
            self.train_set, batch_sampler=sampler, num_workers=workers, pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(seed), persistent_workers=False,
        )

    def _val_loader(self) -> DataLoader | None:
        if self.val_set is None:
            return None
        return DataLoader(self.val_set, batch_size=64, num_workers=self.cfg.run.workers)

    # --- checkpoints --------------------------------------------------------------

    def _config_record(self, val: dict[str, Any]) -> dict[str, Any]:
        return {
            "train": self.cfg.model_dump(mode="json"),
            "attribution": {"kind": self.cfg.data.attribution, "classes": self.attribution_names},
            "epoch": self.epoch,
            "step": self.step,
            "val": val,
        }

    def save(self, val: dict[str, Any]) -> Path:
        net = self.model.net
        meta = replace(self.meta, digest=weights_digest(net), trained=True)
        state = {
            "config": self.cfg.model_dump(mode="json"),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
        }
        tmp = self.out_dir / (STATE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.out_dir / STATE)
        return save_checkpoint(self.out_dir / LAST, LoadedModel(net, meta), extra=self._config_record(val))

    def try_resume(self) -> bool:
        path = self.out_dir / STATE
        if not (self.cfg.run.resume and path.is_file()):
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        now = self.cfg.model_dump(mode="json")
        changed = [k for k in RESUME_KEYS if state["config"].get(k) != now[k]]
        if changed:
            raise ConfigError(
                f"{self.out_dir} holds a run with different {', '.join(changed)} settings; "
                "use another --out, or --set run.resume=false to start over there"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.runlog.truncate_after(self.epoch)
        log.info("resumed %s after epoch %d (step %d)", self.out_dir, self.epoch, self.step)
        return True

    # --- training -----------------------------------------------------------------

    def _losses(self, x: torch.Tensor, y: torch.Tensor, attr: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        classes = y if cfg.batch.classes == "label" else attr  # triplet classes = the sampler's classes
        x, target = self.batch_augment(self.normalize(x), y)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            logits, attr_logits, embedding = self.model(x)
        if self.batch_augment.soft_targets:
            ce = self.soft_ce(logits.float(), target)
        else:
            ce = F.cross_entropy(logits.float(), target, label_smoothing=cfg.loss.label_smoothing)
        losses = {"ce": ce}
        if self.triplet is not None and cfg.loss.triplet.weight > 0:
            losses["triplet"] = self.triplet(embedding, classes, cfg.loss.triplet.margin)
        if attr_logits is not None and cfg.loss.attribution_weight > 0 and bool((attr >= 0).any()):
            losses["attribution"] = F.cross_entropy(attr_logits.float(), attr, ignore_index=-1)
        losses["loss"] = (
            ce
            + cfg.loss.triplet.weight * losses.get("triplet", 0.0)
            + cfg.loss.attribution_weight * losses.get("attribution", 0.0)
        )
        return losses

    def train_epoch(self) -> float:
        self.model.train()
        seed = self.cfg.run.seed * 7919 + self.epoch
        torch.manual_seed(seed)  # drop path
        random.seed(seed)  # timm's random erasing
        np.random.seed(seed)  # timm's mixup
        total = 0.0
        desc = f"epoch {self.epoch + 1}/{self.cfg.optim.epochs}"
        bar = tqdm(self._train_loader(), total=self.steps_per_epoch, desc=desc, unit="step", leave=False)
        for x, y, attr in bar:
            x, y, attr = (t.to(self.device, non_blocking=True) for t in (x, y, attr))
            losses = self._losses(x, y, attr)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(losses["loss"]).backward()
            if self.cfg.optim.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            lr = max(g["lr"] for g in self.optimizer.param_groups)  # the head's: layer decay scales the rest down
            self.scheduler.step()
            self.step += 1
            values = {k: float(v.detach()) for k, v in losses.items()}
            total += values["loss"]
            bar.set_postfix(loss=f"{values['loss']:.3f}")
            self.runlog.step({"epoch": self.epoch + 1, "step": self.step, "lr": lr, **values})
        return total / self.steps_per_epoch

    def validate(self) -> dict[str, Any]:
        loader = self._val_loader()
        if loader is None:
            return {}
        p = predict(self.model.net, self.meta, loader, self.device, self.amp)
        r = report(self.val_set.videos, self.val_set.targets == 0, p)  # type: ignore[union-attr]
        return {"frame_auc": r.frame_auc, "video_auc": r.video_auc, "frames": r.frames, "videos": r.videos}

    def fit(self) -> FitResult:
        threads = torch.get_num_threads()
        if self.cfg.run.threads:
            torch.set_num_threads(self.cfg.run.threads)
        try:
            return self._fit()
        finally:
            torch.set_num_threads(threads)  # process-wide: leave it as it was for the caller
            self.runlog.close()

    def _fit(self) -> FitResult:
        self.try_resume()
        started = time.monotonic()
        elapsed_before = self._elapsed_logged()
        val: dict[str, Any] = {}
        log.info(
            "training %s on %s (%s) for %d epochs x %d steps, batch %d; %d train crops%s",
            self.meta.name, self.device, self.amp or "fp32", self.cfg.optim.epochs, self.steps_per_epoch,
            self.cfg.batch.size, len(self.train_set), f", {len(self.val_set)} val crops" if self.val_set else "",
        )
        while self.epoch < self.cfg.optim.epochs:
            train_loss = self.train_epoch()
            self.epoch += 1
            val = self.validate()
            elapsed = elapsed_before + time.monotonic() - started
            self.save(val)
            self.runlog.epoch({
                "epoch": self.epoch, "step": self.step, "train_loss": train_loss,
                "val_frame_auc": val.get("frame_auc"), "val_video_auc": val.get("video_auc"), "elapsed_s": round(elapsed, 1),
            })
            log.info(
                "epoch %d/%d: train loss %.4f%s (%.0f s)", self.epoch, self.cfg.optim.epochs, train_loss,
                f", val frame AUC {val['frame_auc']:.3f}" if val else "", elapsed,
            )
            if self.cfg.run.max_minutes and elapsed > 60 * self.cfg.run.max_minutes:
                log.info("run.max_minutes reached: stopping after epoch %d", self.epoch)
                break
        return FitResult(self.out_dir, self.out_dir / LAST, self.epoch, val.get("frame_auc"), val.get("video_auc"))

    def _elapsed_logged(self) -> float:
        rows = read_csv(self.runlog.epochs_path)
        return float(rows[-1]["elapsed_s"]) if rows else 0.0


def fit(cfg: TrainConfig) -> FitResult:
    return Trainer(cfg).fit()
