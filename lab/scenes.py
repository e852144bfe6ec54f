"""Generated face videos with known ground truth, for tracker tests and the tracking benchmark.

The hard cases for identity are easy to stage and hard to find in real video:
two faces whose paths cross (one passes in front of the other), a face that
walks out of the frame and comes back, a camera cut that moves everyone at
once. The scenes here stage them with the two real faces that ship inside
packages (`samples.face_sources()`), pasted with a soft elliptical mask onto a
textured background, and know at every instant where each face is and how much
of it can be seen. Frames are rendered directly (no encoding), so the real
detector sees exactly what the truth describes.

`track_sequence` runs a `FaceStage` (and, given an engine, re-identification)
over a sequence and counts ID switches and fragmentations (`mot.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from tqdm import tqdm

from streamguard import samples
from lab.mot import MotAccumulator, MotCounts
from streamguard.faces.stage import FaceStage
from streamguard.inference.contract import Engine
from streamguard.types import Frame

PATCH_SCALE = 1.6  # pasted patch side / face side: the face, its hair, a little background
MIN_VISIBLE = 0.5  # a face counts in the truth when at least this fraction of its box can be seen


@dataclass(frozen=True)
class Truth:
    """Where every face of a scene is in one frame."""

    ids: np.ndarray  # int [N] identity (index of the face source)
    boxes: np.ndarray  # float32 [N, 4] pixels x0, y0, x1, y1, clipped to the frame (as detections are)
    visible: np.ndarray  # bool [N] at least MIN_VISIBLE of the box in view and not hidden


@dataclass(frozen=True)
class Sequence:
    name: str
    fps: float
    duration: float  # seconds
    frame: Callable[[float], tuple[np.ndarray, Truth]]  # t -> (uint8 [H, W, 3] RGB, truth)

    def times(self) -> np.ndarray:
        return np.arange(int(round(self.duration * self.fps))) / self.fps


@dataclass(frozen=True)
class Actor:
    """One face moving along keyframes (t, cx, cy, side), linear in between; two keys at one instant make a jump."""

    source: int  # index into samples.face_sources()
    keys: tuple[tuple[float, float, float, float], ...]

    def at(self, t: float) -> tuple[float, float, float]:
        k = np.array(self.keys, dtype=np.float64)
        return tuple(float(np.interp(t, k[:, 0], k[:, i])) for i in (1, 2, 3))  # type: ignore[return-value]


@lru_cache(maxsize=8)
def _patch(source: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Face `source` scaled so its face is `side` px: (uint8 [P, P, 3], float32 alpha [P, P]), P = PATCH_SCALE x side."""
    src = samples.face_sources()[source]
    half = src.side * PATCH_SCALE / 2
    cx, cy = src.centre
    x0, y0 = int(round(cx - half)), int(round(cy - half))
    x1, y1 = int(round(cx + half)), int(round(cy + half))
    p = int(round(side * PATCH_SCALE))
    rgb = cv2.resize(src.image[y0:y1, x0:x1], (p, p), interpolation=cv2.INTER_AREA)
    yy, xx = (np.mgrid[0:p, 0:p] + 0.5) / p - 0.5
    alpha = ((xx / 0.45) ** 2 + (yy / 0.5) ** 2 <= 1).astype(np.float32)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=p / 40)
    return rgb, alpha


@lru_cache(maxsize=4)
def _background(width: int, height: int, variant: int) -> np.ndarray:
    """A smooth textured background; another `variant` is another room (for camera cuts)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    f = 1.0 + 0.6 * variant
    r = 110 + 50 * np.sin(xx / (37.0 * f)) * np.cos(yy / 53.0) + 30 * variant
    g = 105 + 40 * np.cos((xx + yy) / (61.0 * f))
    b = 120 + 45 * np.sin(yy / (29.0 * f)) - 40 * variant
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Scene:
    """Actors drawn back to front on a background; `cut_at` switches to another background."""

    size: tuple[int, int]  # width, height
    actors: tuple[Actor, ...]
    cut_at: float | None = None

    def render(self, t: float) -> tuple[np.ndarray, Truth]:
        w, h = self.size
        variant = int(self.cut_at is not None and t >= self.cut_at)
        frame = _background(w, h, variant).astype(np.float32)
        owner = np.full((h, w), -1, dtype=np.int64)  # which actor is on top at each pixel
        boxes = []
        for i, actor in enumerate(self.actors):
            cx, cy, side = actor.at(t)
            boxes.append([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
            rgb, alpha = _patch(actor.source, int(round(side)))
            p = rgb.shape[0]
            x0, y0 = int(round(cx - p / 2)), int(round(cy - p / 2))
            fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + p, w), min(y0 + p, h)
            if fx1 <= fx0 or fy1 <= fy0:
                continue
            a = alpha[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0, None]
            region = frame[fy0:fy1, fx0:fx1]
            region[:] = a * rgb[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] + (1 - a) * region
            owner[fy0:fy1, fx0:fx1][a[..., 0] > 0.5] = i
        box_arr = np.array(boxes, dtype=np.float32).reshape(-1, 4)
        visible = np.array([self._visible_fraction(owner, i, b) >= MIN_VISIBLE for i, b in enumerate(box_arr)], dtype=bool)
        ids = np.array([a.source for a in self.actors], dtype=np.int64)
        clipped = np.clip(box_arr, 0, np.array([w, h, w, h], dtype=np.float32))
        return frame.astype(np.uint8), Truth(ids, clipped, visible)

    @staticmethod
    def _visible_fraction(owner: np.ndarray, index: int, box: np.ndarray) -> float:
        h, w = owner.shape
        area = float((box[2] - box[0]) * (box[3] - box[1]))
        x0, y0, x1, y1 = np.round(np.clip(box, 0, [w, h, w, h])).astype(int)
        return float((owner[y0:y1, x0:x1] == index).sum()) / area


def crossing(fps: float = 5.0) -> Sequence:
    """Two faces walk across each other; Grace Hopper passes in front of the astronaut."""
    scene = Scene(
        (640, 360),
        (
            Actor(0, ((0.0, 90.0, 170.0, 80.0), (6.0, 550.0, 190.0, 80.0))),
            Actor(1, ((0.0, 550.0, 200.0, 90.0), (6.0, 90.0, 180.0, 90.0))),
        ),
    )
    return Sequence("crossing", fps, 6.0, scene.render)


def leave_and_return(fps: float = 5.0) -> Sequence:
    """The astronaut walks out on the right, stays out for 2 s, and comes back; Grace Hopper stays."""
    scene = Scene(
        (640, 360),
        (
            Actor(1, ((0.0, 150.0, 180.0, 90.0), (7.0, 190.0, 170.0, 90.0))),
            Actor(0, ((0.0, 330.0, 170.0, 80.0), (2.0, 720.0, 170.0, 80.0), (4.0, 720.0, 180.0, 80.0), (6.0, 420.0, 180.0, 80.0), (7.0, 420.0, 180.0, 80.0))),
        ),
    )
    return Sequence("leave_and_return", fps, 7.0, scene.render)


def camera_cut(fps: float = 5.0) -> Sequence:
    """A cut at 3 s to another room: both faces jump, swap sides and change size."""
    cut = 3.0
    scene = Scene(
        (640, 360),
        (
            Actor(0, ((0.0, 160.0, 170.0, 80.0), (cut - 1e-6, 200.0, 175.0, 80.0), (cut, 470.0, 190.0, 110.0), (6.0, 440.0, 185.0, 110.0))),
            Actor(1, ((0.0, 470.0, 180.0, 90.0), (cut - 1e-6, 450.0, 185.0, 90.0), (cut, 170.0, 170.0, 70.0), (6.0, 210.0, 175.0, 70.0))),
        ),
        cut_at=cut,
    )
    return Sequence("camera_cut", fps, 6.0, scene.render)


def two_face_sample(fps: float = 5.0, duration: float = 20.0) -> Sequence:
    """The demo's sample video (`samples.render_frame`, 1280x720): two faces moving apart, always visible."""

    def frame(t: float) -> tuple[np.ndarray, Truth]:
        return samples.render_frame(t), Truth(np.arange(2), samples.face_boxes(t), np.ones(2, dtype=bool))

    return Sequence("two_face_sample", fps, duration, frame)


SCENES: dict[str, Callable[[], Sequence]] = {"crossing": crossing, "leave_and_return": leave_and_return, "camera_cut": camera_cut}


def track_sequence(sequence: Sequence, stage: FaceStage, engine: Engine | None = None, progress: bool = False) -> MotCounts:
    """Run `stage` over the sequence as the pipeline does and count its identity errors.

    With an engine, every frame's crops are embedded and passed to `stage.reidentify`
    (re-identification on); without one, ids come from motion alone.
    """
    acc = MotAccumulator()
    for t in tqdm(sequence.times(), desc=sequence.name, disable=not progress):
        rgb, truth = sequence.frame(float(t))
        faces, _ = stage.process(Frame(stream=sequence.name, pts=float(t), wall_ts=float(t), rgb=rgb))
        if faces and engine is not None:
            _, embeddings = engine.infer(np.stack([f.crop for f in faces]))
            faces = stage.reidentify(faces, embeddings)
        acc.update(
            truth.ids, truth.boxes, truth.visible,
            np.array([f.track for f in faces], dtype=np.int64), np.array([f.box for f in faces], dtype=np.float32),
        )
    return acc.counts()
