"""Recent window scores per identity, for the console's chart ("why did it alert?").

The scorer keeps only the current window; the chart needs the last minutes. Points
come from the scores the pipeline already publishes (`scores_interval_s`) and from
the events themselves, so nothing is computed for the console. Bounded twice: each
identity keeps `horizon_s` seconds, and at most `max_identities` identities are kept
(the least recently updated go first).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

Key = tuple[str, int]  # (stream, track)


@dataclass
class Span:
    """An alert's life on the chart: opened, and cleared (None while open) with its reason."""

    alert_id: str
    opened: float
    cleared: float | None = None
    reason: str | None = None


@dataclass
class _Track:
    points: deque[tuple[float, float]] = field(default_factory=deque)
    spans: list[Span] = field(default_factory=list)


class ScoreHistory:
    def __init__(self, horizon_s: float, max_identities: int) -> None:
        self.horizon_s = horizon_s
        self.max_identities = max_identities
        self._tracks: OrderedDict[Key, _Track] = OrderedDict()
        self.thresholds: dict[str, float] = {}

    def add(self, stream: str, track: int, ts: float, score: float) -> None:
        entry = self._entry((stream, track))
        points = entry.points
        if points and ts < points[-1][0]:
            return  # out of order (an event behind a scores message): the chart's line only goes forward
        points.append((ts, score))
        while points and points[0][0] < ts - self.horizon_s:
            points.popleft()
        entry.spans = [s for s in entry.spans if s.cleared is None or s.cleared >= ts - self.horizon_s]

    def opened(self, stream: str, track: int, alert_id: str, ts: float) -> None:
        self._entry((stream, track)).spans.append(Span(alert_id, ts))

    def cleared(self, stream: str, track: int, alert_id: str, ts: float, reason: str) -> None:
        for span in self._entry((stream, track)).spans:
            if span.alert_id == alert_id and span.cleared is None:
                span.cleared, span.reason = ts, reason

    def series(self, stream: str) -> dict[int, _Track]:
        return {track: entry for (name, track), entry in self._tracks.items() if name == stream}

    def forget(self, stream: str) -> None:
        for key in [k for k in self._tracks if k[0] == stream]:
            del self._tracks[key]
        self.thresholds.pop(stream, None)

    def __len__(self) -> int:
        return len(self._tracks)

    def _entry(self, key: Key) -> _Track:
        entry = self._tracks.get(key)
        if entry is None:
            entry = self._tracks[key] = _Track()
            while len(self._tracks) > self.max_identities:
                self._tracks.popitem(last=False)
        else:
            self._tracks.move_to_end(key)
        return entry
