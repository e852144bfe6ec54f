"""Decoding on the GPU's video engine (NVDEC, through FFmpeg's CUDA hwaccel in PyAV).

Why: on a host whose model runs on a GPU, the CPU's work per stream is the front end,
and decoding is two thirds of it at 1080p (docs/benchmarks.md). The PyAV wheel's
FFmpeg has the CUDA hwaccel built in and loads the driver at run time, so NVDEC
needs nothing installed beyond the NVIDIA driver. Decoded pictures come back to
system memory (NV12), so everything after decoding is unchanged.

`ingest.hwaccel`: `none` decodes on the CPU; `cuda` decodes on the GPU and is a
configuration error where FFmpeg cannot open a CUDA device (one clear line before any
stream starts, not a stream that fails later); `auto` uses the GPU where it can and
the CPU elsewhere. A stream NVDEC cannot open falls back to the CPU (StreamSource
logs why), and `StreamSource.hw_decoding` says whether the GPU was set up to decode it
(a stream NVDEC accepts at open but refuses later, e.g. an unsupported profile, falls
back to the CPU inside FFmpeg without telling).

All streams share the device's primary CUDA context (the one torch uses too), not a
context each: every context holds GPU memory of its own, which many streams multiply.
FFmpeg takes that context only with blocking-sync scheduling, so the flags are set
before anything starts it (streamguard/cuda_context.py).
"""

from __future__ import annotations

import functools

import av
from av.codec.hwaccel import HWAccel

from streamguard.config import HwaccelMode
from streamguard.cuda_context import share_primary_context

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


def decoder_hwaccel(mode: HwaccelMode) -> HWAccel | None:
    """What `av.open(..., hwaccel=)` gets for `mode`; None decodes on the CPU.

    `cuda` where CUDA cannot decode is refused earlier, by the config's validation."""
    if mode == "none" or cuda_decode_problem() is not None:
        return None
    return HWAccel("cuda", allow_software_fallback=True, options=CUDA_OPTIONS)
