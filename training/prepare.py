"""`prepare`: videos -> face crops + index.csv, with the runtime's own detector and cropper.

A detector trained on crops cut differently from the ones it will be served (another
face detector, margin or interpolation) is evaluated on one distribution and run on
another, so the crops here come from exactly `streamguard.faces`: BlazeFace
full-range with the runtime's default thresholds, then `crop_face` (square 1.3 x the
box, bicubic to 224). Per sampled frame the largest face is kept (data-set videos
show one subject; DeepfakeBench does the same).

Frames: N per video spread uniformly (FSFM's 32 by default), or a fixed rate
(`fps`, the follow-up paper's 1 fps). Each video is one task for a pool of worker
processes; when it finishes, a small JSON in `videos/` records its crops, so an
interrupted run resumes by skipping videos that have one. The index is rebuilt
from those records at the end.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from tqdm import tqdm

from streamguard.config import CropConfig, DetectorConfig
from streamguard.faces.crops import crop_face
from streamguard.faces.detector import FaceDetector
from training.index import CropRecord, write_index
from training.manifest import IMAGE_SUFFIXES, VideoEntry, read_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareOptions:
    frames: int = 32  # uniformly spread frames per video (ignored when fps is set)
    fps: float | None = None  # sample at this rate instead
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    crop: CropConfig = field(default_factory=CropConfig)


def uniform_indices(total: int, n: int) -> np.ndarray:
    """n frame indices spread evenly over [0, total) (all of them when total <= n)."""
    if total <= n:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, n).round().astype(int))


def _count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for p in container.demux(stream) if p.size)  # packets, no decoding


def sample_video(path: Path, opts: PrepareOptions) -> list[tuple[int, np.ndarray]]:
    """(frame index, RGB uint8 [H, W, 3]) for the frames `opts` selects, decoded in one pass."""
    wanted = None if opts.fps else set(uniform_indices(_count_frames(path), opts.frames).tolist())
    next_t = 0.0
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if wanted is not None:
                keep = i in wanted
            else:
                t = float(frame.time) if frame.time is not None else i / float(stream.average_rate or 25)
                keep = t + 1e-6 >= next_t
                if keep:
                    next_t = t + 1.0 / opts.fps  # type: ignore[operator]
            if keep:
                out.append((i, frame.to_ndarray(format="rgb24")))
    return out


def _read_image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def sample_entry(entry: VideoEntry, opts: PrepareOptions) -> list[tuple[int, np.ndarray]]:
    if entry.frames is not None:  # DeepfakeBench: frames are images already
        return [(int(i), _read_image(entry.frames[i])) for i in uniform_indices(len(entry.frames), opts.frames)]
    if entry.path.suffix.lower() in IMAGE_SUFFIXES:
        return [(0, _read_image(entry.path))]
    return sample_video(entry.path, opts)


def process_entry(entry: VideoEntry, out_dir: Path, opts: PrepareOptions) -> dict[str, Any]:
    """Detect and crop one video; write its crops and its record JSON (the resume marker)."""
    record: dict[str, Any] = {"entry": {**asdict(entry), "path": str(entry.path), "frames": None}, "crops": [], "sampled": 0}
    try:
        frames = sample_entry(entry, opts)
        record["sampled"] = len(frames)
        crop_dir = out_dir / "crops" / entry.key
        crop_dir.mkdir(parents=True, exist_ok=True)
        with FaceDetector(opts.detector) as detector:
            for index, rgb in frames:
                faces = detector.detect(rgb)
                if not faces:
                    continue
                largest = max(faces, key=lambda d: float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))
                crop = crop_face(rgb, largest.box, scale=opts.crop.scale, size=opts.crop.size)
                name = crop_dir / f"{index:06d}.png"
                cv2.imwrite(str(name), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
                record["crops"].append({"file": str(name.relative_to(out_dir)), "frame": index})
    except (av.error.FFmpegError, ValueError, OSError) as err:
        record["error"] = f"{type(err).__name__}: {err}"
    marker = out_dir / "videos" / f"{entry.key}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, marker)  # written last: a video with a marker is complete
    return record


@dataclass
class PrepareSummary:
    videos: int
    processed: int  # this run (the others were done before)
    crops: int
    no_face: list[str]  # paths of videos where no frame had a face
    failed: list[str]  # "path: error"
    index: Path


def prepare(
    manifest: Path, out_dir: Path, opts: PrepareOptions, workers: int = 2, root: Path | None = None, compression: str = "c23"
) -> PrepareSummary:
    entries = read_manifest(manifest, root, compression)
    out_dir = Path(out_dir)
    todo = [e for e in entries if not (out_dir / "videos" / f"{e.key}.json").is_file()]
    if len(todo) < len(entries):
        log.info("resuming: %d of %d videos already prepared", len(entries) - len(todo), len(entries))
    bar = tqdm(total=len(todo), desc="prepare", unit="video")
    if workers <= 0:
        for entry in todo:
            process_entry(entry, out_dir, opts)
            bar.update()
    else:
        # spawn: each worker starts clean and builds its own mediapipe graphs (not fork-safe)
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for future in as_completed([pool.submit(process_entry, e, out_dir, opts) for e in todo]):
                future.result()
                bar.update()
    bar.close()
    records: list[CropRecord] = []
    no_face, failed = [], []
    for e in entries:
        done = json.loads((out_dir / "videos" / f"{e.key}.json").read_text())
        if done.get("error"):
            failed.append(f"{e.path}: {done['error']}")
        elif not done["crops"]:
            no_face.append(str(e.path))
        records += [
            CropRecord(out_dir / c["file"], e.key, e.label, e.manipulation, e.source, e.split, int(c["frame"]))
            for c in done["crops"]
        ]
    index = write_index(out_dir / "index.csv", records)
    (out_dir / "no_face.txt").write_text("".join(f"{p}\n" for p in no_face))
    return PrepareSummary(len(entries), len(todo), len(records), no_face, failed, index)
