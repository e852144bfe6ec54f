"""The engine contract: what every model backend promises the pipeline, and the
engine file (sidecar) format that lets any backend run a model exported once.

Backends differ in what they load (a torch checkpoint, an ONNX graph, a TensorRT
plan) but not in what they promise: uint8 crops in, `p_fake` and an embedding out.
So the batcher and the pipeline depend only on `Engine`, and this module depends on
no backend: each backend imports it, never the other way round.

An exported engine (.onnx, .plan) cannot say in its graph which weights it holds,
how it normalises, which class is fake or what threshold was calibrated: that goes
in the sidecar `PATH.json` beside it, read back into a `ModelMeta`, so events name
the model and its digest whichever backend scored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamguard.config import ModelConfig
from streamguard.errors import CheckpointError, ConfigError
from streamguard.model.checkpoint import ModelMeta

SIDECAR_FORMAT = "streamguard.engine.v1"
INPUT_NAME = "crops"
OUTPUT_NAMES = ("p_fake", "embedding")


class Engine(Protocol):
    """uint8 crops [N, S, S, 3] RGB -> (p_fake float32 [N], embedding float32 [N, D]).

    Backends subclass it to inherit the defaults below; anything with these members is one.
    """

    meta: ModelMeta
    embed_dim: int  # D
    input_size: int  # S: crops are S x S
    concurrency: int  # infer calls worth running at once: the batcher keeps this many batches in flight
    # Seconds per crop of a warm call (`registry.warm_up` times it): the batcher's first forecast of when
    # the engine is free, before any batch has run. None: not measured, the batcher starts without one.
    warm_seconds_per_crop: float | None = None

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """crops uint8 [N, S, S, 3] RGB -> (p_fake float32 [N], embedding float32 [N, D])."""
        ...

    def prepare(self, max_batch: int) -> None:
        """Work that must run before any stream starts, not beside live decoders (TorchEngine captures
        its CUDA graphs here: beside live NVDEC decoders a capture failed). Default: nothing to do."""
        return None

    def close(self) -> None: ...


def check_crops(crops: np.ndarray, size: int) -> None:
    """Raise ValueError unless `crops` is uint8 [N, size, size, 3]."""
    if not isinstance(crops, np.ndarray):
        raise ValueError(f"crops must be a numpy array, got {type(crops).__name__}")
    if crops.dtype != np.uint8:
        raise ValueError(f"crops must be uint8, got {crops.dtype}")
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
        raise ValueError(f"crops must be [N, {size}, {size}, 3] RGB, got shape {list(crops.shape)}")


def check_fits(engine: Engine, path: Path, cfg: ModelConfig, img_size: int) -> Engine:
    """An exported engine has a fixed arch and input size: refuse (and close) one that does not fit the config."""
    meta = engine.meta
    if cfg.arch is not None and cfg.arch != meta.arch:
        engine.close()
        raise CheckpointError(f"{path} holds {meta.name} (arch {meta.arch!r}) but arch {cfg.arch!r} was asked for")
    if engine.input_size != img_size:
        engine.close()
        raise CheckpointError(f"{path} takes {engine.input_size} px crops but crop.size is {img_size}; export it at {img_size}")
    return engine


def refuse_parallel_calls(cfg: ModelConfig, backend: str) -> None:
    """`model.parallel_calls` > 1 only where calls can run at once on one model (onnxruntime)."""
    if cfg.parallel_calls > 1:
        raise ConfigError(f"model.parallel_calls is for onnxruntime engines; {backend} runs one call at a time")


def sidecar_path(engine: Path) -> Path:
    """PATH.onnx / PATH.plan -> PATH.json."""
    return Path(engine).with_suffix(".json")


def write_json_atomic(path: Path, data: dict[str, Any]) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def engine_sidecar(meta: ModelMeta, embed_dim: int, precision: str, **extra: Any) -> dict[str, Any]:
    """The sidecar of an engine file: the model's meta, the I/O contract, the precision, and `extra`."""
    size = meta.img_size
    return {
        "format": SIDECAR_FORMAT,
        "model": meta.to_dict(),  # name, arch, img_size, mean, std, class_names, fake_index, threshold, digest, ...
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["N", size, size, 3], "layout": "NHWC, RGB"},
        "outputs": {"p_fake": {"dtype": "float32", "shape": ["N"]}, "embedding": {"dtype": "float32", "shape": ["N", embed_dim]}},
        "precision": precision,
        **extra,
    }


@dataclass(frozen=True)
class Sidecar:
    """What an engine file's sidecar says about it."""

    meta: ModelMeta  # path = the engine file
    embed_dim: int
    precision: str  # fp32, int8, fp16
    data: dict[str, Any]  # the whole JSON


def read_sidecar(engine: Path) -> Sidecar:
    path = sidecar_path(engine)
    if not path.is_file():
        raise CheckpointError(f"{engine}: its sidecar {path.name} is missing (write both with `streamguard export-onnx`)")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {SIDECAR_FORMAT!r}")
        m = data["model"]
        meta = ModelMeta(
            name=str(m["name"]),
            arch=str(m["arch"]),
            img_size=int(m["img_size"]),
            mean=tuple(float(v) for v in m["mean"]),
            std=tuple(float(v) for v in m["std"]),
            fake_index=int(m["fake_index"]),
            class_names=tuple(str(v) for v in m["class_names"]),
            threshold=None if m["threshold"] is None else float(m["threshold"]),
            digest=str(m["digest"]),
            trained=bool(m["trained"]),
            source=m["source"],
            path=str(engine),
        )
        return Sidecar(meta, int(data["outputs"]["embedding"]["shape"][1]), str(data["precision"]), data)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        raise CheckpointError(f"{path}: not a valid {SIDECAR_FORMAT} sidecar ({type(err).__name__}: {err})") from None
