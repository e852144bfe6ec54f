"""The one interface every model backend offers the pipeline: uint8 crops in, scores out.

Backends differ in what they load (a torch checkpoint, an ONNX graph, a TensorRT
plan) but not in what they promise, so the batcher and the CLI depend only on
`Engine`. `open_engine` picks the backend from the checkpoint's file extension;
openers import their backend lazily so a missing optional runtime only matters to
the users who ask for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from streamguard.config import ModelConfig
from streamguard.errors import CheckpointError

if TYPE_CHECKING:
    from streamguard.model.checkpoint import ModelMeta


class Engine(Protocol):
    meta: ModelMeta
    embed_dim: int
    input_size: int  # crops are input_size x input_size

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """crops uint8 [N, S, S, 3] RGB -> (p_fake float32 [N], embedding float32 [N, D])."""
        ...

    def close(self) -> None: ...


def check_crops(crops: np.ndarray, size: int) -> None:
    """Raise ValueError unless `crops` is uint8 [N, size, size, 3]."""
    if not isinstance(crops, np.ndarray):
        raise ValueError(f"crops must be a numpy array, got {type(crops).__name__}")
    if crops.dtype != np.uint8:
        raise ValueError(f"crops must be uint8, got {crops.dtype}")
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
        raise ValueError(f"crops must be [N, {size}, {size}, 3] RGB, got shape {list(crops.shape)}")


def _open_torch(cfg: ModelConfig, img_size: int) -> Engine:
    from streamguard.inference.torch_engine import TorchEngine

    return TorchEngine.from_config(cfg, img_size)


Opener = Callable[[ModelConfig, int], Engine]

# Checkpoint file extension -> backend. ONNX Runtime (.onnx) and TensorRT (.plan) plug in here.
OPENERS: dict[str, Opener] = {
    ".pth": _open_torch,
    ".pt": _open_torch,
}


def open_engine(cfg: ModelConfig, img_size: int = 224) -> Engine:
    """The engine for `cfg.checkpoint` (by extension), or untrained torch weights without one."""
    if cfg.checkpoint is None:
        return _open_torch(cfg, img_size)
    suffix = cfg.checkpoint.suffix.lower()
    opener = OPENERS.get(suffix)
    if opener is None:
        raise CheckpointError(
            f"{cfg.checkpoint}: unsupported checkpoint type {suffix or '(no extension)'!r}; expected one of {', '.join(OPENERS)}"
        )
    return opener(cfg, img_size)
