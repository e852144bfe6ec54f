"""Face crops the way FSFM was trained on them.

FSFM (following FaceForensics++) saw square crops of side 1.3 x max(w, h) of the
detected face box, centred on the box, resized to 224 with bicubic interpolation.
Feeding the model anything else (tight boxes, another margin, bilinear resizing)
shifts its input distribution, so the geometry lives here, once, as small
numpy-in/numpy-out functions.
"""

from __future__ import annotations

import cv2
import numpy as np


def square_crop_box(box: np.ndarray, frame_w: int, frame_h: int, scale: float = 1.3) -> np.ndarray:
    """The square of side `scale` x max(w, h) centred on `box`, clipped to the frame.

    box: float [4] pixels (x0, y0, x1, y1). Returns float32 [4] pixels; it is only
    square when the square fits inside the frame.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = scale * max(x1 - x0, y1 - y0) / 2
    square = np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float32)
    return np.clip(square, 0, np.array([frame_w, frame_h, frame_w, frame_h], dtype=np.float32))


def crop_face(rgb: np.ndarray, box: np.ndarray, scale: float = 1.3, size: int = 224) -> np.ndarray:
    """The model-ready crop of the face in `box`: uint8 [size, size, 3] from uint8 [H, W, 3].

    Raises ValueError when the crop square has no pixels inside the frame.
    """
    frame_h, frame_w = rgb.shape[:2]
    x0, y0, x1, y1 = np.round(square_crop_box(box, frame_w, frame_h, scale)).astype(int)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box {np.asarray(box).tolist()} has no area inside the {frame_w}x{frame_h} frame")
    return cv2.resize(rgb[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_CUBIC)


def normalise_box(box: np.ndarray, frame_w: int, frame_h: int) -> np.ndarray:
    """Pixel box -> float32 [4] fractions of the frame size, clipped to [0, 1]."""
    scale = np.array([frame_w, frame_h, frame_w, frame_h], dtype=np.float32)
    return np.clip(np.asarray(box, dtype=np.float32) / scale, 0.0, 1.0)
