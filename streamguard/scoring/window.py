"""A sliding time window of P(fake) for one identity.

The FSFM video protocol scores a video by the mean of its frame probabilities; the
window applies that to the last `window_s` seconds, so one bad frame moves the score
by at most 1/n and a real fake, seen for a few seconds, always carries it.
"""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    """Samples `(t, p)` kept while `t > newest - window_s`; score = mean of p."""

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, t: float, p: float) -> None:
        """Add a sample at time t (seconds, non-decreasing) and evict old ones."""
        self._samples.append((t, p))
        horizon = t - self.window_s
        while self._samples and self._samples[0][0] <= horizon:
            self._samples.popleft()

    def __len__(self) -> int:
        return len(self._samples)

    def score(self) -> float | None:
        """Mean P(fake) over the window, or None when empty."""
        if not self._samples:
            return None
        return sum(p for _, p in self._samples) / len(self._samples)
