"""Decoding on the GPU (ingest.hwaccel) with real PyAV: where FFmpeg can open a CUDA
device the GPU decodes what the CPU decodes; elsewhere `cuda` is a configuration error
and `auto` decodes on the CPU.

Self-contained (no conftest fixtures, no asyncio plugin), so that `benchmarks/gpu.sh`
runs it on a GPU machine with `--noconftest`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.codec.hwaccel import HWAccel

from streamguard.cli import main
from streamguard.config import ConfigError, IngestConfig, StreamConfig, build_config
from streamguard.errors import SourceError
from streamguard.ingest import LatestQueue, StreamSource
from streamguard.ingest import pyav_source as source_module
from streamguard.ingest.hwaccel import CUDA_OPTIONS, cuda_decode_problem
from tests.support import REPO


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


def decode(path: Path, hwaccel: str, gpu_refuses: bool = False, hold: bool = False) -> tuple[list[np.ndarray], bool | None, set[str]]:
    """Every frame of `path` as RGB through a StreamSource with `ingest.hwaccel`, whether the GPU
    decoded, and the pixel formats the pictures arrived in ("cuda": still in GPU memory).

    gpu_refuses: the source is handed a CUDA decoder that FFmpeg refuses to open (ENOTSUP, as a
    CUDA context it cannot share made it do on a GPU host); only that open is faked.
    hold: keep every frame unconverted until the file has ended, then convert them all
    (as analysis holds a frame while decoding goes on), instead of converting each on arrival."""

    async def run() -> tuple[list[np.ndarray], bool | None, set[str]]:
        queue: LatestQueue = LatestQueue(2)
        cfg = IngestConfig(hwaccel=hwaccel, realtime=False, analysis_fps=25)
        source = StreamSource(StreamConfig(name="hw", url=str(path)), cfg, queue)
        if gpu_refuses:
            source._hwaccel = HWAccel("cuda", allow_software_fallback=True, options=CUDA_OPTIONS)
        task = asyncio.create_task(source.run())
        frames, formats, rgb = [], set(), []
        for _ in range(FRAMES):
            frame = await asyncio.wait_for(queue.get(), 10)
            formats.add(frame._picture.format.name)
            frames.append(frame)
            if not hold:
                rgb.append(frame.rgb)
        await asyncio.wait_for(task, 10)  # the file ended
        if hold:
            rgb = [frame.rgb for frame in frames]
        return rgb, source.hw_decoding, formats

    return asyncio.run(run())


def test_the_default_decodes_on_the_gpu_exactly_where_ffmpeg_can_open_one(clip):
    _, on_gpu, formats = decode(clip, IngestConfig().hwaccel)
    assert on_gpu is (PROBLEM is None)
    assert formats == ({"cuda"} if PROBLEM is None else {"yuv420p"})


def test_none_decodes_on_the_cpu(clip):
    frames, on_gpu, formats = decode(clip, "none")
    assert on_gpu is False and len(frames) == FRAMES and formats == {"yuv420p"}
    assert frames[0][120, 20].min() > 240 and frames[-1][120, 20].min() < 200  # the white square moved on


def test_an_unknown_mode_is_refused():
    with pytest.raises(ConfigError, match="invalid value for 'ingest.hwaccel': Input should be 'none', 'cuda' or 'auto'"):
        build_config({"ingest": {"hwaccel": "nvdec"}})


@without_cuda
def test_cuda_where_ffmpeg_cannot_open_a_device_is_one_clear_error_at_start_up(tmp_path, capsys):
    """Checked when `run` starts (config validation does not probe the machine), before the model loads."""
    assert build_config({"ingest": {"hwaccel": "cuda"}}).ingest.hwaccel == "cuda"
    config = tmp_path / "cuda.yaml"
    config.write_text("ingest:\n  hwaccel: cuda\n")
    assert main(["run", "--config", str(config), "--stream", "cam=rtsp://127.0.0.1:9/none", "--duration", "5"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"streamguard: error: config: invalid value for 'ingest.hwaccel': cannot decode on the GPU here: {PROBLEM}; "
        "use 'auto' to fall back to the CPU"
    )


@without_cuda
def test_auto_without_a_device_decodes_on_the_cpu(clip):
    frames, on_gpu, _ = decode(clip, "auto")
    reference, _, _ = decode(clip, "none")
    assert on_gpu is False
    assert all(np.array_equal(a, b) for a, b in zip(frames, reference, strict=True))


def cpu_frames_through_nv12(path: Path) -> list[np.ndarray]:
    """The CPU's decoding of `path`, made RGB from NV12, the layout NVDEC hands back.

    From planar YUV the same pictures come out differently: swscale's NV12 path rounds and
    interpolates chroma its own way (mean 0.82, max 53 levels apart on this clip, CPU alone)."""
    with av.open(str(path)) as container:
        return [frame.reformat(format="nv12").to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@needs_cuda
@pytest.mark.parametrize("hwaccel", ["cuda", "auto"])
@pytest.mark.parametrize("hold", [False, True], ids=["converted-on-arrival", "held-until-the-end"])
def test_the_gpu_decodes_what_the_cpu_decodes(clip, hwaccel, hold):
    frames, on_gpu, formats = decode(clip, hwaccel, hold=hold)
    assert on_gpu is True
    assert formats == {"cuda"}  # pictures stay in GPU memory until analysis asks for pixels
    gpu, cpu = np.stack(frames), np.stack(cpu_frames_through_nv12(clip))
    diff = np.abs(gpu.astype(np.int16) - cpu)
    # H.264 decoding is exact: the same bytes, once both go through the same colour conversion
    assert np.array_equal(gpu, cpu), f"mean {diff.mean():.4f}, max {diff.max()}, frames differing {np.flatnonzero(diff.any(axis=(1, 2, 3)))}"


@pytest.fixture
def nvdec_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """av.open as the source module calls it, failing as FFmpeg does when NVDEC cannot take a stream."""
    real_open = av.open

    def open_(*args, hwaccel=None, **kwargs):
        if hwaccel is not None:
            raise av.error.FFmpegError(errno.ENOTSUP, "Operation not supported")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(source_module.av, "open", open_)


def test_a_stream_the_gpu_refuses_decodes_on_the_cpu(clip, nvdec_refuses, caplog):
    with caplog.at_level(logging.WARNING, logger="streamguard.ingest.pyav_source"):
        frames, on_gpu, _ = decode(clip, "none", gpu_refuses=True)
    assert on_gpu is False and len(frames) == FRAMES
    assert frames[0][120, 20].min() > 240 and frames[-1][120, 20].min() < 200
    assert f"stream hw: the GPU cannot decode {clip} (Operation not supported); decoding on the CPU" in caplog.messages


def test_a_source_at_fault_still_gets_its_own_error_when_the_gpu_refuses(tmp_path, nvdec_refuses, caplog):
    missing = tmp_path / "missing.mp4"
    source = StreamSource(StreamConfig(name="hw", url=str(missing)), IngestConfig(realtime=False), LatestQueue(2))
    source._hwaccel = HWAccel("cuda", allow_software_fallback=True, options=CUDA_OPTIONS)
    with caplog.at_level(logging.WARNING, logger="streamguard.ingest.pyav_source"), pytest.raises(SourceError) as err:
        asyncio.run(asyncio.wait_for(source.run(), 10))
    assert str(err.value) == f"stream hw: cannot open {missing}: No such file or directory"
    assert not any("the GPU cannot decode" in m for m in caplog.messages)  # the CPU's answer, not a fallback


@needs_cuda
@pytest.mark.parametrize("first", ["torch", "TorchEngine"])
def test_nvdec_shares_the_gpu_with_torch_that_started_first(clip, first):
    """A GPU host's order: the engine starts CUDA, then streams open on NVDEC. In a fresh
    process, so that nothing else has started the GPU's context before."""
    start = {
        "torch": "torch.ones(1, device='cuda')",  # torch starts the context with its own default flags
        "TorchEngine": "TorchEngine(untrained_model('tiny', seed=0), 'fp16', device='cuda').infer(np.zeros((1, 224, 224, 3), np.uint8))",
    }[first]
    code = textwrap.dedent(f"""
        import av, numpy as np, torch
        from streamguard.inference.torch_engine import TorchEngine
        from streamguard.model import untrained_model
        {start}
        from streamguard.ingest.hwaccel import cuda_decode_problem, decoder_hwaccel
        assert cuda_decode_problem() is None, cuda_decode_problem()
        with av.open({str(clip)!r}, hwaccel=decoder_hwaccel("cuda")) as container:
            video = container.streams.video[0]
            pictures = list(container.decode(video))
            rgb = pictures[-1].to_ndarray(format="rgb24")  # downloaded from the GPU now
            print(video.codec_context.is_hwaccel, len(pictures), pictures[-1].format.name, "x".join(map(str, rgb.shape)))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["True", str(FRAMES), "cuda", "240x320x3"]
