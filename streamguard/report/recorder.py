"""What an offline run produced, captured at the pipeline's two outlets.

The pipeline publishes events to a sink and hands every scored face to an
`on_sample` hook; offline analysis plugs a file sink and a recorder into those, so
the report is built from exactly what a live run of the same video computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamguard.events import EventV1, ScoresV1, StreamEventV1
from streamguard.types import Sample


class JsonlSink:
    """Writes each event as one JSON line (what Redis would have received) and keeps it.

    That includes the stream's state changes (`type: "stream"`) beside the face
    verdicts, as on the live channel. Lines are flushed as they come, so
    `tail -f events.jsonl` follows a long run.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[EventV1 | StreamEventV1] = []
        self._file = path.open("w", encoding="utf-8", buffering=1)  # line-buffered

    def publish(self, event: EventV1 | StreamEventV1, attachments: dict[str, bytes] | None = None) -> None:
        """Write the event; `attachments` (thumbnails stored in Redis) are off offline: the report has its own."""
        self._file.write(event.to_json() + "\n")
        self.events.append(event)

    def publish_scores(self, scores: ScoresV1) -> None:
        """Discarded: the live-scores feed is for dashboards; scores.csv holds every sample."""

    async def start(self) -> None:
        """Nothing to connect to: the file is open from the start."""

    async def close(self, timeout: float = 0.0) -> None:
        """Close the file (every line is written already; `timeout` is the EventSink signature's)."""
        self._file.close()


@dataclass(frozen=True, slots=True)
class ScoreRow:
    """One scored face: seconds into the video, the identity (track), P(fake)."""

    t: float
    identity: int
    p_fake: float


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """The crop shown for an identity: its most suspicious face (highest P(fake))."""

    t: float
    p_fake: float
    crop: np.ndarray  # uint8 [S, S, 3] RGB


class SampleRecorder:
    """The `on_sample` hook: every score, and one thumbnail per identity.

    Keys on `face.track` only, so identities merged upstream (re-identification)
    stay merged here. Keeps one crop per identity, not one per sample, so memory
    stays small on long videos.
    """

    def __init__(self) -> None:
        self.rows: list[ScoreRow] = []
        self.thumbnails: dict[int, Thumbnail] = {}

    def __call__(self, sample: Sample) -> None:
        face = sample.face
        self.rows.append(ScoreRow(face.pts, face.track, sample.p_fake))
        best = self.thumbnails.get(face.track)
        if best is None or sample.p_fake > best.p_fake:
            self.thumbnails[face.track] = Thumbnail(face.pts, sample.p_fake, face.crop)
