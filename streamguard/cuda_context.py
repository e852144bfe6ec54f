"""One CUDA context per GPU for the whole process: the engine (torch) and NVDEC (FFmpeg) share
the device's primary context, and agree on its flags before either starts it.

Why: FFmpeg's CUDA decoder (ingest.hwaccel, `primary_ctx=1`) retains the primary context
only with blocking-sync scheduling, and refuses it ("Primary context already active with
incompatible flags", ENOTSUP) when something else started it with other flags, as torch
does with its default ones. Measured on an H200 host: every NVDEC stream failed to open
in a process whose torch had run on the GPU first, and opened once this ran first.
Blocking sync also suits a host whose CPU is the scarce side: a thread waiting for the
GPU sleeps instead of spinning.

Whoever touches CUDA first in this process (`TorchEngine` on cuda, `cuda_decode_problem`)
calls `share_primary_context()`. It talks to the driver (libcuda) through ctypes, so it
needs neither torch nor PyAV, and does nothing on a machine without CUDA.
"""

from __future__ import annotations

import ctypes
import functools
import logging

log = logging.getLogger(__name__)

CU_CTX_SCHED_BLOCKING_SYNC = 0x04  # cuda.h: CUctx_flags
CU_CTX_SCHED_MASK = 0x07


@functools.cache
def _driver() -> ctypes.CDLL | None:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    return cuda if cuda.cuInit(0) == 0 else None


def _device(device: int) -> tuple[ctypes.CDLL, ctypes.c_int] | None:
    """The driver and the CUdevice of GPU `device`; None without a CUDA driver and device."""
    cuda = _driver()
    dev = ctypes.c_int()
    if cuda is None or cuda.cuDeviceGet(ctypes.byref(dev), device) != 0:
        return None
    return cuda, dev


def primary_context_state(device: int = 0) -> tuple[int, bool] | None:
    """(flags, active) of the device's primary context; None without a CUDA driver and device."""
    if (found := _device(device)) is None:
        return None
    cuda, dev = found
    flags, active = ctypes.c_uint(), ctypes.c_int()
    if cuda.cuDevicePrimaryCtxGetState(dev, ctypes.byref(flags), ctypes.byref(active)) != 0:
        return None
    return flags.value, bool(active.value)


def share_primary_context(device: int = 0) -> str | None:
    """Give the device's primary context blocking-sync scheduling, the flags FFmpeg requires.

    None when the context has (or will start with) those flags, or when there is no CUDA
    here at all; else why NVDEC cannot share it."""
    if (state := primary_context_state(device)) is None:
        return None
    flags, active = state
    if flags & CU_CTX_SCHED_MASK == CU_CTX_SCHED_BLOCKING_SYNC:
        return None
    cuda, dev = _device(device)  # type: ignore[misc]  (found just above)
    # _v2 (CUDA 11+) also changes the flags of a context that is already active (seen on the H200: 0x0 -> 0x4)
    new_flags = (flags & ~CU_CTX_SCHED_MASK) | CU_CTX_SCHED_BLOCKING_SYNC
    rc = cuda.cuDevicePrimaryCtxSetFlags_v2(dev, ctypes.c_uint(new_flags))
    if rc != 0 or primary_context_state(device) != (new_flags, active):
        return (
            f"the GPU's CUDA context is already {'active' if active else 'set up'} with scheduling flags "
            f"{flags:#x} and could not be given blocking sync (CUDA error {rc}), which FFmpeg's decoder needs"
        )
    log.debug("CUDA primary context of device %d: scheduling flags %#x -> %#x (active: %s)", device, flags, new_flags, active)
    return None
