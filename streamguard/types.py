"""The nouns that flow between stages, defined once.

Each is a small frozen dataclass with numpy fields. Boxes are pixel coordinates
`(x0, y0, x1, y1)` as float32 in the frame they came from; `Face.box_norm` is the
same box divided by the frame size, which is what events publish.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame chosen for analysis."""

    stream: str
    pts: float  # seconds in the stream's own timeline
    wall_ts: float  # unix seconds when the frame arrived (decoded)
    rgb: np.ndarray  # uint8 [H, W, 3]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


@dataclass(frozen=True, slots=True)
class Detection:
    """A face found by the detector in one frame."""

    box: np.ndarray  # float32 [4] pixels x0, y0, x1, y1
    score: float


@dataclass(frozen=True, slots=True)
class Face:
    """A tracked face with its model-ready crop."""

    stream: str
    track: int
    box: np.ndarray  # float32 [4] pixels x0, y0, x1, y1
    box_norm: np.ndarray  # float32 [4] box / (W, H, W, H), in [0, 1]
    det_score: float
    crop: np.ndarray  # uint8 [S, S, 3] RGB, S = crop size (224)
    pts: float
    wall_ts: float


@dataclass(frozen=True, slots=True)
class Sample:
    """A face scored by the model."""

    face: Face
    p_fake: float
    embedding: np.ndarray  # float32 [D]
