"""The alert lifecycle of one identity: hysteresis, cooldown and rate-limited updates.

An identity alerts when its window score reaches the threshold with enough samples
and has stayed there for `min_alert_duration_s`;
it stays alerting until the score falls below `threshold - hysteresis` (so a score
hovering at the threshold does not flap) or the identity ends. After a clear it may
not alert again for `cooldown_s`. While alerting, an `update` goes out only when the
score has moved by `update_min_delta` and `update_interval_s` has passed, or as a
heartbeat every `heartbeat_s`, so subscribers are not flooded with identical messages
yet know the alert is still open. Clearing, like alerting, needs
`min_samples` in the window: one good frame does not clear a fake either.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from streamguard.config import ScoringConfig

VerdictType = Literal["alert", "update", "clear"]


@dataclass(frozen=True, slots=True)
class Verdict:
    type: VerdictType
    alert_id: str
    score: float
    samples: int
    reason: str  # why: "threshold", "changed", "heartbeat", "below_threshold", "track_ended", "shutdown"


class AlertLifecycle:
    """State machine for one identity; feed it each new window score."""

    def __init__(self, cfg: ScoringConfig, threshold: float) -> None:
        self.cfg = cfg
        self.threshold = threshold
        self._above_since: float | None = None
        self.alert_id: str | None = None
        self._last_sent_score = 0.0
        self._last_sent_t = 0.0
        self._cleared_at: float | None = None
        self._last_t = float("-inf")

    @property
    def alerting(self) -> bool:
        return self.alert_id is not None

    def step(self, t: float, score: float, samples: int) -> Verdict | None:
        """Advance with the window score at time t; return the verdict to publish, if any."""
        cfg = self.cfg
        self._follow_clock(t)
        if samples < cfg.min_samples:
            return None
        if self.alert_id is None:
            if score < self.threshold:
                self._above_since = None
                return None
            if self._above_since is None:
                self._above_since = t
            if t - self._above_since < cfg.min_alert_duration_s:
                return None
            if self._cleared_at is not None and t - self._cleared_at < cfg.cooldown_s:
                return None
            self.alert_id = uuid.uuid4().hex
            return self._sent(Verdict("alert", self.alert_id, score, samples, "threshold"), t)
        if score < self.threshold - cfg.hysteresis:
            return self.end(t, "below_threshold", score, samples)
        since = t - self._last_sent_t
        if since >= cfg.update_interval_s and abs(score - self._last_sent_score) >= cfg.update_min_delta:
            return self._sent(Verdict("update", self.alert_id, score, samples, "changed"), t)
        if since >= cfg.heartbeat_s:
            return self._sent(Verdict("update", self.alert_id, score, samples, "heartbeat"), t)
        return None

    def end(self, t: float, reason: str, score: float | None = None, samples: int = 0) -> Verdict | None:
        """Clear an open alert (identity gone, score dropped, or shutdown)."""
        if self.alert_id is None:
            return None
        verdict = Verdict("clear", self.alert_id, self._last_sent_score if score is None else score, samples, reason)
        self.alert_id = None
        self._above_since = None
        self._cleared_at = t
        return verdict

    def _follow_clock(self, t: float) -> None:
        """Shift remembered times when the stream clock jumps back (source restarted)."""
        if t < self._last_t:
            shift = t - self._last_t
            self._last_sent_t += shift
            if self._cleared_at is not None:
                self._cleared_at += shift
            if self._above_since is not None:
                self._above_since += shift
        self._last_t = t

    def _sent(self, verdict: Verdict, t: float) -> Verdict:
        self._last_sent_score = verdict.score
        self._last_sent_t = t
        return verdict
