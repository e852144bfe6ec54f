"""A labelled face set from the few real faces that ship inside installed packages.

No deepfake data set can be downloaded here, so the proof that training works uses
what is installed: three real photographs (scikit-image's astronaut and cameraman,
matplotlib's Grace Hopper), each drawn many times with a new pose, a jittered
detector box and new colours, cut with the runtime's own cropper, plus self-blended
fakes of those draws. A set drawn with another seed holds new poses and new blends;
leaving an identity out of training gives a held-out face. The set is written like
a prepared data set (PNG crops + index.csv), so `fit` and `eval` read it the same way.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from streamguard.faces.crops import crop_face
from streamguard.samples import FaceSource, face_sources
from training.config import SampleFacesConfig
from training.index import CropRecord, write_index
from training.sbi import self_blend


@lru_cache(maxsize=1)
def identities() -> dict[str, FaceSource]:
    """name -> the photograph with its face centre and side (measured with BlazeFace full-range)."""
    import skimage.data

    camera = np.repeat(skimage.data.camera()[..., None], 3, axis=2)  # grayscale -> RGB
    sources = {s.name: s for s in face_sources()}
    sources["cameraman"] = FaceSource("cameraman", camera, (237.6, 160.7), 76.0)
    return sources


def draw_real(source: FaceSource, size: int, rng: np.random.Generator, scale: float = 1.3) -> np.ndarray:
    """One real crop uint8 [size, size, 3]: a new head tilt, detector-box jitter and colour."""
    h, w = source.image.shape[:2]
    cx, cy = source.centre
    tilt = cv2.getRotationMatrix2D((cx, cy), rng.uniform(-12, 12), 1.0)
    image = cv2.warpAffine(source.image, tilt, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    side = source.side * rng.uniform(0.9, 1.15)  # BlazeFace boxes vary by about this much
    cx, cy = cx + rng.normal(0, 0.04) * side, cy + rng.normal(0, 0.04) * side
    box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)
    crop = crop_face(image, box, scale=scale, size=size).astype(np.float32)
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.92, 1.08, size=3)  # exposure and white balance
    crop = 255.0 * (np.clip(crop * gain + rng.uniform(-15, 15), 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.clip(np.rint(crop), 0, 255).astype(np.uint8)


def write_sample_set(out_dir: Path, cfg: SampleFacesConfig, size: int, split: str) -> Path:
    """Draw `cfg.reals` real crops and `cfg.fakes` self-blended fakes into `out_dir`; returns index.csv.

    Draws go round the identities; every `frames_per_video` consecutive draws of one
    identity and label form one pseudo-video, so video-level metrics apply.
    """
    out_dir = Path(out_dir)
    (out_dir / "crops").mkdir(parents=True, exist_ok=True)
    sources = identities()
    records: list[CropRecord] = []
    jobs = [("real", i) for i in range(cfg.reals)] + [("fake", i) for i in range(cfg.fakes)]
    for label, i in tqdm(jobs, desc=f"sample faces ({split})", unit="crop", leave=False):
        name = cfg.identities[i % len(cfg.identities)]
        rng = np.random.default_rng([cfg.seed, label == "fake", i])
        rgb = draw_real(sources[name], size, rng)
        if label == "fake":
            rgb = self_blend(rgb, rng)
        video = f"{name}-{label}-{i // (cfg.frames_per_video * len(cfg.identities)):04d}"
        path = out_dir / "crops" / f"{label}-{i:06d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        records.append(
            CropRecord(
                crop=path, video=video, label=label, manipulation="sbi" if label == "fake" else "real",
                source=name, split=split, frame=i,
            )
        )
    return write_index(out_dir / "index.csv", records)
