"""Open an engine: pick the backend for a file by its type, load it, warm it up.

`model.engine` is run as is, by the backend registered for its extension (.pth/.pt
torch, .onnx onnxruntime, .plan/.engine TensorRT); `model.checkpoint` holds weights
that run the fastest way measured for the device unless `model.precision` says
otherwise (see `torch_precision`). `BACKENDS` keys each backend by its file types
and names its module, which is imported only when a file of that type is opened
(the way Frigate's `detectors/` keys plugins by type): a missing optional runtime
(TensorRT) matters only to the users who ask for it, and opening an .onnx never
loads the others. Every problem with the file is raised here, before any stream starts.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamguard.config import ModelConfig
from streamguard.errors import CheckpointError, ConfigError
from streamguard.inference.contract import Engine, refuse_parallel_calls

if TYPE_CHECKING:
    from streamguard.model.checkpoint import LoadedModel

log = logging.getLogger(__name__)

# How a backend opens an engine file: (path, model config, crop size) -> a ready engine.
Opener = Callable[[Path, ModelConfig, int], Engine]


@dataclass(frozen=True)
class Backend:
    """A model runtime: the engine files it runs, and `module:function` that opens one (an `Opener`)."""

    key: str
    suffixes: tuple[str, ...]
    opener: str

    def open(self, path: Path, cfg: ModelConfig, img_size: int) -> Engine:
        module, _, function = self.opener.partition(":")
        opener: Opener = getattr(importlib.import_module(module), function)
        return opener(path, cfg, img_size)


BACKENDS: tuple[Backend, ...] = (
    Backend("torch", (".pth", ".pt"), "streamguard.inference.registry:open_weights_file"),
    Backend("onnxruntime", (".onnx",), "streamguard.inference.onnx_engine:open_onnx"),
    Backend("tensorrt", (".plan", ".engine"), "streamguard.inference.tensorrt_engine:open_plan"),
)
BACKEND_FOR_SUFFIX: dict[str, Backend] = {suffix: b for b in BACKENDS for suffix in b.suffixes}


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
        log.info("inference: onnxruntime int8 on CPU, %s (%s)", engine.calls_described(), path)
        return engine
    refuse_parallel_calls(cfg, f"torch {precision}")
    log.info("inference: torch %s on %s%s", precision, device, " with CUDA graphs" if device == "cuda" and cfg.cuda_graphs else "")
    return TorchEngine(loaded, precision=precision, threads=cfg.threads, device=device, cuda_graphs=cfg.cuda_graphs)


def open_weights_file(path: Path, cfg: ModelConfig, img_size: int) -> Engine:
    """A .pth/.pt: a checkpoint runs the fastest way for the device; an engine (`model.engine`) runs as torch."""
    from streamguard.model.checkpoint import load_checkpoint

    return _run_weights(load_checkpoint(path, arch=cfg.arch, img_size=img_size), cfg, as_is=cfg.engine is not None)


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
    backend = BACKEND_FOR_SUFFIX.get(suffix)
    if backend is None:
        kind = "engine" if cfg.engine is not None else "checkpoint"
        raise CheckpointError(
            f"{path}: unsupported {kind} type {suffix or '(no extension)'!r}; expected one of {', '.join(BACKEND_FOR_SUFFIX)}"
        )
    return warm_up(backend.open(path, cfg, img_size))


def warm_up(engine: Engine) -> Engine:
    """Run one crop twice and keep the second call's time as `engine.warm_seconds_per_crop`.

    Why: the first call allocates (onnxruntime's arenas, cuDNN's choices), and the
    micro-batcher needs a time per crop to forecast when a stream's crops will be
    scored (`MicroBatcher.free_at`) before any batch has run. Without one, every stream
    starting at once decoded every frame until the first batch ended, and 16 x 1080p
    streams on two cores slowed that batch to 9-17 s (docs/benchmarks.md). An engine
    built otherwise (tests) keeps the contract's None; the batcher then starts without a
    forecast.
    """
    crop = np.zeros((1, engine.input_size, engine.input_size, 3), np.uint8)
    engine.infer(crop)
    started = time.perf_counter()
    engine.infer(crop)
    engine.warm_seconds_per_crop = time.perf_counter() - started
    return engine
