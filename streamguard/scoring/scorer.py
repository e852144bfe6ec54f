"""Turn one stream's scored faces into events: a window and a lifecycle per identity.

The threshold is the configured one when set, else the engine's calibrated one (its
metadata, written by `streamguard-train eval` at a target false-positive rate), else
0.5; every event says which (`threshold_source`).

Time is the stream's own clock (`pts`), so live runs and offline analysis of the same
video give the same verdicts. A clock that jumps backwards (a source restarted)
starts the identity's window afresh instead of mixing two timelines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamguard.events import EventV1, IdentityScore, ModelInfo, ScoresV1, ThresholdSource
from streamguard.config import ScoringConfig
from streamguard.scoring.lifecycle import AlertLifecycle, Verdict
from streamguard.scoring.window import SlidingWindow, window_for

DEFAULT_THRESHOLD = 0.5


def resolve_threshold(cfg: ScoringConfig, calibrated: float | None) -> tuple[float, ThresholdSource]:
    if cfg.threshold is not None:
        return cfg.threshold, "config"
    if calibrated is not None:
        return calibrated, "calibrated"
    return DEFAULT_THRESHOLD, "default"
from streamguard.types import Face, Sample


@dataclass
class _Identity:
    window: SlidingWindow
    lifecycle: AlertLifecycle
    last_face: Face
    last_t: float = field(default=float("-inf"))


class StreamScorer:
    def __init__(
        self, stream: str, cfg: ScoringConfig, model: ModelInfo, calibrated_threshold: float | None = None
    ) -> None:
        self.stream = stream
        self.cfg = cfg
        self.model = model
        self.threshold, self.threshold_source = resolve_threshold(cfg, calibrated_threshold)
        self._ids: dict[int, _Identity] = {}

    def add(self, sample: Sample) -> EventV1 | None:
        """Add one scored face; return the event it causes, if any."""
        face = sample.face
        ident = self._ids.get(face.track)
        if ident is None or face.pts < ident.last_t:
            lifecycle = ident.lifecycle if ident else AlertLifecycle(self.cfg, self.threshold)
            ident = _Identity(window_for(self.cfg), lifecycle, face)
            self._ids[face.track] = ident
        ident.window.add(face.pts, sample.p_fake)
        ident.last_face, ident.last_t = face, face.pts
        score = ident.window.score()
        assert score is not None
        verdict = ident.lifecycle.step(face.pts, score, len(ident.window))
        return self._event(verdict, face, ident.window.span_s) if verdict else None

    def end(self, tracks: list[int], reason: str = "track_ended") -> list[EventV1]:
        """Forget ended identities; clear the alerts they had open."""
        events = []
        for track in tracks:
            ident = self._ids.pop(track, None)
            if ident is None:
                continue
            verdict = ident.lifecycle.end(ident.last_t, reason, ident.window.score(), len(ident.window))
            if verdict:
                events.append(self._event(verdict, ident.last_face, ident.window.span_s))
        return events

    def end_all(self, reason: str) -> list[EventV1]:
        return self.end(list(self._ids), reason)

    @property
    def identities(self) -> list[int]:
        return list(self._ids)

    def scores(self, ts: float) -> ScoresV1:
        """Every identity's current window score, for live dashboards."""
        return ScoresV1(
            stream=self.stream,
            ts=ts,
            threshold=self.threshold,
            identities=[
                IdentityScore(
                    track=track,
                    score=ident.window.score() or 0.0,
                    samples=len(ident.window),
                    alert_id=ident.lifecycle.alert_id,
                    pts=ident.last_t,
                    box=tuple(float(v) for v in ident.last_face.box_norm),
                )
                for track, ident in self._ids.items()
            ],
        )

    def _event(self, verdict: Verdict, face: Face, window_span_s: float) -> EventV1:
        return EventV1(
            type=verdict.type,
            id=verdict.alert_id,
            stream=self.stream,
            track=face.track,
            score=min(1.0, max(0.0, verdict.score)),
            threshold=self.threshold,
            threshold_source=self.threshold_source,
            window_s=self.cfg.window_s,
            policy=self.cfg.policy,
            window_span_s=window_span_s,
            samples=verdict.samples,
            ts=face.wall_ts,
            pts=face.pts,
            box=tuple(float(v) for v in face.box_norm),
            model=self.model,
            reason=verdict.reason,
        )
