"""Re-identification: is a face that just appeared one that was lost a moment ago?

Motion alone cannot follow a face through a camera cut, a long occlusion or a
walk out of the frame and back. The model already computes an embedding of
every crop (FSFM's `fc_norm` output), so a track keeps an appearance, an
exponential moving average of its L2-normalised embeddings, and a new face takes
a lost face's id when their cosine similarity reaches a threshold.

Position is only a tie-break, never a gate: after a camera cut the same person
can be anywhere, so a hard position gate would refuse exactly the cases re-id
is for. Which pairs are possible at all (time order, the re-id window) is the
tracker's business; it passes them in as `allowed`.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

APPEARANCE_MOMENTUM = 0.9  # weight of the past in the moving average (BoT-SORT's value)


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm: float32 [N, D] -> float32 [N, D]."""
    e = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(e, axis=-1, keepdims=True)
    return e / np.maximum(norms, 1e-12)


def blend(appearance: np.ndarray | None, embedding: np.ndarray) -> np.ndarray:
    """The appearance after one more unit embedding [D]: a moving average, renormalised."""
    if appearance is None:
        return embedding
    return normalise(APPEARANCE_MOMENTUM * appearance + (1 - APPEARANCE_MOMENTUM) * embedding)


def match(
    new: np.ndarray,
    lost: np.ndarray,
    distance: np.ndarray,
    allowed: np.ndarray,
    threshold: float,
    position_weight: float,
) -> list[tuple[int, int]]:
    """Pairs (new row, lost row) to merge, at the least total cost.

    new: float32 [N, D] unit embeddings of new faces; lost: float32 [M, D] unit
    appearances of lost faces; distance: [N, M] how far apart they were, in frame
    diagonals; allowed: bool [N, M]. A pair needs cosine >= threshold; among those,
    the cost of a pair is (1 - cosine) + position_weight * distance.
    """
    if new.shape[0] == 0 or lost.shape[0] == 0:
        return []
    cosine = new @ lost.T  # [N, M]
    admissible = allowed & (cosine >= threshold)
    cost = np.where(admissible, (1 - cosine) + position_weight * distance, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if admissible[r, c]]
