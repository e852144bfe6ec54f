"""Self-blended images (SBI): pseudo-fakes made from a real face crop and itself.

Shiohara & Yamasaki (CVPR 2022): blend a face with a slightly transformed copy of
itself (colour, sharpness, scale, position) inside a soft face-shaped mask. What is
left is what every face swap leaves: a blending boundary, a colour or sharpness
mismatch, a small misalignment, and no identity cue at all, so a detector cannot
learn "this person is fake". That makes SBI the one fake source available without a
deepfake data set, and a good extra source with one.

The original draws the mask from 81 facial landmarks. Our crops come from the
runtime's cropper (square 1.3 x the face box, centred on the face), so the face
sits at a known place in every crop; the mask is an ellipse there, deformed with a
few random low-frequency harmonics and blurred. All functions: uint8 [S, S, 3] RGB in,
uint8 out, randomness from the `rng` passed in.
"""

from __future__ import annotations

import cv2
import numpy as np

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # as in SBI: mostly full blends


def face_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A soft face-shaped mask float32 [size, size] in [0, 1] (1 inside the face).

    In a 1.3x crop the face box spans the central 77%; the ellipse covers the
    inner face (brows to chin) with random size, offset, tilt and outline wobble.
    """
    cx = size * (0.5 + rng.normal(0, 0.02))
    cy = size * (0.54 + rng.normal(0, 0.02))
    rx = size * rng.uniform(0.24, 0.34)
    ry = size * rng.uniform(0.30, 0.42)
    tilt = rng.uniform(-0.2, 0.2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(tilt) + dy * np.sin(tilt)  # coordinates in the ellipse's own frame
    v = -dx * np.sin(tilt) + dy * np.cos(tilt)
    theta = np.arctan2(v / ry, u / rx)
    wobble = np.ones_like(theta)
    for k in (2, 3, 4):  # low-frequency deformation of the outline
        wobble += rng.uniform(-0.06, 0.06) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    inside = (np.sqrt((u / rx) ** 2 + (v / ry) ** 2) <= wobble).astype(np.float32)
    sigma = size * rng.uniform(0.02, 0.08)  # soft edge, from nearly hard to wide
    mask = cv2.GaussianBlur(inside, (0, 0), sigmaX=sigma)
    return np.clip(mask / max(float(mask.max()), 1e-6), 0.0, 1.0)


def _color_shift(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-channel shift, contrast and brightness: the colour mismatch of a swapped face."""
    x = rgb.astype(np.float32)
    x += rng.uniform(-20, 20, size=3).astype(np.float32)  # RGB shift
    x = (x - 128.0) * rng.uniform(0.9, 1.1) + 128.0 + rng.uniform(-0.1, 0.1) * 255.0
    return np.clip(x, 0, 255).astype(np.uint8)


def _frequency_change(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, sharpen or resample: the sharpness mismatch of a generated face."""
    kind = rng.integers(3)
    if kind == 0:
        return cv2.GaussianBlur(rgb, (0, 0), sigmaX=rng.uniform(0.5, 1.5))
    if kind == 1:
        blurred = cv2.GaussianBlur(rgb, (0, 0), sigmaX=1.0)
        amount = rng.uniform(0.3, 1.0)
        return cv2.addWeighted(rgb, 1 + amount, blurred, -amount, 0)
    size = rgb.shape[0]
    small = max(8, int(size * rng.uniform(0.4, 0.8)))
    down = cv2.resize(rgb, (small, small), interpolation=cv2.INTER_AREA)
    return cv2.resize(down, (rgb.shape[1], size), interpolation=cv2.INTER_LINEAR)


def _misalign(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale each axis by 0.95-1.05 and shift by up to 3%: the warp of a pasted face."""
    h, w = rgb.shape[:2]
    sx, sy = rng.uniform(0.95, 1.05, size=2)
    tx, ty = rng.uniform(-0.03, 0.03) * w, rng.uniform(-0.03, 0.03) * h
    m = np.array([[sx, 0, (1 - sx) * w / 2 + tx], [0, sy, (1 - sy) * h / 2 + ty]], dtype=np.float32)
    return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def self_blend(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pseudo-fake of the real crop `rgb` (uint8 [S, S, 3]): source blended into target."""
    source, target = rgb, rgb
    if rng.random() < 0.5:
        source = _color_shift(source, rng)
    else:
        target = _color_shift(target, rng)
    source = _misalign(_frequency_change(source, rng), rng)
    mask = face_mask(rgb.shape[0], rng)[..., None] * rng.choice(BLEND_RATIOS)  # [S, S, 1]
    blended = source.astype(np.float32) * mask + target.astype(np.float32) * (1.0 - mask)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
