"""A sample video with two real faces, made from images that ship inside packages.

No face data can be downloaded here, so the demo and the tests draw their faces from
scikit-image's `astronaut()` and matplotlib's `grace_hopper.jpg`. Each face moves
smoothly in its own half of the frame (they never cross), and `face_boxes(t)` gives
the ground-truth face box of each at time t, for tracker tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np

FRAME_SIZE = (1280, 720)  # width, height
TILE = 330  # side of each face tile in the frame
FACE_IN_TILE = 150  # side of the face inside its tile (tile = 2.2 x face, centred)


@dataclass(frozen=True)
class FaceSource:
    name: str
    image: np.ndarray  # uint8 [H, W, 3]
    centre: tuple[float, float]  # face centre (x, y) in image pixels, measured with BlazeFace
    side: float  # face box side in image pixels


def _load_grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


@lru_cache(maxsize=1)
def face_sources() -> tuple[FaceSource, FaceSource]:
    """The two faces; centres and sides were measured with BlazeFace full-range."""
    import skimage.data

    return (
        FaceSource("astronaut", skimage.data.astronaut(), (226.0, 120.0), 104.0),
        FaceSource("grace_hopper", _load_grace_hopper(), (266.0, 228.0), 200.0),
    )


@lru_cache(maxsize=2)
def _tile(index: int) -> np.ndarray:
    """A TILE x TILE square centred on face `index`, the face FACE_IN_TILE px wide."""
    from PIL import Image

    src = face_sources()[index]
    half = src.side * TILE / FACE_IN_TILE / 2
    cx, cy = src.centre
    box = (int(cx - half), int(cy - half), int(cx + half), int(cy + half))
    img = Image.fromarray(src.image).crop(box).resize((TILE, TILE), Image.BICUBIC)
    return np.asarray(img)


def tile_positions(t: float) -> list[tuple[int, int]]:
    """Top-left corner of each face tile at time t (seconds): slow, smooth, non-crossing."""
    w, h = FRAME_SIZE
    span_x = w // 2 - TILE - 40
    span_y = h - TILE - 40
    out = []
    for i, (fx, fy, phase) in enumerate(((0.11, 0.07, 0.0), (0.09, 0.13, 1.7))):
        x0 = 20 + i * (w // 2)
        x = x0 + span_x * (0.5 + 0.5 * np.sin(2 * np.pi * fx * t + phase))
        y = 20 + span_y * (0.5 + 0.5 * np.sin(2 * np.pi * fy * t + phase / 2))
        out.append((int(round(x)), int(round(y))))
    return out


def face_boxes(t: float) -> np.ndarray:
    """Ground-truth face boxes at time t: float32 [2, 4] pixels (x0, y0, x1, y1)."""
    m = (TILE - FACE_IN_TILE) / 2
    return np.array(
        [[x + m, y + m, x + m + FACE_IN_TILE, y + m + FACE_IN_TILE] for x, y in tile_positions(t)],
        dtype=np.float32,
    )


@lru_cache(maxsize=1)
def _background() -> np.ndarray:
    w, h = FRAME_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 90 + 40 * np.sin(xx / 97.0) + 20 * (yy / h)
    g = 100 + 30 * np.cos(yy / 71.0)
    b = 120 + 50 * (xx / w)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def render_frame(t: float) -> np.ndarray:
    """The frame at time t: uint8 [720, 1280, 3] RGB."""
    frame = _background().copy()
    for i, (x, y) in enumerate(tile_positions(t)):
        frame[y : y + TILE, x : x + TILE] = _tile(i)
    return frame


def make_two_face_video(
    path: Path | str, seconds: float = 20.0, fps: int = 25, size: tuple[int, int] = FRAME_SIZE,
    keyframe_every_s: float = 1.0,
) -> Path:
    """Encode the sample as H.264 (a keyframe every `keyframe_every_s`, no B-frames) into
    `path`, scaled to `size` (width, height) when that differs from FRAME_SIZE."""
    import av
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * fps))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = max(1, round(keyframe_every_s * fps))
        stream.codec_context.max_b_frames = 0
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "23"}
        for i in range(n):
            rgb = render_frame(i / fps)
            if size != FRAME_SIZE:
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
