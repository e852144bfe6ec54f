"""What a video file is, checked before any model loads: a video, how long, how many frames.

Kept apart from the pipeline (no torch or mediapipe import) so that `analyze` on a
wrong path answers in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from streamguard.errors import SourceError
from streamguard.ingest.pacing import FpsSampler
from streamguard.ingest.protocols import protocol_whitelist


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float | None  # as the container states it
    expected_frames: int | None  # frames the sampler will keep at the analysis fps (exact for constant frame rate)


def probe_video(path: Path, analysis_fps: float) -> VideoInfo:
    """Check `path` is a video (SourceError with one line if not) and size the progress bar."""
    if not path.is_file():
        raise SourceError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        container = av.open(str(path), options={"protocol_whitelist": protocol_whitelist(str(path))})
    except av.FFmpegError as err:
        raise SourceError(f"{path} is not a video: {err.strerror}") from None
    with container:
        if container.format.name == "tty":  # FFmpeg plays text files as ANSI art
            raise SourceError(f"{path} is not a video: it is a text file")
        if not container.streams.video:
            raise SourceError(f"{path}: no video stream")
        video = container.streams.video[0]
        duration = container.duration / av.time_base if container.duration else None
        rate = float(video.average_rate or video.guessed_rate or 0)
    n_frames = video.frames or (round(duration * rate) if duration and rate else 0)
    expected = expected_samples(n_frames, rate, analysis_fps) if n_frames and rate else None
    return VideoInfo(duration, expected)


def expected_samples(n_frames: int, rate: float, analysis_fps: float) -> int:
    """How many of `n_frames` frames at `rate` fps the ingest sampler keeps at `analysis_fps`."""
    sampler = FpsSampler(analysis_fps)
    return sum(sampler.keep(i / rate) for i in range(n_frames))
