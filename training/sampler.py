"""The P x K class-balanced batch sampler that metric learning needs.

A triplet loss learns only from batches that hold positives and negatives for
every anchor; with rare classes (one manipulation among many, or fakes in a mostly
real set) random batches often hold none. Each batch here holds exactly P distinct
classes with exactly K items of each. Within a class, items are drawn without
replacement from a shuffled pass over the class, reshuffled when fewer than K are
left; a class with fewer than K items repeats items within the batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class PKSampler(Sampler[list[int]]):
    """Yields `batches` lists of P * K dataset indices per epoch."""

    def __init__(self, classes: np.ndarray, p: int, k: int, batches: int, seed: int = 0):
        classes = np.asarray(classes)
        self.by_class = [np.flatnonzero(classes == c) for c in np.unique(classes)]
        if p > len(self.by_class):
            raise ValueError(f"P = {p} classes per batch, but the data has only {len(self.by_class)} classes")
        if k < 1 or batches < 1:
            raise ValueError("K and the number of batches must be positive")
        self.p, self.k, self.batches, self.seed = p, k, batches, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        pools = [rng.permutation(ids) for ids in self.by_class]
        cursors = [0] * len(pools)
        for _ in range(self.batches):
            batch: list[int] = []
            for c in rng.choice(len(pools), size=self.p, replace=False):
                ids = self.by_class[c]
                if len(ids) < self.k:
                    batch += rng.choice(ids, size=self.k, replace=True).tolist()
                    continue
                if cursors[c] + self.k > len(pools[c]):  # cycle used up: reshuffle
                    pools[c], cursors[c] = rng.permutation(ids), 0
                batch += pools[c][cursors[c] : cursors[c] + self.k].tolist()
                cursors[c] += self.k
            yield batch
