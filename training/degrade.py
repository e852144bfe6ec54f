"""The degradations live video puts on a face, applied to training crops.

Data-set faces are mostly clean; a face in an RTSP stream has been through a
sensor (noise), optics and motion (blur), a scaler (resolution lost and upsampled
back) and an H.264 encoder (blocks, ringing, chroma subsampling). A detector that
never saw those learns cues they erase, and fires on (or misses) every compressed
face. Each function is uint8 [H, W, 3] RGB in, uint8 out; `random_degrade` chains
them in capture order with the probabilities of a `DegradeConfig`.
"""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np

from training.config import DegradeConfig


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip at `quality` (1-100)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def h264(rgb: np.ndarray, crf: int) -> np.ndarray:
    """A real H.264 intra-frame round trip (libx264 at constant rate factor `crf`, 4:2:0).

    yuv420p needs even sides, so an odd edge is padded and cropped back.
    """
    h, w = rgb.shape[:2]
    padded = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = padded.shape[1], padded.shape[0], "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.options = {"crf": str(int(crf)), "preset": "ultrafast", "tune": "zerolatency"}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format="rgb24").reformat(format="yuv420p")
    packets = [*enc.encode(frame), *enc.encode(None)]
    dec = av.CodecContext.create("h264", "r")
    frames = [f for p in [*packets, None] for f in dec.decode(p)]
    return frames[0].to_ndarray(format="rgb24")[:h, :w]


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=float(sigma))


def resample(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Downscale by `factor` (< 1, area) and back up (bilinear): resolution lost upstream."""
    h, w = rgb.shape[:2]
    small = (max(4, round(w * factor)), max(4, round(h * factor)))
    return cv2.resize(cv2.resize(rgb, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)


def gaussian_noise(rgb: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    noisy = rgb.astype(np.float32) + rng.normal(0.0, std, size=rgb.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def random_degrade(rgb: np.ndarray, cfg: DegradeConfig, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise -> blur -> resolution loss -> compression, each with its probability."""
    out = rgb
    if rng.random() < cfg.noise_p:
        out = gaussian_noise(out, rng.uniform(*cfg.noise_std), rng)
    if rng.random() < cfg.blur_p:
        out = gaussian_blur(out, rng.uniform(*cfg.blur_sigma))
    if rng.random() < cfg.resample_p:
        out = resample(out, rng.uniform(*cfg.resample_factor))
    r = rng.random()
    if r < cfg.h264_p:
        out = h264(out, int(rng.integers(cfg.h264_crf[0], cfg.h264_crf[1] + 1)))
    elif r < cfg.h264_p + cfg.jpeg_p:
        out = jpeg(out, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return out
