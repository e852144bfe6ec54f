"""Detection metrics, numpy in, numpy out, with fake as the positive class.

The DeepfakeBench set (FACTS.md): frame AUC, video AUC (mean of the frame
probabilities per video, FSFM's protocol and what the runtime's window score
approximates), EER and AP; plus balanced accuracy at a threshold and the threshold
that holds a target false-positive rate on real videos, which the runtime alerts
at. Definitions match scikit-learn's (the tests check them against it): AUC is the
Mann-Whitney statistic with ties counted half; AP is the step-wise sum over recall
of precision at each distinct threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata


def _check(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(y).astype(bool), np.asarray(s, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of one length, got {y.shape} and {s.shape}")
    if y.all() or not y.any():
        raise ValueError("metrics need both fakes (1) and reals (0)")
    return y, s


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    y, s = _check(y, s)
    ranks = rankdata(s)  # ties get their average rank
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, highest first, starting at (0, 0) with threshold inf."""
    y, s = _check(y, s)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tps, fps = np.cumsum(y)[last], np.cumsum(~y)[last]
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (~y).sum()]
    return fpr, tpr, np.r_[np.inf, s[last]]


def eer(y: np.ndarray, s: np.ndarray) -> float:
    """Equal error rate: where the false-positive and false-negative rates cross (interpolated on the ROC)."""
    fpr, tpr, _ = roc_curve(y, s)
    fnr = 1.0 - tpr
    i = int(np.flatnonzero(fnr <= fpr)[0])  # first ROC point past the crossing (exists: the last point has fnr 0)
    if i == 0:
        return 0.0
    d0, d1 = fpr[i - 1] - fnr[i - 1], fpr[i] - fnr[i]  # d0 < 0 <= d1
    t = d0 / (d0 - d1)
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y, s)
    y = np.asarray(y).astype(bool)
    tps, fps = tpr * y.sum(), fpr * (~y).sum()
    precision = np.divide(tps[1:], tps[1:] + fps[1:])
    return float(np.sum(np.diff(tpr) * precision))


def balanced_accuracy(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    """Mean of the recall on fakes and on reals, calling a score >= threshold fake."""
    y, s = _check(y, s)
    fake = s >= threshold
    return float((fake[y].mean() + (~fake[~y]).mean()) / 2)


def threshold_at_fpr(y: np.ndarray, s: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold t with FPR(score >= t) <= target_fpr: just above the real score it must not reach."""
    y, s = _check(y, s)
    reals = np.sort(s[~y])[::-1]
    allowed = int(np.floor(target_fpr * len(reals) + 1e-9))  # reals that may score >= t
    if allowed >= len(reals):
        return float(reals[-1])
    return float(np.nextafter(reals[allowed], np.inf))


def video_scores(videos: list[str], y: np.ndarray, s: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per video: (names, label, mean frame score). A video's frames must share one label."""
    names = sorted(set(videos))
    slot = {v: i for i, v in enumerate(names)}
    idx = np.array([slot[v] for v in videos])
    counts = np.bincount(idx, minlength=len(names))
    mean = np.bincount(idx, weights=np.asarray(s, dtype=np.float64), minlength=len(names)) / counts
    fake_frames = np.bincount(idx, weights=np.asarray(y, dtype=np.float64), minlength=len(names))
    if np.any((fake_frames > 0) & (fake_frames < counts)):
        raise ValueError("a video holds both real and fake frames")
    return names, (fake_frames > 0).astype(np.int64), mean


@dataclass(frozen=True)
class Report:
    """Frame and video metrics of one set of scores; video metrics are None without two classes of videos."""

    frames: int
    videos: int
    frame_auc: float
    frame_eer: float
    frame_ap: float
    video_auc: float | None
    video_eer: float | None
    video_ap: float | None
    balanced_accuracy: float | None  # video level, at the threshold given
    threshold: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def report(videos: list[str], y: np.ndarray, s: np.ndarray, threshold: float | None = None) -> Report:
    names, vy, vs = video_scores(videos, y, s)
    has_videos = 0 < vy.sum() < len(vy)
    return Report(
        frames=len(s),
        videos=len(names),
        frame_auc=roc_auc(y, s),
        frame_eer=eer(y, s),
        frame_ap=average_precision(y, s),
        video_auc=roc_auc(vy, vs) if has_videos else None,
        video_eer=eer(vy, vs) if has_videos else None,
        video_ap=average_precision(vy, vs) if has_videos else None,
        balanced_accuracy=balanced_accuracy(vy, vs, threshold) if has_videos and threshold is not None else None,
        threshold=threshold,
    )
