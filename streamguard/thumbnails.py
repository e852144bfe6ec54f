"""JPEG thumbnails that let a person check an alert at a glance: the face crop the
model saw and the whole frame, downscaled. Stored in Redis beside the event (with a
TTL), so the event itself stays small."""

from __future__ import annotations

import cv2
import numpy as np

JPEG_QUALITY = 85


def encode_jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {rgb.shape}")
    return buf.tobytes()


def downscale(rgb: np.ndarray, width: int) -> np.ndarray:
    """Resize to `width` keeping the aspect ratio; smaller images are kept as they are."""
    h, w = rgb.shape[:2]
    if w <= width:
        return rgb
    return cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def alert_thumbnails(crop: np.ndarray, frame: np.ndarray, frame_width: int) -> dict[str, bytes]:
    """{"face": JPEG of the crop, "frame": JPEG of the downscaled frame}."""
    return {"face": encode_jpeg(crop), "frame": encode_jpeg(downscale(frame, frame_width))}
