"""What the console knows without asking the pipeline: every event on its way to the sink.

The composition root (app.running) puts `ConsoleHub.tee(sink)` between the pipeline
and the real sink, so the page's feed is made of the very events that go to Redis,
with no second path through the pipeline. The tee hands each event to the sink first,
then to the hub, which only appends to bounded structures (the feed's per-viewer
queues, the recent alerts and their face thumbnails, the score history) and never
waits; a bug here is logged and never reaches the pipeline.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from streamguard.config import ConsoleConfig
from streamguard.console.feed import Feed, Item
from streamguard.console.history import ScoreHistory
from streamguard.events import EventV1, ScoresV1, StreamEventV1
from streamguard.pipeline import EventPublisher

log = logging.getLogger(__name__)


class ConsoleTee:
    """An EventPublisher that publishes to `sink`, then shows the event to the hub."""

    def __init__(self, sink: EventPublisher, hub: ConsoleHub) -> None:
        self.sink = sink
        self.hub = hub

    def publish(self, event: EventV1 | StreamEventV1, attachments: dict[str, bytes] | None = None) -> None:
        self.sink.publish(event, attachments)
        try:
            self.hub.on_event(event, attachments)
        except Exception:  # the console must never cost an event its delivery
            log.exception("console: could not record event %s", getattr(event, "id", event.type))

    def publish_scores(self, scores: ScoresV1) -> None:
        self.sink.publish_scores(scores)
        try:
            self.hub.on_scores(scores)
        except Exception:
            log.exception("console: could not record the scores of stream %s", scores.stream)


class ConsoleHub:
    def __init__(self, cfg: ConsoleConfig | None = None) -> None:
        self.cfg = cfg or ConsoleConfig()
        self.feed = Feed(self.cfg.feed_queue, self.cfg.max_viewers)
        self.history = ScoreHistory(self.cfg.history_s, self.cfg.history_identities)
        self.alerts: OrderedDict[str, Item] = OrderedDict()  # alert id -> its latest view, newest last
        self.faces: OrderedDict[str, bytes] = OrderedDict()  # alert id -> face crop JPEG
        self.latency: dict[str, float] = {}  # stream -> seconds from frame arrival to its scores being published

    def tee(self, sink: EventPublisher) -> ConsoleTee:
        return ConsoleTee(sink, self)

    def on_event(self, event: EventV1 | StreamEventV1, attachments: dict[str, bytes] | None) -> None:
        if isinstance(event, StreamEventV1):
            self.feed.publish({"kind": "stream", "stream": event.stream, "state": event.state, "detail": event.detail,
                               "ts": event.ts})
            return
        self.history.thresholds[event.stream] = event.threshold
        self.history.add(event.stream, event.track, event.ts, event.score)
        view = self.alerts.pop(event.id, None)
        if event.type == "alert" or view is None:
            view = {"kind": "alert", "id": event.id, "stream": event.stream, "track": event.track, "opened": event.ts,
                    "cleared": None, "face": False}
            if event.type == "alert":
                self.history.opened(event.stream, event.track, event.id, event.ts)
        view.update(type=event.type, score=event.score, threshold=event.threshold, reason=event.reason, ts=event.ts,
                    samples=event.samples)
        if event.type == "clear":
            view["cleared"] = event.ts
            self.history.cleared(event.stream, event.track, event.id, event.ts, event.reason)
        face = next((blob for key, blob in (attachments or {}).items() if key.endswith(":face")), None)
        if face is not None:
            self.faces[event.id] = face
            view["face"] = True
            while len(self.faces) > self.cfg.recent_alerts:
                self.faces.popitem(last=False)
        self.alerts[event.id] = view
        while len(self.alerts) > self.cfg.recent_alerts:
            gone, _ = self.alerts.popitem(last=False)
            self.faces.pop(gone, None)
        self.feed.publish(dict(view))

    def on_scores(self, scores: ScoresV1) -> None:
        self.history.thresholds[scores.stream] = scores.threshold
        self.latency[scores.stream] = max(0.0, time.time() - scores.ts)
        for ident in scores.identities:
            self.history.add(scores.stream, ident.track, scores.ts, ident.score)

    def recent(self) -> list[Item]:
        """The alerts kept, newest first (what a page shows before the feed brings more)."""
        return [dict(view) for view in reversed(self.alerts.values())]

    def chart(self, stream: str) -> dict[str, Any]:
        """The stream's identities: their scores over the last `history_s` seconds and their alert spans."""
        return {
            "stream": stream,
            "now": time.time(),
            "horizon_s": self.history.horizon_s,
            "threshold": self.history.thresholds.get(stream),
            "identities": {
                str(track): {
                    "points": [[round(t, 3), round(s, 4)] for t, s in entry.points],
                    "alerts": [{"id": s.alert_id, "opened": s.opened, "cleared": s.cleared, "reason": s.reason}
                               for s in entry.spans],
                }
                for track, entry in self.history.series(stream).items()
            },
        }

    def forget_gone(self, streams: set[str]) -> None:
        """Drop what is kept about streams no longer in `streams` (removed through the API)."""
        for gone in (set(self.history.thresholds) | set(self.latency)) - streams:
            self.history.forget(gone)
            self.latency.pop(gone, None)
