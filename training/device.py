"""Where training runs and in which precision.

Mixed precision follows the issue's rule (fp16 with a gradient scaler on CUDA,
bf16 on CPU), except that "auto" keeps fp32 on CPUs without native bf16: on our
AVX2-only machines bf16 autocast measured several times slower than fp32 (see
docs/benchmarks.md), so turning it on there would only cost time.
"""

from __future__ import annotations

import torch

from streamguard.errors import ConfigError
from streamguard.inference.torch_engine import cpu_has_native_bf16


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device is cuda, but torch sees no CUDA device here")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def amp_dtype(device: torch.device, mode: str) -> torch.dtype | None:
    """The autocast dtype for optim.amp `mode` on `device`, or None for fp32."""
    if mode == "off":
        return None
    if device.type == "cuda":
        return torch.float16
    if mode == "on" or cpu_has_native_bf16():
        return torch.bfloat16
    return None
