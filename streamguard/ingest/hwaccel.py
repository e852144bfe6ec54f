"""Decoding on the GPU's video engine (NVDEC, through FFmpeg's CUDA hwaccel in PyAV).

Why: on a host whose model runs on a GPU, the CPU's work per stream is the front end,
and decoding is two thirds of it at 1080p (docs/benchmarks.md). The PyAV wheel's
FFmpeg has the CUDA hwaccel built in and loads the driver at run time, so NVDEC
needs nothing installed beyond the NVIDIA driver. Decoded pictures stay in GPU memory
(`is_hw_owned`) and come to system memory only when analysis first asks for a frame's
pixels (`Frame.rgb`: download, then the same NV12-to-RGB conversion as the CPU's), so
everything after decoding is unchanged, and the frames analysis never takes (four in
five at 25 fps and 5 analysed, more under load) never cross the bus. Downloading every
decoded picture, FFmpeg's default, held NVDEC back past about 16 streams in one
process (each download is a synchronous copy to pageable memory, and all streams'
copies share the context's one default stream). Measured side by side on an H200 host
with 32 1080p streams, keeping pictures on the GPU took p99 latency from 1.9 s to 0.3 s,
and at 64 streams decoding kept up (23.7 of 25 fps) where downloading every picture fell
to 5.9 (docs/benchmarks.md).

`ingest.hwaccel`: `auto` (the default) uses the GPU where FFmpeg can open one and the
CPU elsewhere; `cuda` decodes on the GPU and is a configuration error where FFmpeg
cannot open a CUDA device (one clear line before any stream starts, not a stream that
fails later: `gpu_decoding_problem`, which start-up and the API check, so that config
validation itself stays free of PyAV and of probing the machine); `none` always decodes
on the CPU. `auto` is the default because on the H200 host NVDEC did better than the CPU
wherever it mattered: at 32 1080p streams 0.09 cores per stream against 0.26, p99 90 ms
against 367, and an engine beside them kept 6,314 crops/s against 3,043. What it costs:
1-2 s more start-up at 16-32 streams (NVDEC sessions), and the frames that queue
meanwhile arrive up to 2 s late (none later, in the runs that recorded when). A stream
NVDEC cannot open falls back to the CPU (StreamSource logs why), and
`StreamSource.hw_decoding` says whether the GPU was set up to decode it (a stream NVDEC
accepts at open but refuses later, e.g. an unsupported profile, falls back to the CPU
inside FFmpeg without telling).

All streams share the device's primary CUDA context (the one torch uses too), not a
context each: every context holds GPU memory of its own, which many streams multiply.
FFmpeg takes that context only with blocking-sync scheduling, so the flags are set
before anything starts it (streamguard/cuda_context.py).
"""

from __future__ import annotations

import functools

import av
from av.codec.hwaccel import HWAccel

from streamguard.config import HwaccelMode, IngestConfig
from streamguard.cuda_context import share_primary_context
from streamguard.errors import ConfigError

CUDA_OPTIONS = {"primary_ctx": "1"}  # share the device's primary context


@functools.cache
def cuda_decode_problem() -> str | None:
    """None when FFmpeg can open a CUDA device to decode H.264 here, else why not (probed once per process)."""
    if (problem := share_primary_context()) is not None:
        return problem
    try:
        HWAccel("cuda", options=CUDA_OPTIONS).create(av.Codec("h264", "r"))
    except NotImplementedError:
        return "this FFmpeg build has no CUDA decoder for H.264"
    except av.FFmpegError as err:  # no driver, no device, or no permission to it
        return f"FFmpeg cannot open a CUDA device ({err.strerror or err})"
    return None


def gpu_decoding_problem(cfg: IngestConfig) -> str | None:
    """Why `cfg` cannot run here (`hwaccel: cuda` where FFmpeg cannot decode on a GPU), else None."""
    if cfg.hwaccel == "cuda" and (problem := cuda_decode_problem()) is not None:
        return f"invalid value for 'ingest.hwaccel': cannot decode on the GPU here: {problem}; use 'auto' to fall back to the CPU"
    return None


def require_decoding(cfg: IngestConfig) -> None:
    """Start-up's check: ConfigError (one line) where `cfg` asks for GPU decoding this machine cannot do."""
    if (problem := gpu_decoding_problem(cfg)) is not None:
        raise ConfigError(f"config: {problem}")


def decoder_hwaccel(mode: HwaccelMode) -> HWAccel | None:
    """What `av.open(..., hwaccel=)` gets for `mode`; None decodes on the CPU.

    `cuda` where CUDA cannot decode is refused earlier, at start-up (`gpu_decoding_problem`)."""
    if mode == "none" or cuda_decode_problem() is not None:
        return None
    return HWAccel("cuda", allow_software_fallback=True, options=CUDA_OPTIONS, is_hw_owned=True)
