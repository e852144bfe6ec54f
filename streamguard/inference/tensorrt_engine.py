"""TensorRT: build a plan from the exported ONNX, and run it on a CUDA stream.

Written against the TensorRT 10 Python API. TensorRT cannot be installed on the
machines this project was built on (FACTS.md), so this module has only run where
`import tensorrt` works; its tests skip elsewhere, saying so. Everything before it, the
ONNX graph with its dynamic batch axis and its parity with torch, is tested everywhere.

Build: the ONNX parser reads the fp32 export (normalisation and softmax inside), one
optimization profile spans the batch axis (min/opt/max), FP16 is allowed, and a
timing cache file is read before and written after, so rebuilding on the same GPU
skips most kernel timing. Run: device buffers are allocated once per batch-size
bucket (powers of two inside the profile), crops are copied in, `execute_async_v3`
runs on a torch-owned CUDA stream, and only the rows asked for are copied back.
torch provides the CUDA memory and stream, so no other CUDA binding is needed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from streamguard.config import ModelConfig
from streamguard.errors import CheckpointError, ConfigError
from streamguard.inference.contract import (
    INPUT_NAME, OUTPUT_NAMES, Engine, check_crops, check_fits, read_sidecar, refuse_parallel_calls, sidecar_path,
    write_json_atomic,
)

PLAN_SUFFIXES = (".plan", ".engine")

log = logging.getLogger(__name__)


def require_tensorrt(path: Path) -> ModuleType:
    try:
        import tensorrt
    except ImportError:
        raise CheckpointError(
            f"{path}: TensorRT needs the 'tensorrt' Python package (TensorRT 10), which is not installed on this machine"
        ) from None
    return tensorrt


def require_cuda(path: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        raise CheckpointError(f"{path}: TensorRT needs a CUDA GPU, and torch sees none on this machine")


@dataclass(frozen=True)
class BuildOptions:
    fp16: bool = True
    min_batch: int = 1
    opt_batch: int = 16
    max_batch: int = 64
    workspace_gb: float = 4.0
    timing_cache: Path | None = None  # None: trt_timing.cache beside the plan

    def check(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(
                f"batch sizes must satisfy 1 <= min ({self.min_batch}) <= opt ({self.opt_batch}) <= max ({self.max_batch})"
            )
        if self.workspace_gb <= 0:
            raise ConfigError(f"--workspace-gb must be > 0, got {self.workspace_gb}")


def build_engine(onnx_path: Path, out: Path, options: BuildOptions) -> Path:
    """Build a serialized TensorRT plan `out` (+ sidecar) from an fp32 engine export; return `out`."""
    onnx_path, out = Path(onnx_path), Path(out)
    options.check()
    if out.suffix not in PLAN_SUFFIXES:
        raise ConfigError(f"{out}: a TensorRT plan must end in {' or '.join(PLAN_SUFFIXES)}")
    if not onnx_path.is_file():
        raise CheckpointError(f"engine not found: {onnx_path}")
    sidecar = read_sidecar(onnx_path)
    if sidecar.precision != "fp32":
        raise CheckpointError(f"{onnx_path}: is {sidecar.precision}; build TensorRT plans from the fp32 export")
    trt = require_tensorrt(onnx_path)
    require_cuda(onnx_path)
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: every network has explicit batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CheckpointError(f"{onnx_path}: TensorRT's ONNX parser refused it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * (1 << 30)))
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    size = sidecar.meta.img_size
    profile = builder.create_optimization_profile()
    profile.set_shape(
        INPUT_NAME, (options.min_batch, size, size, 3), (options.opt_batch, size, size, 3), (options.max_batch, size, size, 3)
    )
    config.add_optimization_profile(profile)
    cache_path = options.timing_cache or out.with_name("trt_timing.cache")
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise CheckpointError(f"{onnx_path}: TensorRT could not build a plan (its log above says why)")
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    data = dict(
        sidecar.data,
        precision="fp16" if options.fp16 else "fp32",
        tensorrt={
            "version": trt.__version__,
            "gpu": torch.cuda.get_device_name(),
            "profile": {"min": options.min_batch, "opt": options.opt_batch, "max": options.max_batch},
            "workspace_gb": options.workspace_gb,
            "onnx": str(onnx_path),
        },
    )
    write_json_atomic(sidecar_path(out), data)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(memoryview(plan))
    os.replace(tmp, out)
    return out


def plan_buckets(min_batch: int, max_batch: int) -> list[int]:
    """Batch sizes that get their own buffers: powers of two inside [min, max], and max itself."""
    buckets = [b for b in (2**i for i in range(16)) if min_batch <= b < max_batch]
    return sorted({min_batch, *buckets, max_batch})


class TensorRTEngine(Engine):
    concurrency = 1  # one execution context and its bound buffers: one call at a time

    def __init__(self, path: Path | str):
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"engine not found: {path}")
        sidecar = read_sidecar(path)
        trt = require_tensorrt(path)
        require_cuda(path)
        import torch

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise CheckpointError(f"{path}: TensorRT could not load this plan (built by another TensorRT version or for another GPU?)")
        self._check_contract(path, trt, engine, sidecar.meta.img_size, sidecar.embed_dim)
        low, _, high = engine.get_tensor_profile_shape(INPUT_NAME, 0)  # (min, opt, max) shapes of profile 0
        self.meta = sidecar.meta
        self.embed_dim = sidecar.embed_dim
        self.input_size = sidecar.meta.img_size
        self.precision = sidecar.precision
        self._buckets = plan_buckets(int(low[0]), int(high[0]))
        self._engine = engine
        self._context = engine.create_execution_context()
        self._device = torch.device("cuda")
        self._stream = torch.cuda.Stream(self._device)
        self._buffers: dict[int, tuple[Any, Any, Any]] = {}  # bucket -> crops, p_fake, embedding (device tensors)

    @staticmethod
    def _check_contract(path: Path, trt: ModuleType, engine: Any, size: int, embed_dim: int) -> None:
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        expected = {
            INPUT_NAME: (trt.TensorIOMode.INPUT, trt.DataType.UINT8, [-1, size, size, 3]),
            OUTPUT_NAMES[0]: (trt.TensorIOMode.OUTPUT, trt.DataType.FLOAT, [-1]),
            OUTPUT_NAMES[1]: (trt.TensorIOMode.OUTPUT, trt.DataType.FLOAT, [-1, embed_dim]),
        }
        for name, (mode, dtype, shape) in expected.items():
            if name not in names:
                raise CheckpointError(f"{path}: not a streamguard plan: no tensor {name!r} (has {', '.join(names)})")
            found = (engine.get_tensor_mode(name), engine.get_tensor_dtype(name), list(engine.get_tensor_shape(name)))
            if found != (mode, dtype, shape):
                raise CheckpointError(f"{path}: not a streamguard plan: {name!r} is {found}, expected {(mode, dtype, shape)}")

    def _bucket(self, n: int) -> int:
        return next(b for b in self._buckets if b >= n)

    def _buffers_for(self, bucket: int) -> tuple[Any, Any, Any]:
        import torch

        if bucket not in self._buffers:
            size = self.input_size
            self._buffers[bucket] = (
                torch.zeros((bucket, size, size, 3), dtype=torch.uint8, device=self._device),
                torch.empty((bucket,), dtype=torch.float32, device=self._device),
                torch.empty((bucket, self.embed_dim), dtype=torch.float32, device=self._device),
            )
            self._stream.wait_stream(torch.cuda.current_stream(self._device))  # the zero-fill ran there
        return self._buffers[bucket]

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """crops uint8 [N, S, S, 3] RGB -> (p_fake float32 [N], embedding float32 [N, D])."""
        import torch

        check_crops(crops, self.input_size)
        if self._context is None:
            raise RuntimeError("TensorRTEngine is closed")
        p_parts, e_parts = [np.zeros(0, np.float32)], [np.zeros((0, self.embed_dim), np.float32)]
        for start in range(0, len(crops), self._buckets[-1]):
            chunk = torch.tensor(crops[start : start + self._buckets[-1]])  # [n, S, S, 3] uint8, host
            n = len(chunk)
            x, p_fake, embedding = self._buffers_for(self._bucket(n))
            with torch.cuda.stream(self._stream):
                x[:n].copy_(chunk)  # rows n.. keep old crops: independent rows, results ignored
                self._context.set_input_shape(INPUT_NAME, tuple(x.shape))
                for name, tensor in zip((INPUT_NAME, *OUTPUT_NAMES), (x, p_fake, embedding)):
                    self._context.set_tensor_address(name, tensor.data_ptr())
                if not self._context.execute_async_v3(self._stream.cuda_stream):
                    raise RuntimeError(f"TensorRT execute_async_v3 failed on a batch of {len(x)}")
                p_parts.append(p_fake[:n].cpu().numpy())  # .cpu() waits for the stream
                e_parts.append(embedding[:n].cpu().numpy())
        return np.concatenate(p_parts), np.concatenate(e_parts)

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._buffers.clear()


def open_plan(path: Path, cfg: ModelConfig, img_size: int) -> Engine:
    """The registry's opener for TensorRT plans (`inference.registry.BACKENDS`)."""
    refuse_parallel_calls(cfg, "TensorRT")
    engine = check_fits(TensorRTEngine(path), path, cfg, img_size)
    log.info("inference: TensorRT %s (%s)", engine.precision, path)
    return engine
