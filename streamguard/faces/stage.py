"""Frames in, tracked model-ready faces out: detect, track, crop; then re-identify.

One stage per stream, because the detector's mediapipe graph and the tracker's
ids both belong to one stream. The pipeline calls `process` from a worker
thread (asyncio.to_thread) so detection never blocks the event loop, then runs
the model on the crops and hands the embeddings to `reidentify`; calls for one
stream are sequential, never concurrent, which is all the detector and the
tracker need. Tracks age on the stream's own clock (`Frame.pts`), so a file
analysed faster than real time keeps the same track lifetimes as a live source.

Ids: a face of a new track carries a provisional id from `process`; the ids
that `reidentify` returns are final (a new face may have taken back the id of
a face lost a moment ago, so its score window continues).

Detection cost: with `detect_every` = k the detector runs on every k-th
analysed frame; in between, the faces tracked at the last detection are
cropped at their Kalman-predicted boxes. New faces then wait up to k - 1 frames
and a predicted box drifts from the face (docs/benchmarks.md measures both).
"""

from __future__ import annotations

import math
from dataclasses import replace
from types import TracebackType

import numpy as np

from streamguard import metrics
from streamguard.config import CropConfig, DetectorConfig, TrackerConfig
from streamguard.faces.crops import crop_face, normalise_box
from streamguard.faces.detector import FaceDetector
from streamguard.faces.tracker import FaceTracker, TrackBox
from streamguard.types import Detection, Face, Frame


class FaceStage:
    """Detector + tracker + cropper of one stream."""

    def __init__(self, stream: str, detector_cfg: DetectorConfig, tracker_cfg: TrackerConfig, crop_cfg: CropConfig) -> None:
        self._stream = stream
        self._crop_cfg = crop_cfg
        self._detect_every = detector_cfg.detect_every
        self._min_confidence = detector_cfg.min_confidence
        self._min_face_px = detector_cfg.min_face_px
        self._detector = FaceDetector(detector_cfg)
        self._tracker = FaceTracker(tracker_cfg, new_track_score=detector_cfg.min_confidence)
        self._due = 0  # analysed frames until the detector runs again
        self._last_pts: float | None = None
        self._diagonal = 1.0  # of the latest frame, for re-id distances
        self._faces_detected = metrics.FACES_DETECTED.labels(stream=stream)
        self._active_tracks = metrics.ACTIVE_TRACKS.labels(stream=stream)

    def process(self, frame: Frame) -> tuple[list[Face], list[int]]:
        """The tracked faces in `frame` (ids of new tracks are provisional) and the ids that ended."""
        return self.track(frame, self.detect(frame))

    def detect(self, frame: Frame) -> list[Detection] | None:
        """Run the detector on `frame` if it is due, else None (`track` will predict).

        The expensive half of `process`, and it leaves the tracker alone: the pipeline
        runs it for the next frame while the model still scores this one, before this
        frame's `reidentify`. Call `detect` and `track` alternately, frames in order.
        """
        restarted = self._last_pts is not None and frame.pts < self._last_pts  # every track ends: detect now
        self._last_pts = frame.pts
        if self._due > 0 and not restarted:
            self._due -= 1
            return None
        self._due = self._detect_every - 1
        detections = self._detector.candidates(frame.rgb)
        self._faces_detected.inc(sum(d.score >= self._min_confidence for d in detections))
        return detections

    def track(self, frame: Frame, detections: list[Detection] | None) -> tuple[list[Face], list[int]]:
        """`frame`'s faces given its `detect` result: tracked, cropped; and the ids that ended."""
        if detections is None:
            step = self._tracker.predict(frame.pts)
        else:
            step = self._tracker.update(detections, frame.pts)
        self._active_tracks.set(len(self._tracker.active))
        w, h = frame.size
        self._diagonal = math.hypot(w, h)
        faces = [self._face(frame, tb) for tb in step.tracks]
        return [f for f in faces if f is not None], step.ended

    def reidentify(self, faces: list[Face], embeddings: np.ndarray) -> list[Face]:
        """`faces` (of the latest `process`) with final ids, given the model's embeddings [N, D] of their crops.

        Teaches the tracker each face's appearance; a new face that looks like one lost
        within `reid_window_s` takes its id back, and a face that motion gave to one
        track but that looks like another known face is given to the right one (a
        camera cut). Same faces, same order; call it before scoring them.
        """
        if not faces:
            return []
        boxes = np.stack([f.box for f in faces]).astype(np.float32)
        merged = self._tracker.reidentify([f.track for f in faces], boxes, embeddings, self._diagonal)
        self._active_tracks.set(len(self._tracker.active))
        return [replace(f, track=merged[f.track]) if f.track in merged else f for f in faces]

    def _face(self, frame: Frame, tb: TrackBox) -> Face | None:
        w, h = frame.size
        box = tb.box
        if tb.predicted:  # a prediction may run past the border; a detection is clipped already
            box = np.clip(box, 0, np.array([w, h, w, h], dtype=np.float32))
            if min(box[2] - box[0], box[3] - box[1]) < self._min_face_px:
                return None
        return Face(
            stream=self._stream,
            track=tb.id,
            box=box,
            box_norm=normalise_box(box, w, h),
            det_score=tb.score,
            crop=crop_face(frame.rgb, box, self._crop_cfg.scale, self._crop_cfg.size),
            pts=frame.pts,
            wall_ts=frame.wall_ts,
        )

    def finish(self) -> list[int]:
        """End every track (the stream ended); returns their ids."""
        ended = self._tracker.end_all()
        self._active_tracks.set(0)
        return ended

    def close(self) -> None:
        """Release the detector; safe to call twice. Call `finish` first to learn which tracks ended."""
        self._active_tracks.set(0)
        self._detector.close()

    def __enter__(self) -> FaceStage:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
