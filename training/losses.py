"""Triplet losses on L2-normalised embeddings, the metric-learning half of the follow-up paper.

Cross-entropy only asks that fakes and reals fall on the right side of a line; a
triplet loss also pulls each class together and pushes classes apart by a margin
in embedding space, which generalised better to unseen manipulations there
(batch-all was the best variant). Distances are Euclidean between unit vectors
(0 to 2). For a batch of B embeddings, with anchor a, positive p (same class, not a)
and negative n (another class):

- batch-all: every valid (a, p, n); the mean of the triplets whose loss is > 0
  (averaging in the already-satisfied zeros would shrink the signal as training
  succeeds; Hermans et al. 2017).
- batch-hard: per anchor, its farthest positive and nearest negative.
- semi-hard: per (a, p), the nearest negative farther than p; when none is, the
  farthest negative (FaceNet's rule, as TensorFlow Addons implements it).

Each returns 0 (with a gradient path) when the batch holds no valid triplet.
batch-all builds a [B, B, B] tensor: fine for the batch sizes used here (<= 256).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """[B, D] -> [B, B] Euclidean distances between the L2-normalised rows."""
    e = F.normalize(embeddings.float(), dim=1)
    squared = (2.0 - 2.0 * e @ e.T).clamp_min(1e-12)  # |a - b|^2 of unit vectors; clamp keeps sqrt's grad finite
    return squared.sqrt()


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive [B, B]: same class and not the anchor itself, negative [B, B]: another class)."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _mean_or_zero(values: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return values.mean() if values.numel() else d.sum() * 0.0


def batch_all_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    d = pairwise_distances(embeddings)
    pos, neg = _masks(labels)
    losses = (d[:, :, None] - d[:, None, :] + margin).clamp_min(0)  # [a, p, n]
    valid = losses[pos[:, :, None] & neg[:, None, :]]
    return _mean_or_zero(valid[valid > 0], d)


def batch_hard_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    d = pairwise_distances(embeddings)
    pos, neg = _masks(labels)
    hardest_pos = d.masked_fill(~pos, float("-inf")).amax(dim=1)  # [B]
    hardest_neg = d.masked_fill(~neg, float("inf")).amin(dim=1)  # [B]
    has_both = pos.any(dim=1) & neg.any(dim=1)
    return _mean_or_zero((hardest_pos - hardest_neg + margin).clamp_min(0)[has_both], d)


def semi_hard_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    d = pairwise_distances(embeddings)
    pos, neg = _masks(labels)
    d_an = d[:, None, :]  # [a, 1, n]
    d_ap = d[:, :, None]  # [a, p, 1]
    outside = neg[:, None, :] & (d_an > d_ap)  # [a, p, n]: negatives farther than this positive
    nearest_outside = d_an.masked_fill(~outside, float("inf")).amin(dim=2)  # [a, p]
    farthest = d.masked_fill(~neg, float("-inf")).amax(dim=1, keepdim=True)  # [a, 1]
    chosen = torch.where(outside.any(dim=2), nearest_outside, farthest)  # [a, p]
    valid = pos & neg.any(dim=1, keepdim=True)
    return _mean_or_zero((d - chosen + margin).clamp_min(0)[valid], d)


TripletLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
TRIPLET_LOSSES: dict[str, TripletLoss] = {
    "batch_all": batch_all_triplet,
    "batch_hard": batch_hard_triplet,
    "semi_hard": semi_hard_triplet,
}
