"""Frames in, tracked model-ready faces out: detect, track, crop.

One stage per stream, because the detector's mediapipe graph and the tracker's
ids both belong to one stream. The pipeline calls `process` from a worker
thread (asyncio.to_thread) so detection never blocks the event loop; calls for
one stream are sequential, which is all the detector needs. Tracks age on the
stream's own clock (`Frame.pts`), so a file analysed faster than real time keeps
the same track lifetimes as a live source.
"""

from __future__ import annotations

from types import TracebackType

from streamguard import metrics
from streamguard.config import CropConfig, DetectorConfig, TrackerConfig
from streamguard.faces.crops import crop_face, normalise_box
from streamguard.faces.detector import FaceDetector
from streamguard.faces.tracker import IouTracker
from streamguard.types import Face, Frame


class FaceStage:
    """Detector + tracker + cropper of one stream."""

    def __init__(self, stream: str, detector_cfg: DetectorConfig, tracker_cfg: TrackerConfig, crop_cfg: CropConfig) -> None:
        self._stream = stream
        self._crop_cfg = crop_cfg
        self._detector = FaceDetector(detector_cfg)
        self._tracker = IouTracker(tracker_cfg)
        self._faces_detected = metrics.FACES_DETECTED.labels(stream=stream)
        self._active_tracks = metrics.ACTIVE_TRACKS.labels(stream=stream)

    def process(self, frame: Frame) -> tuple[list[Face], list[int]]:
        """The tracked faces in `frame` (one per track with a detection now) and the ids that ended."""
        detections = self._detector.detect(frame.rgb)
        self._faces_detected.inc(len(detections))
        step = self._tracker.update(detections, frame.pts)
        self._active_tracks.set(len(self._tracker.active))
        w, h = frame.size
        faces = [
            Face(
                stream=self._stream,
                track=track.id,
                box=track.box,
                box_norm=normalise_box(track.box, w, h),
                det_score=track.score,
                crop=crop_face(frame.rgb, track.box, self._crop_cfg.scale, self._crop_cfg.size),
                pts=frame.pts,
                wall_ts=frame.wall_ts,
            )
            for track in step.tracks
        ]
        return faces, step.ended

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
