"""A constant-velocity Kalman filter for face boxes, on the stream's clock.

SORT and ByteTrack model a box as (cx, cy, a, h) (centre, aspect w/h, height)
plus the velocity of each: 8 numbers. Their filter steps one video frame at a
time; here frames arrive at a few per second and some are dropped, so the
transition takes the elapsed time `dt` in seconds and the process noise is the
continuous white-noise-acceleration model integrated over `dt`. All noise scales
with the face's height, so a small far face and a large near one are followed
alike.

Numpy in, numpy out: a state is `(mean float64 [8], cov float64 [8, 8])`.
"""

from __future__ import annotations

import numpy as np

# Standard deviations, as fractions of the face height (aspect: absolute).
MEASUREMENT_STD = 0.05  # BlazeFace box jitter between frames: ~5% of the face
ACCELERATION_STD = 2.0  # per second squared: a head that starts or stops moving
SIZE_ACCELERATION_STD = 0.5  # per second squared: zooming in and out is slower
INITIAL_VELOCITY_STD = 1.0  # per second: a new face may be moving about one face height a second
ASPECT_STD = 0.05  # BlazeFace boxes are nearly square; their aspect barely moves

_H = np.hstack([np.eye(4), np.zeros((4, 4))])  # measurement: the first four state entries


def box_to_measurement(box: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) -> (cx, cy, a, h), float64 [4]."""
    x0, y0, x1, y1 = (float(v) for v in box)
    h = max(y1 - y0, 1e-3)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / h, h])


def state_to_box(mean: np.ndarray) -> np.ndarray:
    """The box of a state: float32 [4] (x0, y0, x1, y1)."""
    cx, cy, a, h = mean[:4]
    h = max(h, 1e-3)
    w = max(a, 1e-3) * h
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float32)


def _measurement_cov(h: float) -> np.ndarray:
    return np.diag([(MEASUREMENT_STD * h) ** 2] * 2 + [ASPECT_STD**2] + [(MEASUREMENT_STD * h) ** 2])


def initiate(box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A new state from one detection: at rest, with an uncertain velocity."""
    z = box_to_measurement(box)
    h = z[3]
    mean = np.concatenate([z, np.zeros(4)])
    pos_std = [2 * MEASUREMENT_STD * h] * 2 + [ASPECT_STD, 2 * MEASUREMENT_STD * h]
    vel_std = [INITIAL_VELOCITY_STD * h] * 2 + [ASPECT_STD, SIZE_ACCELERATION_STD * h]
    return mean, np.diag(np.square(pos_std + vel_std))


def predict(mean: np.ndarray, cov: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """The state `dt` seconds later under constant velocity."""
    if dt <= 0:
        return mean, cov
    f = np.eye(8)
    f[:4, 4:] = dt * np.eye(4)
    h = max(mean[3], 1e-3)
    accel = np.array([ACCELERATION_STD * h, ACCELERATION_STD * h, ASPECT_STD, SIZE_ACCELERATION_STD * h]) ** 2
    # Continuous white-noise acceleration integrated over dt, per axis.
    q = np.zeros((8, 8))
    q[:4, :4] = np.diag(accel * dt**3 / 3)
    q[:4, 4:] = q[4:, :4] = np.diag(accel * dt**2 / 2)
    q[4:, 4:] = np.diag(accel * dt)
    return f @ mean, f @ cov @ f.T + q


def update(mean: np.ndarray, cov: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The state corrected by a detection's box."""
    z = box_to_measurement(box)
    s = _H @ cov @ _H.T + _measurement_cov(mean[3])
    gain = np.linalg.solve(s, _H @ cov).T  # [8, 4]; s is symmetric
    mean = mean + gain @ (z - _H @ mean)
    cov = cov - gain @ s @ gain.T
    return mean, (cov + cov.T) / 2
