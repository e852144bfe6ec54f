"""Decoding on the GPU (ingest.hwaccel) with real PyAV: where FFmpeg can open a CUDA
device the GPU decodes what the CPU decodes; elsewhere `cuda` is a configuration error
and `auto` decodes on the CPU.

Self-contained (no conftest fixtures, no asyncio plugin), so that `benchmarks/gpu.sh`
runs it on a GPU machine with `--noconftest`.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from streamguard.config import ConfigError, IngestConfig, StreamConfig, build_config
from streamguard.ingest import LatestQueue, StreamSource
from streamguard.ingest.hwaccel import cuda_decode_problem

FRAMES = 25
PROBLEM = cuda_decode_problem()
needs_cuda = pytest.mark.skipif(PROBLEM is not None, reason=f"no CUDA decoding here: {PROBLEM}")
without_cuda = pytest.mark.skipif(PROBLEM is None, reason="checks a machine where FFmpeg cannot open a CUDA device")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One second of 320x240 H.264 (a moving square on a gradient), a keyframe at the start."""
    path = tmp_path_factory.mktemp("hwaccel") / "clip.mp4"
    y, x = np.mgrid[0:240, 0:320]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        for i in range(FRAMES):
            rgb = np.stack([(x + 8 * i) % 256, y, np.full_like(x, 96)], axis=-1).astype(np.uint8)
            rgb[100:140, 10 * i : 10 * i + 40] = 255
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def decode(path: Path, hwaccel: str) -> tuple[list[np.ndarray], bool | None]:
    """Every frame of `path` as RGB through a StreamSource with `ingest.hwaccel`, and whether the GPU decoded."""

    async def run() -> tuple[list[np.ndarray], bool | None]:
        queue: LatestQueue = LatestQueue(2)
        cfg = IngestConfig(hwaccel=hwaccel, realtime=False, analysis_fps=25)
        source = StreamSource(StreamConfig(name="hw", url=str(path)), cfg, queue)
        task = asyncio.create_task(source.run())
        frames = [(await asyncio.wait_for(queue.get(), 10)).rgb for _ in range(FRAMES)]
        await asyncio.wait_for(task, 10)  # the file ended
        return frames, source.hw_decoding

    return asyncio.run(run())


def test_the_cpu_decodes_by_default(clip):
    assert IngestConfig().hwaccel == "none"
    frames, on_gpu = decode(clip, "none")
    assert on_gpu is False and len(frames) == FRAMES
    assert frames[0][120, 20].min() > 240 and frames[-1][120, 20].min() < 200  # the white square moved on


def test_an_unknown_mode_is_refused():
    with pytest.raises(ConfigError, match="invalid value for 'ingest.hwaccel': Input should be 'none', 'cuda' or 'auto'"):
        build_config({"ingest": {"hwaccel": "nvdec"}})


@without_cuda
def test_cuda_where_ffmpeg_cannot_open_a_device_is_one_clear_config_error():
    with pytest.raises(ConfigError) as err:
        build_config({"ingest": {"hwaccel": "cuda"}})
    assert str(err.value) == (
        f"config: invalid value for 'ingest.hwaccel': cannot decode on the GPU here: {PROBLEM}; "
        "use 'auto' to fall back to the CPU"
    )


@without_cuda
def test_auto_without_a_device_decodes_on_the_cpu(clip):
    frames, on_gpu = decode(clip, "auto")
    reference, _ = decode(clip, "none")
    assert on_gpu is False
    assert all(np.array_equal(a, b) for a, b in zip(frames, reference, strict=True))


@needs_cuda
@pytest.mark.parametrize("hwaccel", ["cuda", "auto"])
def test_the_gpu_decodes_what_the_cpu_decodes(clip, hwaccel):
    frames, on_gpu = decode(clip, hwaccel)
    reference, _ = decode(clip, "none")
    assert on_gpu is True
    # H.264 decoding is exact; only the colour conversion from NV12 instead of planar YUV may round apart.
    diff = np.abs(np.stack(frames).astype(np.int16) - np.stack(reference))
    assert diff.mean() < 0.5 and diff.max() <= 4
