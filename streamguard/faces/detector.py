"""BlazeFace face detection from the model files inside the mediapipe wheel.

Nothing can be downloaded at run time, and mediapipe 0.10.21 is the last release
that ships its BlazeFace files, so both variants are loaded from the installed
package. The full-range model (small, far faces: what a camera sees) only runs
through the legacy `mp.solutions` graph, because the Tasks API of 0.10.21
rejects its anchor layout; the short-range model and any user-given file run
through the Tasks API.

Two thresholds: `min_confidence` (a face for sure: 0.6, below it false faces
appear) and `low_confidence` (a face the tracker may use to continue a track it
already follows, ByteTrack's second stage: often a real face half hidden or
blurred). Both backends get the lower one as their own threshold. The legacy
API's `min_detection_confidence` is its graph's `min_score_thresh`: a cut on raw
anchor scores before non-maximum suppression, so besides saving work it decides
which anchors NMS may merge (on the sample frames, thresholds 0.2 to 0.85 gave
the same boxes and scores). `candidates` then applies the threshold and the
minimum face size itself, so both backends honour one contract: boxes clipped to
the frame, score >= the threshold, both sides >= min_face_px (a face mostly
outside the frame is too little to judge). `detect` keeps only the sure faces.

Not thread-safe: a mediapipe graph keeps per-call state. Use one detector per
stream, called by one thread at a time (any thread, e.g. via asyncio.to_thread).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import TracebackType
from typing import Protocol

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from streamguard.config import DetectorConfig
from streamguard.errors import ConfigError
from streamguard.types import Detection

SHORT_RANGE_MODEL = Path(mp.__file__).parent / "modules" / "face_detection" / "face_detection_short_range.tflite"


class _Backend(Protocol):
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] RGB -> float32 [N, 5] rows of (x0, y0, x1, y1, score) in pixels, unclipped."""

    def close(self) -> None: ...


class _LegacyFullRange:
    """`mp.solutions.face_detection` with the full-range graph (model_selection=1).

    `detections` does what the solution's `process` does minus one thing: `process`
    builds a new namedtuple class on every call, 0.2-1.3 ms of CPU with the GIL held
    (about 6% of a detection, and a tenth of the GIL a frame costs a process;
    docs/benchmarks.md, "The GIL"). It uses the solution's own graph, packets and
    timestamps, which are private to mediapipe: 0.10.21 is pinned (the last release
    with BlazeFace inside), and a test checks it against `process` frame by frame."""

    def __init__(self, min_confidence: float) -> None:
        self._solution = mp.solutions.face_detection.FaceDetection(
            min_detection_confidence=min_confidence, model_selection=1
        )
        ((self._input, self._input_type),) = self._solution._input_stream_type_info.items()  # the one image input
        self._output_type = self._solution._output_stream_type_info["detections"]

    def detections(self, rgb: np.ndarray) -> list:
        """The graph's detection protos for one RGB frame, as `process(rgb).detections` gives them."""
        solution = self._solution
        solution._graph_outputs.clear()
        solution._simulated_timestamp += 33333  # as process(): a 30 fps timeline
        packet = solution._make_packet(self._input_type, rgb).at(solution._simulated_timestamp)
        solution._graph.add_packet_to_input_stream(stream=self._input, packet=packet)
        solution._graph.wait_until_idle()
        out = solution._graph_outputs.get("detections")
        if out is None:
            return []
        return solution._get_packet_content(self._output_type, out) or []  # an empty packet reads as None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        rows = []
        for det in self.detections(rgb):
            b = det.location_data.relative_bounding_box
            rows.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h, det.score[0]))
        return np.array(rows, dtype=np.float32).reshape(-1, 5)

    def close(self) -> None:
        self._solution.close()


class _TasksDetector:
    """The Tasks API `FaceDetector` on a short-range BlazeFace .tflite file."""

    def __init__(self, model_path: Path, min_confidence: float) -> None:
        if not model_path.is_file():
            raise ConfigError(f"detector model file not found: {model_path}")
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=min_confidence,
        )
        try:
            self._detector = vision.FaceDetector.create_from_options(options)
        except (RuntimeError, ValueError) as err:
            reason = str(err).strip().splitlines()[0]
            raise ConfigError(f"detector model {model_path}: not a TFLite model mediapipe can load ({reason})") from None
        try:
            # A model with another anchor layout (e.g. the full-range file) loads but fails on
            # its first frame; find out now, with a clear message, instead of mid-stream.
            self(np.zeros((128, 128, 3), dtype=np.uint8))
        except RuntimeError:
            with contextlib.suppress(RuntimeError):  # closing a failed graph re-raises the same failure
                self.close()
            raise ConfigError(
                f"detector model {model_path}: not a BlazeFace short-range model (its outputs do not fit the Tasks API face detector)"
            ) from None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        rows = []
        for det in self._detector.detect(image).detections:
            b = det.bounding_box
            rows.append((b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height, det.categories[0].score))
        return np.array(rows, dtype=np.float32).reshape(-1, 5)

    def close(self) -> None:
        self._detector.close()


class FaceDetector:
    """Faces in RGB frames as pixel boxes; see the module docstring for threading."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self._cfg = cfg
        self._low = min(cfg.low_confidence, cfg.min_confidence)
        self._backend: _Backend | None
        if cfg.model_path is not None:
            self._backend = _TasksDetector(Path(cfg.model_path), self._low)
        elif cfg.model == "short_range":
            self._backend = _TasksDetector(SHORT_RANGE_MODEL, self._low)
        else:
            self._backend = _LegacyFullRange(self._low)

    def candidates(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in uint8 [H, W, 3] RGB down to `low_confidence`: boxes clipped to the frame, filtered by score and size."""
        if self._backend is None:
            raise RuntimeError("FaceDetector.detect() called after close()")
        h, w = rgb.shape[:2]
        rows = self._backend(np.ascontiguousarray(rgb))
        boxes = np.clip(rows[:, :4], 0, np.array([w, h, w, h], dtype=np.float32))
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = (rows[:, 4] >= self._low) & (sides >= self._cfg.min_face_px)
        return [Detection(box=box, score=float(score)) for box, score in zip(boxes[keep], rows[keep, 4])]

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """The sure faces (score >= `min_confidence`) among the `candidates`."""
        return [d for d in self.candidates(rgb) if d.score >= self._cfg.min_confidence]

    def close(self) -> None:
        """Release the mediapipe graph; safe to call twice."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
