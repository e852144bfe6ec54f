"""A sliding time window of P(fake) for one identity, and how it becomes one score.

The FSFM video protocol scores a video by the mean of its frame probabilities; the
window applies that to the last `window_s` seconds, so one bad frame moves the score
by at most 1/n and a real fake, seen for a few seconds, always carries it. The other
policies trade that for robustness (trimmed mean, quantile: outliers do not count)
or reaction time (ema: recent samples weigh more).

A verdict needs `min_samples` in the window, and a stream analysed slower than
`min_samples / window_s` frames per second (many streams on one model: four 1080p
streams on a 2-core CPU get 0.9 each) would never hold that many in `window_s`: it
could never alert. So the window stretches back to hold the newest `min_samples`
samples, up to `window_max_s`, beyond which evidence is too old to act on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
from scipy.stats import trim_mean

from streamguard.config import ScoringConfig

# (times [n], probabilities [n]) -> score; n >= 1, times ascending.
Policy = Callable[[np.ndarray, np.ndarray], float]


def mean_policy(t: np.ndarray, p: np.ndarray) -> float:
    return float(p.mean())


def trimmed_mean_policy(trim: float) -> Policy:
    return lambda t, p: float(trim_mean(p, trim))


def ema_policy(half_life_s: float) -> Policy:
    """Weights halve every `half_life_s` of age, counted back from the newest sample."""

    def score(t: np.ndarray, p: np.ndarray) -> float:
        w = np.exp2(-(t[-1] - t) / half_life_s)
        return float((w * p).sum() / w.sum())

    return score


def quantile_policy(q: float) -> Policy:
    return lambda t, p: float(np.quantile(p, q))


def make_policy(cfg: ScoringConfig) -> Policy:
    return {
        "mean": lambda: mean_policy,
        "trimmed_mean": lambda: trimmed_mean_policy(cfg.trim),
        "ema": lambda: ema_policy(cfg.ema_half_life_s),
        "quantile": lambda: quantile_policy(cfg.quantile),
    }[cfg.policy]()


class SlidingWindow:
    """Samples `(t, p)` kept while `t > newest - window_s`, or while among the newest
    `min_samples` and `t > newest - max_window_s`; scored by a policy."""

    def __init__(
        self, window_s: float, policy: Policy = mean_policy, min_samples: int = 1, max_window_s: float | None = None
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if max_window_s is not None and max_window_s < window_s:
            raise ValueError(f"max_window_s ({max_window_s}) must be >= window_s ({window_s})")
        self.window_s = window_s
        self.max_window_s = window_s if max_window_s is None else max_window_s
        self.min_samples = min_samples
        self.policy = policy
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, t: float, p: float) -> None:
        """Add a sample at time t (seconds, non-decreasing) and evict old ones."""
        self._samples.append((t, p))
        horizon, limit = t - self.window_s, t - self.max_window_s
        while self._samples and (
            self._samples[0][0] <= limit or (self._samples[0][0] <= horizon and len(self._samples) > self.min_samples)
        ):
            self._samples.popleft()

    @property
    def span_s(self) -> float:
        """Seconds from the oldest sample in the window to the newest (0 when fewer than two)."""
        return self._samples[-1][0] - self._samples[0][0] if self._samples else 0.0

    def __len__(self) -> int:
        return len(self._samples)

    def score(self) -> float | None:
        """The policy's score over the window, in [0, 1], or None when empty."""
        if not self._samples:
            return None
        t, p = np.array(self._samples, dtype=np.float64).T
        return min(1.0, max(0.0, self.policy(t, p)))


def window_for(cfg: ScoringConfig) -> SlidingWindow:
    """An empty window as `cfg` describes it (the live scorer and the offline report share it)."""
    return SlidingWindow(cfg.window_s, make_policy(cfg), cfg.min_samples, max(cfg.window_max_s, cfg.window_s))
