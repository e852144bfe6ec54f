"""Training augmentations: per crop in the data loader, per batch on the training device.

Per crop (uint8 in, uint8 out, so workers ship 1 byte per value): the live-video
degradations of degrade.py first (they happen to the face before anything else),
then FSFM's fine-tuning recipe, which is timm's `create_transform` (random resized
crop, flip, RandAugment or colour jitter) in its "prefetcher" form that stops
before normalising. Per batch, on the device: normalisation with the model's own
mean/std (the same arithmetic as the runtime engine), random erasing, and optional
mixup/cutmix, as timm's prefetcher does them.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image
from timm.data import Mixup, create_transform
from timm.data.random_erasing import RandomErasing

from training.config import AugmentConfig
from training.degrade import random_degrade


def to_chw(rgb: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [H, W, 3] -> uint8 [3, size, size], resized (bicubic, as the cropper) only if needed."""
    if rgb.shape[:2] != (size, size):
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()


class CropAugment:
    """uint8 [H, W, 3] RGB -> augmented uint8 [3, S, S]."""

    def __init__(self, cfg: AugmentConfig, size: int):
        self.cfg = cfg
        self.size = size
        self._fsfm = None
        if cfg.fsfm:
            self._fsfm = create_transform(
                size,
                is_training=True,
                scale=cfg.scale,
                ratio=cfg.ratio,
                hflip=cfg.hflip,
                color_jitter=cfg.color_jitter,
                auto_augment=cfg.auto_augment,
                interpolation="bicubic",
                use_prefetcher=True,  # stop at a uint8 tensor: normalising happens on the device
            )

    def __call__(self, rgb: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        rgb = random_degrade(rgb, self.cfg.degrade, rng)
        if self._fsfm is None:
            return to_chw(rgb, self.size)
        return self._fsfm(Image.fromarray(rgb))


class Normalize:
    """uint8 [N, 3, S, S] -> float32 (x / 255 - mean) / std: exactly what the runtime engine computes."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float().div_(255.0) - self.mean) / self.std


class BatchAugment:
    """Random erasing and mixup/cutmix on a normalised batch; returns (x, targets).

    Targets are class indices, or soft [N, 2] targets when mixup/cutmix is on
    (label smoothing then happens inside timm's Mixup).
    """

    def __init__(self, cfg: AugmentConfig, label_smoothing: float, device: torch.device):
        self._erase = (
            RandomErasing(cfg.reprob, mode="pixel", device=str(device)) if cfg.fsfm and cfg.reprob > 0 else None
        )
        self._mixup = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            self._mixup = Mixup(
                mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=label_smoothing, num_classes=2
            )

    @property
    def soft_targets(self) -> bool:
        return self._mixup is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._erase is not None:
            x = self._erase(x)
        if self._mixup is not None:  # pairs the batch with its reverse: needs an even batch (drop_last)
            x, y = self._mixup(x, y)
        return x, y
