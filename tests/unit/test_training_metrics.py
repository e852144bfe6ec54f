"""Training metrics against scikit-learn (a test-only dependency) and their definitions."""

import numpy as np
import pytest
from sklearn import metrics as sk

from training.metrics import (
    average_precision,
    balanced_accuracy,
    eer,
    report,
    roc_auc,
    roc_curve,
    threshold_at_fpr,
    video_scores,
)


def _case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 200))
    y = rng.integers(0, 2, size=n)
    y[:2] = [0, 1]
    s = rng.normal(size=n) + y * rng.uniform(0, 2)
    if seed % 2:
        s = np.round(s, 1)  # many ties
    return y, s


@pytest.mark.parametrize("seed", range(8))
def test_auc_ap_roc_and_balanced_accuracy_match_scikit_learn(seed):
    y, s = _case(seed)
    assert roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(y, s)
    ref_fpr, ref_tpr, ref_thr = sk.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    np.testing.assert_allclose(thr[1:], ref_thr[1:])
    t = float(np.median(s))
    assert balanced_accuracy(y, s, t) == pytest.approx(sk.balanced_accuracy_score(y, s >= t), abs=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_eer_is_where_false_positive_and_false_negative_rates_cross(seed):
    y, s = _case(seed)
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    fnr = 1 - tpr
    i = int(np.flatnonzero(fnr <= fpr)[0])  # the ROC segment (i - 1, i) crosses the line FPR = FNR
    t = (fnr[i - 1] - fpr[i - 1]) / ((fpr[i] - fpr[i - 1]) - (fnr[i] - fnr[i - 1]))
    reference = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    assert eer(y, s) == pytest.approx(reference, abs=1e-12)
    assert reference == pytest.approx(fnr[i - 1] + t * (fnr[i] - fnr[i - 1]), abs=1e-12)  # FPR = FNR there


def test_eer_of_perfect_and_inverted_scores():
    y = np.array([0, 0, 1, 1])
    assert eer(y, np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert eer(y, np.array([0.9, 0.8, 0.2, 0.1])) == pytest.approx(1.0)


@pytest.mark.parametrize("target", [0.0, 0.01, 0.1, 0.25, 0.5])
def test_threshold_at_fpr_is_the_lowest_that_keeps_the_false_positive_rate(target):
    y, s = _case(3)
    t = threshold_at_fpr(y, s, target)
    reals = s[y == 0]
    assert (reals >= t).mean() <= target + 1e-12
    lower = reals[reals < t].max()  # the next real score down would let one more real through
    assert (reals >= lower).mean() > target


def test_video_scores_average_frames_and_refuse_mixed_videos():
    names, vy, vs = video_scores(["b", "a", "b", "a"], np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.7, 0.4]))
    assert names == ["a", "b"] and vy.tolist() == [0, 1]
    np.testing.assert_allclose(vs, [0.3, 0.8])
    with pytest.raises(ValueError, match="both real and fake"):
        video_scores(["a", "a"], np.array([0, 1]), np.array([0.1, 0.2]))


def test_report_has_video_metrics_only_with_both_classes_of_videos():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.3, 0.6, 0.9, 0.2, 0.8])
    r = report(["r1", "r1", "f1", "f1", "r2", "f2"], y, s, threshold=0.5)
    assert r.videos == 4 and r.video_auc == 1.0 and r.balanced_accuracy == 1.0
    with pytest.raises(ValueError, match="both fakes"):
        roc_auc(np.ones(3), np.arange(3))
