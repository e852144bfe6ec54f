"""The crop index: one CSV row per face crop, the contract between `prepare`, `fit` and `eval`.

Columns: crop (a path relative to the index's folder), video, label (real/fake),
manipulation (the method that made a fake; "real" for reals), source (the data
set), split, frame (position in the video). A CSV opens in anything and diffs
cleanly; crop paths are relative so a prepared folder can be moved as a whole.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from streamguard.errors import ConfigError

COLUMNS = ("crop", "video", "label", "manipulation", "source", "split", "frame")
LABELS = ("real", "fake")


@dataclass(frozen=True)
class CropRecord:
    crop: Path  # absolute once read
    video: str
    label: str  # "real" or "fake"
    manipulation: str
    source: str
    split: str
    frame: int


def write_index(path: Path, records: list[CropRecord]) -> Path:
    """Write `records` (crop paths made relative to the index's folder) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r in records:
            crop = os.path.relpath(Path(r.crop).resolve(), path.parent.resolve())
            writer.writerow([crop, r.video, r.label, r.manipulation, r.source, r.split, r.frame])
    os.replace(tmp, path)
    return path


def read_index(path: Path | str, split: str | None = None) -> list[CropRecord]:
    """The rows of `path` (only those of `split` when given); ConfigError naming the line on bad input."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"crop index not found: {path}")
    records = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{path}: not a crop index: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            if row["label"] not in LABELS:
                raise ConfigError(f"{path} line {line}: label must be real or fake, got {row['label']!r}")
            try:
                frame = int(row["frame"])
            except ValueError:
                raise ConfigError(f"{path} line {line}: frame must be an integer, got {row['frame']!r}") from None
            if split is None or row["split"] == split:
                records.append(
                    CropRecord(
                        crop=path.parent / row["crop"], video=row["video"], label=row["label"],
                        manipulation=row["manipulation"] or row["label"], source=row["source"],
                        split=row["split"], frame=frame,
                    )
                )
    if not records:
        raise ConfigError(f"{path}: no crops{f' in split {split!r}' if split else ''}")
    return records
