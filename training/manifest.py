"""Data-set descriptions `prepare` reads: a CSV manifest or a DeepfakeBench JSON.

CSV: one row per video (or image), columns `path,label,manipulation,source,split`;
label is real or fake; relative paths start at the CSV's folder; an empty
manipulation means "real" for reals and "unknown" for fakes, an empty source the
CSV's name.

DeepfakeBench JSON (FACTS.md): `{dataset: {label_name: {split: {video: {"label",
"frames": [paths]}}}}}`, where FaceForensics++ nests one more level, the
compression (`c23`, ...), under the split. Its videos are already frame images.
A label name ending in "real" (FF-real, CelebDFv2_real, DFDC_Real, ...) is real,
as in DeepfakeBench's own label table; the label name is the manipulation and the
data set the source.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamguard.errors import ConfigError

CSV_COLUMNS = ("path", "label", "manipulation", "source", "split")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True)
class VideoEntry:
    key: str  # unique, file-system safe: names the video's output folder
    path: Path  # the video file, image, or (DeepfakeBench) the first frame
    frames: tuple[Path, ...] | None  # DeepfakeBench: the video's frame images
    label: str  # real or fake
    manipulation: str
    source: str
    split: str


def _key(name: str, where: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]
    return f"{safe}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"


def read_csv_manifest(path: Path, root: Path) -> list[VideoEntry]:
    entries = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{path}: missing column(s) {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})")
        for line, row in enumerate(reader, start=2):
            label = (row["label"] or "").strip().lower()
            if label not in ("real", "fake"):
                raise ConfigError(f"{path} line {line}: label must be real or fake, got {row['label']!r}")
            if not (row["path"] or "").strip() or not (row["split"] or "").strip():
                raise ConfigError(f"{path} line {line}: path and split must not be empty")
            video = Path(os.path.abspath(root / row["path"].strip()))  # links are entries of their own
            entries.append(
                VideoEntry(
                    key=_key(video.stem, str(video)),
                    path=video,
                    frames=None,
                    label=label,
                    manipulation=(row["manipulation"] or "").strip() or ("real" if label == "real" else "unknown"),
                    source=(row["source"] or "").strip() or path.stem,
                    split=row["split"].strip(),
                )
            )
    return entries


def _videos_of(split_node: dict[str, Any], compression: str) -> dict[str, Any]:
    """The {video: {"frames": ...}} mapping under a split, stepping into the compression level if there is one."""
    if split_node and all(isinstance(v, dict) and "frames" not in v for v in split_node.values()):
        return split_node.get(compression, {})
    return split_node


def read_deepfakebench(path: Path, root: Path, compression: str) -> list[VideoEntry]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {{dataset: {{label: {{split: {{video: ...}}}}}}}}")
    entries = []
    for dataset, labels in data.items():
        for label_name, splits in (labels or {}).items():
            for split, node in (splits or {}).items():
                for video, info in _videos_of(node or {}, compression).items():
                    frames = info.get("frames") if isinstance(info, dict) else None
                    if not frames:
                        raise ConfigError(f"{path}: {dataset}/{label_name}/{split}/{video} has no 'frames' list")
                    paths = tuple(Path(os.path.abspath(root / f)) for f in frames)
                    entries.append(
                        VideoEntry(
                            key=_key(f"{label_name}_{video}", f"{dataset}/{label_name}/{video}"),
                            path=paths[0],
                            frames=paths,
                            label="real" if label_name.lower().endswith("real") else "fake",
                            manipulation=label_name,
                            source=dataset,
                            split=split,
                        )
                    )
    return entries


def read_manifest(path: Path | str, root: Path | None = None, compression: str = "c23") -> list[VideoEntry]:
    """Entries of a .csv manifest or a DeepfakeBench .json; relative paths resolve against `root`
    (default: the manifest's folder)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"manifest not found: {path}")
    if path.suffix.lower() == ".csv":
        entries = read_csv_manifest(path, root or path.parent)
    elif path.suffix.lower() == ".json":
        entries = read_deepfakebench(path, root or path.parent, compression)
    else:
        raise ConfigError(f"{path}: expected a .csv manifest or a DeepfakeBench .json")
    if not entries:
        raise ConfigError(f"{path}: lists no videos")
    dupes = len(entries) - len({e.key for e in entries})
    if dupes:
        raise ConfigError(f"{path}: {dupes} video(s) listed twice")
    return entries
