"""Crops of an index as a torch Dataset, with self-blended fakes added on the fly.

Items carry three labels: the binary target (index 0 = fake, 1 = real: FSFM's
ImageFolder order, which the runtime reads as `fake_index` 0), the attribution class
(or -1), and the video they came from. With `sbi`, every real crop also appears
once as a fake, blended afresh each epoch. Randomness is drawn from
(seed, epoch, item), so an epoch is the same whichever worker loads which item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from streamguard.errors import ConfigError
from training.augment import to_chw
from training.index import CropRecord
from training.sbi import self_blend

CLASS_NAMES = ("fake", "real")
FAKE, REAL = 0, 1
SBI = "sbi"  # manipulation name of self-blended fakes

Augment = Callable[[np.ndarray, np.random.Generator], torch.Tensor]


@dataclass(frozen=True)
class Item:
    record: CropRecord
    blended: bool  # a self-blended fake made from this (real) record


def _attribution_key(item: Item, kind: str) -> str:
    if kind == "manipulation":
        return SBI if item.blended else item.record.manipulation
    return item.record.source


def attribution_classes(records: Sequence[CropRecord], kind: str, sbi: bool) -> list[str]:
    """The sorted attribution classes of a training set ([] when kind is 'none')."""
    if kind == "none":
        return []
    items = [Item(r, False) for r in records] + ([Item(r, True) for r in records if r.label == "real"] if sbi else [])
    return sorted({_attribution_key(it, kind) for it in items})


def read_rgb(path: str) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConfigError(f"cannot read crop image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class CropDataset(Dataset):
    """item -> (uint8 [3, S, S], target, attribution class or -1)."""

    def __init__(
        self,
        records: Sequence[CropRecord],
        size: int,
        augment: Augment | None = None,
        sbi: bool = False,
        attribution: str = "none",
        attribution_names: Sequence[str] = (),
        seed: int = 0,
    ):
        self.items = [Item(r, False) for r in records]
        if sbi:
            self.items += [Item(r, True) for r in records if r.label == "real"]
        self.size = size
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.targets = np.array([FAKE if it.blended or it.record.label == "fake" else REAL for it in self.items])
        lookup = {name: i for i, name in enumerate(attribution_names)}
        self.attribution = np.array(
            [lookup.get(_attribution_key(it, attribution), -1) if lookup else -1 for it in self.items], dtype=np.int64
        )
        self.videos = [f"{it.record.video}#{SBI}" if it.blended else it.record.video for it in self.items]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        item = self.items[i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        rgb = read_rgb(str(item.record.crop))
        if item.blended:
            rgb = self_blend(rgb, rng)
        x = self.augment(rgb, rng) if self.augment is not None else to_chw(rgb, self.size)
        return x, int(self.targets[i]), int(self.attribution[i])
