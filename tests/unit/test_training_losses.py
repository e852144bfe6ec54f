"""The triplet variants against brute-force loops over every triplet of small batches."""

import itertools

import numpy as np
import pytest
import torch

from training.losses import TRIPLET_LOSSES, batch_all_triplet, pairwise_distances


def _distances(emb: np.ndarray) -> np.ndarray:
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return np.sqrt(np.maximum(((e[:, None, :] - e[None, :, :]) ** 2).sum(-1), 1e-12))


def brute_force(emb: np.ndarray, labels: np.ndarray, variant: str, margin: float) -> float:
    d = _distances(emb.astype(np.float64))
    n = len(labels)
    losses = []
    for a in range(n):
        positives = [p for p in range(n) if p != a and labels[p] == labels[a]]
        negatives = [k for k in range(n) if labels[k] != labels[a]]
        if not positives or not negatives:
            continue
        if variant == "batch_all":
            losses += [max(0.0, d[a, p] - d[a, k] + margin) for p, k in itertools.product(positives, negatives)]
        elif variant == "batch_hard":
            losses.append(max(0.0, max(d[a, p] for p in positives) - min(d[a, k] for k in negatives) + margin))
        else:  # semi_hard
            for p in positives:
                farther = [d[a, k] for k in negatives if d[a, k] > d[a, p]]
                chosen = min(farther) if farther else max(d[a, k] for k in negatives)
                losses.append(max(0.0, d[a, p] - chosen + margin))
    if variant == "batch_all":
        losses = [v for v in losses if v > 0]  # the mean over the active triplets
    return float(np.mean(losses)) if losses else 0.0


@pytest.mark.parametrize("variant", sorted(TRIPLET_LOSSES))
@pytest.mark.parametrize("seed", range(6))
def test_triplet_losses_match_brute_force(variant, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 11))
    labels = rng.integers(0, 3, size=n)
    emb = rng.normal(size=(n, 5)).astype(np.float32) * rng.uniform(0.1, 10)  # scale must not matter: L2-normalised
    margin = float(rng.uniform(0.05, 1.0))
    got = TRIPLET_LOSSES[variant](torch.tensor(emb), torch.tensor(labels), margin)
    assert got.item() == pytest.approx(brute_force(emb, labels, variant, margin), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("variant", sorted(TRIPLET_LOSSES))
def test_a_batch_without_valid_triplets_gives_zero_with_a_gradient(variant):
    emb = torch.randn(4, 3, requires_grad=True)
    loss = TRIPLET_LOSSES[variant](emb, torch.zeros(4, dtype=torch.long), 0.2)  # no negatives
    loss.backward()
    assert loss.item() == 0.0 and emb.grad is not None and torch.isfinite(emb.grad).all()


@pytest.mark.parametrize("variant", sorted(TRIPLET_LOSSES))
def test_identical_embeddings_give_finite_gradients(variant):
    emb = torch.ones(6, 4, requires_grad=True)  # every distance 0: sqrt's gradient would be inf there
    TRIPLET_LOSSES[variant](emb, torch.tensor([0, 0, 0, 1, 1, 1]), 0.3).backward()
    assert torch.isfinite(emb.grad).all()


def test_separated_classes_have_zero_loss_and_mixed_classes_do_not():
    separated = torch.tensor([[1.0, 0.0], [0.99, 0.1], [-1.0, 0.0], [-0.99, -0.1]])
    labels = torch.tensor([0, 0, 1, 1])
    assert batch_all_triplet(separated, labels, 0.5).item() == 0.0
    assert batch_all_triplet(separated, torch.tensor([0, 1, 0, 1]), 0.5).item() > 0.5


def test_pairwise_distances_are_those_of_unit_vectors():
    d = pairwise_distances(torch.tensor([[3.0, 0.0], [0.0, 2.0], [-5.0, 0.0]]))
    np.testing.assert_allclose(d.numpy(), [[0, 2**0.5, 2], [2**0.5, 0, 2**0.5], [2, 2**0.5, 0]], atol=1e-5)
