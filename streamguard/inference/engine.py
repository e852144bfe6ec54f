"""The one interface every model backend offers the pipeline: uint8 crops in, scores out.

Backends differ in what they load (a torch checkpoint, an ONNX graph, a TensorRT
plan) but not in what they promise, so the batcher and the CLI depend only on
`Engine`. `open_engine` picks the backend from the file's extension: `model.engine`
is run as is (.pth/.pt torch, .onnx onnxruntime, .plan/.engine TensorRT);
`model.checkpoint` holds weights that run the fastest way measured for the device
unless `model.precision` says otherwise (see `torch_precision`). Openers import their
backend lazily so a missing optional runtime only matters to the users who ask for it.
Every problem with the file is raised here, before any stream starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from streamguard.config import ModelConfig
from streamguard.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from streamguard.inference.onnx_engine import OnnxEngine
    from streamguard.model.checkpoint import LoadedModel, ModelMeta

log = logging.getLogger(__name__)


class Engine(Protocol):
    meta: ModelMeta
    embed_dim: int
    input_size: int  # crops are input_size x input_size
    concurrency: int  # infer calls worth running at once: the batcher keeps this many batches in flight
    # Optional: `warm_seconds_per_crop`, set by `warm_up` (open_engine does), the batcher's first forecast;
    # `prepare(max_batch)`, which the pipeline calls before any stream starts, for work that must not
    # run beside live decoders (TorchEngine captures its CUDA graphs).

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


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without one is a ConfigError."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device is cuda, but torch sees no CUDA GPU on this machine")
    return device


def torch_precision(precision: str, device: str, trained: bool, as_is: bool) -> str:
    """What weights run as: 'int8' (onnxruntime, CPU) or a torch precision on `device`.

    auto: CUDA fp16; CPU int8 for trained weights (the fastest CPU engine measured: ~2x
    torch fp32 on our AVX2 CPU, 3x with VNNI; docs/benchmarks.md), fp32 for untrained
    ones (their scores mean nothing; nothing worth exporting). `as_is` (a .pth given as
    model.engine) means torch, never int8.
    """
    if precision == "auto":
        if device == "cuda":
            return "fp16"
        return "int8" if trained and not as_is else "fp32"
    if precision == "int8" and as_is:
        raise ConfigError("precision int8 runs on onnxruntime: pass the weights as --checkpoint, or an int8 .onnx as --engine")
    if precision == "fp16" and device == "cpu":
        raise ConfigError("precision fp16 needs CUDA; on a CPU use auto (int8), fp32 or bf16")
    return precision


def _run_weights(loaded: LoadedModel, cfg: ModelConfig, as_is: bool) -> Engine:
    from streamguard.inference.torch_engine import TorchEngine

    if cfg.precision == "int8" and cfg.device == "cuda":
        raise ConfigError("precision int8 runs on the CPU (onnxruntime); on CUDA use fp16, or a TensorRT plan")
    device = "cpu" if cfg.precision == "int8" else resolve_device(cfg.device)
    precision = torch_precision(cfg.precision, device, loaded.meta.trained, as_is)
    if precision == "int8":
        from streamguard.inference.onnx_engine import OnnxEngine
        from streamguard.inference.quantize import cached_int8

        path = cached_int8(loaded, cfg.engine_cache)
        engine = OnnxEngine(path, threads=cfg.threads, parallel_calls=cfg.parallel_calls)
        log.info("inference: onnxruntime int8 on CPU, %s (%s)", _calls(engine), path)
        return engine
    _refuse_parallel_calls(cfg, f"torch {precision}")
    log.info("inference: torch %s on %s%s", precision, device, " with CUDA graphs" if device == "cuda" and cfg.cuda_graphs else "")
    return TorchEngine(loaded, precision=precision, threads=cfg.threads, device=device, cuda_graphs=cfg.cuda_graphs)


def _calls(engine: OnnxEngine) -> str:
    threads = f"{engine.threads} thread(s)" if engine.threads else "onnxruntime's default threads"
    return f"{engine.concurrency} call(s) at once on {threads} each"


def _refuse_parallel_calls(cfg: ModelConfig, backend: str) -> None:
    if cfg.parallel_calls > 1:
        raise ConfigError(f"model.parallel_calls is for onnxruntime engines; {backend} runs one call at a time")


def _open_torch(path: Path, cfg: ModelConfig, img_size: int) -> Engine:
    from streamguard.model.checkpoint import load_checkpoint

    return _run_weights(load_checkpoint(path, arch=cfg.arch, img_size=img_size), cfg, as_is=cfg.engine is not None)


def _check_fits(engine: Engine, path: Path, cfg: ModelConfig, img_size: int) -> Engine:
    """An exported engine has a fixed arch and input size: refuse one that does not fit the config."""
    meta = engine.meta
    if cfg.arch is not None and cfg.arch != meta.arch:
        engine.close()
        raise CheckpointError(f"{path} holds {meta.name} (arch {meta.arch!r}) but arch {cfg.arch!r} was asked for")
    if engine.input_size != img_size:
        engine.close()
        raise CheckpointError(f"{path} takes {engine.input_size} px crops but crop.size is {img_size}; export it at {img_size}")
    return engine


def _open_onnx(path: Path, cfg: ModelConfig, img_size: int) -> Engine:
    from streamguard.inference.onnx_engine import OnnxEngine

    engine = _check_fits(OnnxEngine(path, threads=cfg.threads, parallel_calls=cfg.parallel_calls), path, cfg, img_size)
    log.info("inference: onnxruntime %s on CPU, %s (%s)", engine.precision, _calls(engine), path)
    return engine


def _open_tensorrt(path: Path, cfg: ModelConfig, img_size: int) -> Engine:
    from streamguard.inference.tensorrt_engine import TensorRTEngine

    _refuse_parallel_calls(cfg, "TensorRT")
    engine = _check_fits(TensorRTEngine(path), path, cfg, img_size)
    log.info("inference: TensorRT %s (%s)", engine.precision, path)
    return engine


Opener = Callable[[Path, ModelConfig, int], Engine]

# File extension -> backend.
OPENERS: dict[str, Opener] = {
    ".pth": _open_torch,
    ".pt": _open_torch,
    ".onnx": _open_onnx,
    ".plan": _open_tensorrt,
    ".engine": _open_tensorrt,
}


def open_engine(cfg: ModelConfig, img_size: int = 224) -> Engine:
    """The engine for `cfg.engine` or `cfg.checkpoint` (by extension), or untrained weights without either,
    warmed up (`warm_up`)."""
    if cfg.engine is not None and cfg.checkpoint is not None:
        raise ConfigError(f"give model.engine ({cfg.engine}) or model.checkpoint ({cfg.checkpoint}), not both")
    path = cfg.engine if cfg.engine is not None else cfg.checkpoint
    if path is None:
        from streamguard.model.checkpoint import untrained_model

        engine = _run_weights(untrained_model(cfg.arch or "base", seed=cfg.seed, img_size=img_size), cfg, as_is=False)
        return warm_up(engine)
    suffix = path.suffix.lower()
    opener = OPENERS.get(suffix)
    if opener is None:
        kind = "engine" if cfg.engine is not None else "checkpoint"
        raise CheckpointError(
            f"{path}: unsupported {kind} type {suffix or '(no extension)'!r}; expected one of {', '.join(OPENERS)}"
        )
    return warm_up(opener(path, cfg, img_size))


def warm_up(engine: Engine) -> Engine:
    """Run one crop twice and keep the second call's time as `engine.warm_seconds_per_crop`.

    Why: the first call allocates (onnxruntime's arenas, cuDNN's choices), and the
    micro-batcher needs a time per crop to forecast when a stream's crops will be
    scored (`MicroBatcher.free_at`) before any batch has run. Without one, every stream
    starting at once decoded every frame until the first batch ended, and 16 x 1080p
    streams on two cores slowed that batch to 9-17 s (docs/benchmarks.md). An engine
    built otherwise (tests) has no such attribute; the batcher then starts without a
    forecast.
    """
    crop = np.zeros((1, engine.input_size, engine.input_size, 3), np.uint8)
    engine.infer(crop)
    started = time.perf_counter()
    engine.infer(crop)
    engine.warm_seconds_per_crop = time.perf_counter() - started  # type: ignore[attr-defined]
    return engine
