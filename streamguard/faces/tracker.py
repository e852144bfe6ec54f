"""Give each face a stable id across frames, so scores can be pooled per person.

The scoring stage averages a face's deepfake probability over a sliding window;
that only means something if the id follows one person. This is ByteTrack for
faces, on the stream's clock:

- Each track carries a constant-velocity Kalman state (`kalman.py`), predicted
  to the time of every frame, so a moving face that the detector misses, or
  that passes behind another, is still where the next detection expects it.
- Association has two stages. Confident detections (>= `new_track_score`, the
  detector's `min_confidence`) are matched first, by IoU with the predicted
  boxes (Hungarian, scipy), to every track that is tracked or was lost less than
  `max_missed_s` ago. The IoU is buffered by the prediction's uncertainty (both
  boxes grow by 1 sd of the predicted centre, C-BIoU style): a track seen once
  has no velocity yet, and at 5 fps, or with the detector skipping frames, a
  face moves further between detections than ByteTrack's 30 fps ever sees.
  Then low-confidence detections, which are often real faces half hidden or
  blurred, may continue the tracks still unmatched, at a stricter plain IoU.
  Only a confident detection starts a new track: the low ones include the
  false faces that the 0.6 threshold exists to keep out.
- A track that misses is lost, not ended. Motion can find it again for
  `max_missed_s`. If it has an appearance (an embedding average, given by
  `reidentify` after the model ran), a new face can take its id back for
  `reid_window_s` (`reid.py`); only then does it end, so its score window and
  any open alert survive an occlusion, a camera cut or a short walk out of view.
  A track without an appearance cannot come back and ends after `max_missed_s`.
- The appearance also vetoes motion: a detection that IoU gave to a track but
  whose embedding does not look like it (a camera cut that put one face where
  another was) is taken off that track again and starts its own, which re-id
  may then give the right old id (BoT-SORT vetoes matches the same way, inside
  association; here embeddings only exist after the model ran on the crops).
- `predict` serves frames where the detector did not run (`detect_every`): the
  faces tracked by the last detection (and one before it) at their predicted boxes.

Time is the stream's own timeline (seconds). If it goes backwards (a source
restarted its timeline) every track ends, since the frames are no longer
comparable.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from streamguard.config import TrackerConfig
from streamguard.faces import kalman, reid
from streamguard.types import Detection

# ByteTrack's second stage: a low-confidence detection continues a track only when
# it overlaps the prediction well, since it is less sure to be the face at all.
SECOND_STAGE_IOU = 0.5


@dataclass(eq=False)
class Track:
    """One face followed over time (mutable; owned by the tracker)."""

    id: int
    mean: np.ndarray  # float64 [8] Kalman state (cx, cy, a, h) + velocities
    cov: np.ndarray  # float64 [8, 8]
    t: float  # time the state refers to
    box: np.ndarray  # float32 [4] pixels: the last matched detection's box
    score: float  # detector score of the last match
    hits: int  # frames it was found in: detections matched, and a re-identified predicted box
    first_seen: float
    last_seen: float  # time of the last matched detection
    tracked: bool = True  # matched in the last detection update; otherwise lost
    appearance: np.ndarray | None = None  # float32 [D] unit embedding average
    reid_pending: bool = True  # no embedding seen yet: may still take a lost track's id

    @property
    def predicted_box(self) -> np.ndarray:
        return kalman.state_to_box(self.mean)

    @property
    def uncertainty(self) -> float:
        """How far off the predicted box may be, in pixels: 1 sd of its centre, at most half its height."""
        return float(min(np.sqrt(max(self.cov[0, 0], self.cov[1, 1])), 0.5 * self.mean[3]))


@dataclass(frozen=True)
class _Snapshot:
    """What a step changes in a track, to undo it."""

    mean: np.ndarray
    cov: np.ndarray
    box: np.ndarray
    score: float
    hits: int
    last_seen: float

    @classmethod
    def of(cls, track: Track) -> _Snapshot:
        return cls(track.mean, track.cov, track.box, track.score, track.hits, track.last_seen)

    def restore(self, track: Track) -> None:
        track.mean, track.cov, track.box, track.score = self.mean, self.cov, self.box, self.score
        track.hits, track.last_seen = self.hits, self.last_seen


@dataclass(frozen=True)
class TrackBox:
    """Where one track is in this frame."""

    id: int
    box: np.ndarray  # float32 [4] pixels: the detection's box, or the prediction when `predicted`
    score: float  # detector score of the track's last match
    predicted: bool  # no detection this frame (the detector did not run)


@dataclass(frozen=True)
class TrackerStep:
    """What one `update` or `predict` changed."""

    tracks: list[TrackBox]  # the tracks in this frame, by id
    ended: list[int]  # ids that ended in this step


def iou_matrix(a: np.ndarray, b: np.ndarray, buffer: np.ndarray | None = None) -> np.ndarray:
    """IoU of every box in a [N, 4] with every box in b [M, 4] -> float32 [N, M].

    With `buffer` float [N] (pixels), row i compares a[i] and every box of b each
    grown by buffer[i] on every side: the buffered IoU of C-BIoU, which lets a box
    that moved further than its size still overlap the place it was expected.
    """
    grow = np.zeros(len(a), dtype=np.float32) if buffer is None else np.asarray(buffer, dtype=np.float32)
    sign = np.array([-1, -1, 1, 1], dtype=np.float32)
    a = a + grow[:, None] * sign  # [N, 4]
    b = b[None, :, :] + grow[:, None, None] * sign  # [N, M, 4]
    x0 = np.maximum(a[:, None, 0], b[..., 0])
    y0 = np.maximum(a[:, None, 1], b[..., 1])
    x1 = np.minimum(a[:, None, 2], b[..., 2])
    y1 = np.minimum(a[:, None, 3], b[..., 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a[:, None] + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0).astype(np.float32)


def assign(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, col) pairs of the assignment with the largest total IoU among pairs >= threshold."""
    admissible = np.where(iou >= threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(admissible, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if admissible[r, c] > 0]


def _boxes(items: list[Detection] | list[Track], predicted: bool = False) -> np.ndarray:
    rows = [it.predicted_box if predicted else it.box for it in items]  # type: ignore[union-attr]
    return np.array(rows, dtype=np.float32).reshape(-1, 4)


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


class FaceTracker:
    """Tracks the faces of one stream; ids start at 1 and are never reused."""

    def __init__(self, cfg: TrackerConfig, new_track_score: float = 0.6) -> None:
        self._cfg = cfg
        self._new_track_score = new_track_score
        self._tracks: list[Track] = []
        self._ids = itertools.count(1)
        self._t: float | None = None
        # The tracks of the latest step, as they were before it: `reidentify` may undo a match.
        self._undo: dict[int, _Snapshot] = {}

    @property
    def active(self) -> list[Track]:
        """Every track not ended: tracked, and lost ones that may still come back."""
        return list(self._tracks)

    def update(self, detections: list[Detection], t: float) -> TrackerStep:
        """Match the detections of the frame at time `t` (seconds) to the tracks."""
        ended = self._advance(t)
        high = [d for d in detections if d.score >= self._new_track_score]
        low = [d for d in detections if d.score < self._new_track_score]

        followed = [tr for tr in self._tracks if tr.tracked or t - tr.last_seen <= self._cfg.max_missed_s]
        buffers = np.array([tr.uncertainty for tr in followed], dtype=np.float32)
        first = assign(iou_matrix(_boxes(followed, predicted=True), _boxes(high), buffers), self._cfg.iou_threshold)
        taken = {row for row, _ in first}
        still_tracked = [tr for i, tr in enumerate(followed) if i not in taken and tr.tracked]
        second = assign(iou_matrix(_boxes(still_tracked, predicted=True), _boxes(low)), SECOND_STAGE_IOU)

        matched = [(followed[r], high[c]) for r, c in first] + [(still_tracked[r], low[c]) for r, c in second]
        for track in self._tracks:
            track.tracked = False
        self._undo = {tr.id: _Snapshot.of(tr) for tr, _ in matched}
        for track, det in matched:
            self._correct(track, det, t)
        used = {c for _, c in first}
        born = [self._start(det, t) for c, det in enumerate(high) if c not in used]

        seen = sorted([tr for tr, _ in matched] + born, key=lambda tr: tr.id)
        return TrackerStep([TrackBox(tr.id, tr.box.copy(), tr.score, predicted=False) for tr in seen], ended)

    def predict(self, t: float) -> TrackerStep:
        """A frame the detector skipped: the confirmed tracked faces at their predicted boxes.

        Confirmed: matched by the last detection and at least once before, so that the
        velocity is measured; a face seen once would only be repeated where it was.
        """
        ended = self._advance(t)
        tracked = [tr for tr in self._tracks if tr.tracked and tr.hits >= 2]
        self._undo = {tr.id: _Snapshot.of(tr) for tr in tracked}
        return TrackerStep([TrackBox(tr.id, tr.predicted_box, tr.score, predicted=True) for tr in tracked], ended)

    def reidentify(self, ids: list[int], boxes: np.ndarray, embeddings: np.ndarray, diagonal: float) -> dict[int, int]:
        """Check and learn the appearance of this frame's faces; returns {id from `update`: final id} where they differ.

        ids: track ids of the faces of the latest frame, boxes float32 [N, 4] their boxes,
        embeddings [N, D] the model's embeddings of their crops (any scale), diagonal the
        frame diagonal in pixels. Two things can change an id:
        - a face that motion gave to a track (a detection, or a predicted box on a frame
          the detector skipped) but that does not look like it and does look like
          another known face (a camera cut swapped two faces, say) is taken off that
          track, which is lost, and starts a new one;
        - a new track's first embedding decides, once, whether it is a lost face come back.
        A crop that overlaps another face shows some of that face too: it is neither
        learnt from nor allowed to veto.
        """
        unit = reid.normalise(embeddings)
        final = list(ids)
        by_id = {tr.id: tr for tr in self._tracks}
        rows = [i for i, track_id in enumerate(ids) if track_id in by_id]
        overlap = iou_matrix(boxes, boxes)
        np.fill_diagonal(overlap, 0.0)
        isolated = ~overlap.any(axis=1)

        known = [tr for tr in self._tracks if tr.appearance is not None]
        for i in rows:
            track = by_id[ids[i]]
            if track.id in self._undo and track.appearance is not None and isolated[i] and self._looks_like_another(
                unit[i], track, known
            ):
                young = self._detach(track, boxes[i])
                by_id[young.id] = young
                final[i] = young.id

        new = [i for i in rows if by_id[final[i]].reid_pending]
        lost = [tr for tr in self._tracks if not tr.tracked and tr.appearance is not None]
        allowed = np.array(
            [[self._may_be(by_id[final[i]], old) for old in lost] for i in new], dtype=bool
        ).reshape(len(new), len(lost))
        distance = np.linalg.norm(_centres(boxes[new])[:, None] - _centres(_boxes(lost))[None], axis=-1) / diagonal
        appearances = np.array([tr.appearance for tr in lost], dtype=np.float32).reshape(len(lost), unit.shape[1])
        pairs = reid.match(
            unit[new], appearances, distance, allowed, self._cfg.reid_threshold, self._cfg.reid_position_weight
        )
        for n, m in pairs:
            self._merge(by_id[final[new[n]]], into=lost[m])
            final[new[n]] = lost[m].id
            by_id[lost[m].id] = lost[m]

        for i in rows:
            track = by_id[final[i]]
            if track.reid_pending or isolated[i]:
                track.appearance = reid.blend(None if track.reid_pending else track.appearance, unit[i])
            track.reid_pending = False
        self._undo = {}
        return {a: b for a, b in zip(ids, final) if a != b}

    def end_all(self) -> list[int]:
        """End every track (stream end or restart); returns their ids."""
        ids = sorted(tr.id for tr in self._tracks)
        self._tracks = []
        self._t = None
        self._undo = {}
        return ids

    def _advance(self, t: float) -> list[int]:
        """Move to time t: end what expired and predict every state to t."""
        ended = self.end_all() if self._t is not None and t < self._t else []
        self._t = t
        expired = {tr.id for tr in self._tracks if not tr.tracked and t - tr.last_seen > self._lifetime(tr)}
        self._tracks = [tr for tr in self._tracks if tr.id not in expired]
        for track in self._tracks:
            track.mean, track.cov = kalman.predict(track.mean, track.cov, t - track.t)
            track.t = t
        return ended + sorted(expired)

    def _lifetime(self, track: Track) -> float:
        """How long a lost track stays: until re-id can no longer bring it back."""
        if track.appearance is None:
            return self._cfg.max_missed_s
        return max(self._cfg.max_missed_s, self._cfg.reid_window_s)

    def _looks_like_another(self, unit: np.ndarray, track: Track, known: list[Track]) -> bool:
        """Is this unit embedding, given to `track` by motion, someone else we know rather than `track`?

        Only positive evidence vetoes: an embedding merely unlike its track (a turned
        head, a noisy crop) keeps the match that motion made.
        """
        own = float(unit @ track.appearance)
        others = [float(unit @ tr.appearance) for tr in known if tr is not track]
        best = max(others, default=-1.0)
        return own < self._cfg.reid_threshold <= best and best > own

    def _may_be(self, young: Track, old: Track) -> bool:
        """Can `young` be `old` come back? Never seen together, and within the re-id window."""
        gap = young.first_seen - old.last_seen
        return 0 < gap <= self._cfg.reid_window_s

    def _start(self, det: Detection, t: float) -> Track:
        mean, cov = kalman.initiate(det.box)
        track = Track(next(self._ids), mean, cov, t, det.box.astype(np.float32), det.score, 1, t, t)
        self._tracks.append(track)
        return track

    @staticmethod
    def _correct(track: Track, det: Detection, t: float) -> None:
        track.mean, track.cov = kalman.update(track.mean, track.cov, det.box)
        track.box = det.box.astype(np.float32)
        track.score = det.score
        track.hits += 1
        track.last_seen = t
        track.tracked = True

    def _detach(self, track: Track, box: np.ndarray) -> Track:
        """Take this frame's face at `box` off `track` (lost, as it was before) and start a new track there."""
        young = self._start(Detection(np.asarray(box, dtype=np.float32), track.score), track.t)
        self._undo.pop(track.id).restore(track)
        track.tracked = False
        return young

    def _merge(self, young: Track, into: Track) -> None:
        """`into` continues as `young` from now on; `young`'s own id is dropped."""
        into.mean, into.cov, into.t = young.mean, young.cov, young.t
        into.box, into.score, into.last_seen, into.tracked = young.box, young.score, young.last_seen, young.tracked
        into.hits += young.hits
        self._tracks.remove(young)
