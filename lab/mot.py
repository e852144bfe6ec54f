"""CLEAR-MOT identity counts of a tracker against ground truth.

What matters for alerts is that one person keeps one id: an ID switch moves a
person's scores into another window (or a fresh one), a fragmentation leaves a
gap in it. The counting follows CLEAR MOT and py-motmetrics (not a dependency
here: it would pull pandas for a hundred lines):

- per frame, a ground-truth face keeps its previous hypothesis if they still
  overlap (IoU >= threshold); the rest are matched by Hungarian assignment on IoU;
- an ID switch: a face matched to another id than the one it last had;
- a fragmentation: a face tracked, then missed while visible, then tracked again;
- faces not visible (out of the frame, hidden behind another) count neither as
  misses nor, when a hypothesis sits on them, as false positives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from streamguard.faces.tracker import assign, iou_matrix


@dataclass(frozen=True)
class MotCounts:
    frames: int
    objects: int  # visible ground-truth faces, summed over frames
    matches: int
    misses: int
    false_positives: int
    id_switches: int
    fragmentations: int
    mean_iou: float  # over matches: how well the boxes sit on the faces

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class MotAccumulator:
    """Feed it one frame at a time with `update`; read `counts()`."""

    def __init__(self, iou_threshold: float = 0.5) -> None:
        self.iou_threshold = iou_threshold
        self._last: dict[int, int] = {}  # ground-truth id -> hypothesis id it last matched
        self._interrupted: set[int] = set()  # ground-truth ids missed since they were last tracked
        self._frames = self._objects = self._misses = self._false_positives = 0
        self._id_switches = self._fragmentations = 0
        self._ious: list[float] = []

    def update(
        self, gt_ids: np.ndarray, gt_boxes: np.ndarray, gt_visible: np.ndarray, hyp_ids: np.ndarray, hyp_boxes: np.ndarray
    ) -> None:
        """One frame: ground truth int [N], float [N, 4], bool [N]; hypotheses int [M], float [M, 4]."""
        gt_boxes = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
        hyp_boxes = np.asarray(hyp_boxes, dtype=np.float32).reshape(-1, 4)
        gt_ids, hyp_ids = [int(i) for i in gt_ids], [int(i) for i in hyp_ids]
        iou = iou_matrix(gt_boxes, hyp_boxes)
        visible = [g for g in range(len(gt_ids)) if gt_visible[g]]

        pairs = {}  # ground-truth row -> hypothesis column
        for g in visible:  # CLEAR MOT: keep last frame's correspondence while it holds
            if gt_ids[g] in self._last and self._last[gt_ids[g]] in hyp_ids:
                h = hyp_ids.index(self._last[gt_ids[g]])
                if iou[g, h] >= self.iou_threshold and h not in pairs.values():
                    pairs[g] = h
        rest_g = [g for g in visible if g not in pairs]
        rest_h = [h for h in range(len(hyp_ids)) if h not in pairs.values()]
        for r, c in assign(iou[np.ix_(rest_g, rest_h)], self.iou_threshold):
            pairs[rest_g[r]] = rest_h[c]

        for g, h in pairs.items():
            gt, hyp = gt_ids[g], hyp_ids[h]
            if gt in self._last and self._last[gt] != hyp:
                self._id_switches += 1
            if gt in self._interrupted:
                self._fragmentations += 1
                self._interrupted.discard(gt)
            self._last[gt] = hyp
            self._ious.append(float(iou[g, h]))
        for g in visible:
            if g not in pairs and gt_ids[g] in self._last:
                self._interrupted.add(gt_ids[g])

        hidden = [g for g in range(len(gt_ids)) if not gt_visible[g]]
        unmatched = [h for h in range(len(hyp_ids)) if h not in pairs.values()]
        on_hidden = {h for h in unmatched if hidden and iou[hidden, h].max() >= self.iou_threshold}
        self._frames += 1
        self._objects += len(visible)
        self._misses += len(visible) - len(pairs)
        self._false_positives += len(unmatched) - len(on_hidden)

    def counts(self) -> MotCounts:
        return MotCounts(
            frames=self._frames,
            objects=self._objects,
            matches=len(self._ious),
            misses=self._misses,
            false_positives=self._false_positives,
            id_switches=self._id_switches,
            fragmentations=self._fragmentations,
            mean_iou=float(np.mean(self._ious)) if self._ious else 0.0,
        )
