"""Give each face a stable id across frames, so scores can be pooled per person.

The scoring stage averages a face's deepfake probability over a sliding window;
that only means something if the id follows one person. An IoU tracker with
Hungarian assignment is enough for faces at analysis rate (5 fps), with one
addition: each track extrapolates its last box with a constant velocity before
matching. Without it a moving face that the detector misses for a few frames
drifts out of IoU range long before `max_missed_s` and comes back under a new
id. A Kalman tracker (ByteTrack-style) replaces `_predict` and the velocity
update in `_match_track` later; `iou_matrix` and `assign` stay.

Time is the stream's own timeline (seconds). If it goes backwards (a source
restarted its timeline) every track ends, since the frames are no longer
comparable.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from streamguard.config import TrackerConfig
from streamguard.types import Detection


@dataclass(eq=False)
class Track:
    """One face followed over time. `box` is the last matched detection's box."""

    id: int
    box: np.ndarray  # float32 [4] pixels x0, y0, x1, y1
    score: float  # detector score of the last match
    hits: int  # detections matched so far
    first_seen: float
    last_seen: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.float32))  # float32 [4] px/s


@dataclass(frozen=True)
class TrackerStep:
    """What one `update` changed."""

    tracks: list[Track]  # snapshots of the tracks with a detection in this update (matched or born), by id
    ended: list[int]  # ids that ended in this update


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [N, 4] with every box in b [M, 4] -> float32 [N, M]."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0).astype(np.float32)


def assign(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, col) pairs of the assignment with the largest total IoU among pairs >= threshold."""
    admissible = np.where(iou >= threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(admissible, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if admissible[r, c] > 0]


class IouTracker:
    """Tracks faces of one stream; ids start at 1 and are never reused."""

    def __init__(self, cfg: TrackerConfig) -> None:
        self._cfg = cfg
        self._tracks: list[Track] = []
        self._ids = itertools.count(1)
        self._t: float | None = None

    @property
    def active(self) -> list[Track]:
        """All live tracks, including those not seen in the last update."""
        return list(self._tracks)

    def update(self, detections: list[Detection], t: float) -> TrackerStep:
        """Match `detections` seen at time `t` (seconds) to the live tracks."""
        ended = self.end_all() if self._t is not None and t < self._t else []
        self._t = t

        expired = {tr.id for tr in self._tracks if t - tr.last_seen > self._cfg.max_missed_s}
        ended += sorted(expired)
        self._tracks = [tr for tr in self._tracks if tr.id not in expired]

        boxes = np.array([d.box for d in detections], dtype=np.float32).reshape(-1, 4)
        predicted = np.array([self._predict(tr, t) for tr in self._tracks], dtype=np.float32).reshape(-1, 4)
        pairs = assign(iou_matrix(predicted, boxes), self._cfg.iou_threshold)

        seen = []
        for row, col in pairs:
            track = self._tracks[row]
            self._match_track(track, detections[col], t)
            seen.append(track)
        matched_cols = {col for _, col in pairs}
        for col, det in enumerate(detections):
            if col not in matched_cols:
                track = Track(next(self._ids), det.box.astype(np.float32), det.score, 1, t, t)
                self._tracks.append(track)
                seen.append(track)
        return TrackerStep(tracks=[replace(tr) for tr in sorted(seen, key=lambda tr: tr.id)], ended=ended)

    def end_all(self) -> list[int]:
        """End every live track (stream end or restart); returns their ids."""
        ids = sorted(tr.id for tr in self._tracks)
        self._tracks = []
        self._t = None
        return ids

    @staticmethod
    def _predict(track: Track, t: float) -> np.ndarray:
        """Where the track's box should be at time t: constant velocity from its last match."""
        return track.box + track.velocity * (t - track.last_seen)

    @staticmethod
    def _match_track(track: Track, det: Detection, t: float) -> None:
        """Move the track to the detection; the velocity is a running mean of observed motion."""
        dt = t - track.last_seen
        if dt > 0:
            observed = (det.box - track.box) / dt
            track.velocity = (observed if track.hits == 1 else (track.velocity + observed) / 2).astype(np.float32)
        track.box = det.box.astype(np.float32)
        track.score = det.score
        track.hits += 1
        track.last_seen = t
