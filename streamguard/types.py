"""The nouns that flow between stages, defined once.

Each is a small frozen dataclass with numpy fields, except `Frame`, which converts its
pixels on first use. Boxes are pixel coordinates `(x0, y0, x1, y1)` as float32 in the
frame they came from; `Face.box_norm` is the same box divided by the frame size, which
is what events publish.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import av


# Where a stream's ingest is: sources set it, events publish it, the API shows it.
StreamState = Literal["connecting", "live", "stalled", "reconnecting", "ended", "failed"]

class Frame:
    """One decoded video frame chosen for analysis.

    Ingest offers frames at `analysis_fps`, but a busy model takes only some of them
    (the latest frame wins), so a frame from a decoder keeps the decoder's YUV picture
    and makes its RGB pixels on first use, in the thread that detects faces: a frame
    replaced before anyone looks at it costs no conversion, and the WebRTC event loop
    converts nothing. A picture NVDEC decoded is still in GPU memory and is downloaded
    then too (ingest/hwaccel.py). The picture is reference-counted by FFmpeg, so
    holding it does not hold up the decoder.
    """

    __slots__ = ("stream", "pts", "wall_ts", "_rgb", "_picture")

    def __init__(self, stream: str, pts: float, wall_ts: float, rgb: np.ndarray) -> None:
        self.stream = stream
        self.pts = pts  # seconds in the stream's own timeline
        self.wall_ts = wall_ts  # unix seconds when the frame arrived (decoded)
        self._rgb: np.ndarray | None = rgb  # uint8 [H, W, 3]
        self._picture: av.VideoFrame | None = None

    @classmethod
    def decoded(cls, stream: str, pts: float, wall_ts: float, picture: av.VideoFrame) -> Frame:
        """A frame whose RGB pixels are converted from `picture` when first asked for."""
        frame = cls(stream, pts, wall_ts, None)  # type: ignore[arg-type]
        frame._picture = picture
        return frame

    @property
    def rgb(self) -> np.ndarray:
        """uint8 [H, W, 3]."""
        rgb = self._rgb
        if rgb is None:  # two threads converting at once both get a correct array
            assert self._picture is not None
            rgb = self._rgb = self._picture.to_ndarray(format="rgb24")
        return rgb

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        if self._picture is not None:
            return int(self._picture.width), int(self._picture.height)
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    def __repr__(self) -> str:
        w, h = self.size
        return f"Frame(stream={self.stream!r}, pts={self.pts:.3f}, {w}x{h})"


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
