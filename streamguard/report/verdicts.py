"""One verdict per identity, from its recorded scores and the events it caused.

Two scores, because they answer two questions:
- the video-level score, the mean P(fake) over all of the identity's samples, is
  FSFM's video protocol: comparable with published results, and the basis of the
  verdict;
- the max window score, the highest sliding-window score with at least
  `min_samples` in the window, is the worst moment the live alerting saw.

Window scores are recomputed from the recorded samples with the scorer's own
window (`window_for`: policy, stretching), so the timeline shows the curve the scorer
compared with the threshold (the end-to-end test checks it against the published
events).

`AnalysisV1` is the machine-readable document (`verdicts.json`); like the events it
only ever gains optional fields within a version.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from streamguard.events import EventV1, ModelInfo
from streamguard.config import ScoringConfig
from streamguard.report.recorder import ScoreRow
from streamguard.scoring.window import window_for

ANALYSIS_SCHEMA = "streamguard.analysis.v1"


@dataclass(frozen=True)
class IdentityScores:
    """One identity's samples in time order, with the window score after each."""

    identity: int
    t: np.ndarray  # float64 [N] seconds into the video
    p_fake: np.ndarray  # float64 [N]
    window: np.ndarray  # float64 [N] window score after this sample
    window_n: np.ndarray  # int64 [N] samples in that window


def window_scores(t: np.ndarray, p_fake: np.ndarray, cfg: ScoringConfig) -> tuple[np.ndarray, np.ndarray]:
    """t, p [N] in time order -> (window score [N], samples in the window [N]) after each sample."""
    window = window_for(cfg)
    scores = np.empty(len(t), np.float64)
    counts = np.empty(len(t), np.int64)
    for i, (ti, pi) in enumerate(zip(t.tolist(), p_fake.tolist())):
        window.add(ti, pi)
        scores[i] = window.score()
        counts[i] = len(window)
    return scores, counts


def scores_by_identity(rows: Iterable[ScoreRow], cfg: ScoringConfig) -> dict[int, IdentityScores]:
    """Group the recorded rows per identity (ascending id) and add their window scores."""
    grouped: dict[int, list[ScoreRow]] = defaultdict(list)
    for row in rows:
        grouped[row.identity].append(row)
    out = {}
    for identity in sorted(grouped):
        t = np.array([r.t for r in grouped[identity]], np.float64)
        p = np.array([r.p_fake for r in grouped[identity]], np.float64)
        window, window_n = window_scores(t, p, cfg)
        out[identity] = IdentityScores(identity, t, p, window, window_n)
    return out


class AlertSpan(BaseModel):
    """One alert of an identity: from its `alert` event to its `clear` event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Alert id, as in events.jsonl")
    start_s: float = Field(description="Video time of the alert")
    end_s: float = Field(description="Video time of the clear")
    peak_score: float = Field(description="Highest window score while the alert was open")
    clear_reason: str | None = Field(description="Why it cleared (the clear event's reason)")


class IdentityVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    identity: int = Field(description="The face's track id in the video (events' `track`)")
    verdict: Literal["fake", "real", "insufficient"] = Field(
        description="video_score >= threshold: fake; below: real; fewer than scoring.min_samples samples: insufficient"
    )
    video_score: float = Field(description="Mean P(fake) over all samples (FSFM video-level protocol)")
    max_window_score: float | None = Field(description="Highest window score with >= min_samples in the window")
    max_p_fake: float
    samples: int
    first_s: float
    last_s: float
    alerted: bool = Field(description="Whether the live alerting raised at least one alert")
    alerts: list[AlertSpan]
    thumbnail: str | None = Field(description="JPEG of the face with the highest P(fake), relative to the report")
    thumbnail_s: float | None = Field(description="Video time of that face")


class AnalysisV1(BaseModel):
    """verdicts.json: what was analysed, with what, and one verdict per identity."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["streamguard.analysis.v1"] = Field(ANALYSIS_SCHEMA, alias="schema")
    video: str
    stream: str = Field(description="Stream name used in events.jsonl")
    duration_s: float | None = Field(description="The container's duration, when it states one")
    frames_analysed: int
    complete: bool = Field(description="False when decoding failed part-way; see error")
    error: str | None
    model: ModelInfo
    analysis_fps: float
    threshold: float = Field(description="The threshold that applied (config, else the model's calibrated one, else 0.5)")
    threshold_source: str = Field(description="config | calibrated | default")
    scoring: ScoringConfig
    events: int = Field(description="Lines in events.jsonl: face verdicts and stream state changes")
    identities: list[IdentityVerdict]

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


def alert_spans(events: Iterable[EventV1], scores: IdentityScores) -> list[AlertSpan]:
    """Pair each alert with its clear (by id); one still open ends at the last sample.

    The peak is the highest window score while the alert was open, not only the
    published ones (updates go out only when the score moved enough).
    """
    chains: dict[str, list[EventV1]] = {}
    for event in events:
        chains.setdefault(event.id, []).append(event)
    spans = []
    for alert_id, chain in chains.items():
        clear = next((e for e in chain if e.type == "clear"), None)
        start, end = chain[0].pts, clear.pts if clear else float(scores.t[-1])
        during = (scores.t >= start) & (scores.t <= end)
        spans.append(
            AlertSpan(
                id=alert_id,
                start_s=start,
                end_s=end,
                peak_score=float(scores.window[during].max()) if during.any() else chain[0].score,
                clear_reason=clear.reason if clear else None,
            )
        )
    return sorted(spans, key=lambda s: s.start_s)


def identity_verdict(
    scores: IdentityScores,
    events: Iterable[EventV1],
    cfg: ScoringConfig,
    threshold: float,
    thumbnail: str | None,
    thumbnail_s: float | None,
) -> IdentityVerdict:
    """The verdict for one identity; `events` are the events published for it."""
    video_score = float(scores.p_fake.mean())
    full = scores.window_n >= cfg.min_samples
    spans = alert_spans(events, scores)
    if len(scores.t) < cfg.min_samples:
        verdict = "insufficient"
    else:
        verdict = "fake" if video_score >= threshold else "real"
    return IdentityVerdict(
        identity=scores.identity,
        verdict=verdict,
        video_score=video_score,
        max_window_score=float(scores.window[full].max()) if full.any() else None,
        max_p_fake=float(scores.p_fake.max()),
        samples=len(scores.t),
        first_s=float(scores.t[0]),
        last_s=float(scores.t[-1]),
        alerted=bool(spans),
        alerts=spans,
        thumbnail=thumbnail,
        thumbnail_s=thumbnail_s,
    )
