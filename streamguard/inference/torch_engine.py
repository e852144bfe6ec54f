"""The eager PyTorch backend: the reference every other backend is checked against.

Normalisation happens inside the engine (`CropScorer`), because mean/std belong to
the weights (ModelMeta), not to the crop stage; the ONNX export traces the very same
module, so every backend computes one graph.

CPU: fp32, or bf16 autocast, about 1.8x faster than fp32 on CPUs with bf16
instructions (AVX512-BF16 or AMX) and within a few thousandths on P(fake); on CPUs
without them (AVX2 only) it measured 7-11x *slower*, so asking for it there logs a
warning. CUDA: the weights are cast to fp16 or bf16 (no autocast bookkeeping per op)
and, by default, each batch-size bucket runs as one captured CUDA graph: a ViT-B
forward is roughly 200 kernel launches, which at small batches cost more than the maths.
Crops reach the GPU through one page-locked staging buffer: on an H200 host a batch of
256 (38.5 MB) went over in 1.9 ms that way, against 5.5 ms straight from the caller's
pageable array and 10.2 ms for the copy-then-transfer used before, which was a third of
the 30 ms a ViT-B fp16 call took in all (benchmarks/bench_transfer.py, docs/benchmarks.md).
All of the engine's GPU work runs on a CUDA stream of its own, created non-blocking:
FFmpeg's NVDEC (ingest.hwaccel) copies its pictures on the context's legacy default
stream, which waits for, and holds up, all work on blocking streams, torch's default
stream included; on its own stream a 30 ms batch and the decoders' copies do not queue
behind each other (tests/unit/test_export.py). Beside 32 NVDEC streams on the H200 it
measured level with the default stream (6,130 against 5,998 crops/s at batch 64, the
same latencies), since NVDEC's pictures now stay on the GPU and its copies are short;
it is kept because it costs nothing and makes that independent of what FFmpeg does.
"""

from __future__ import annotations

import copy
import logging
import time

import numpy as np
import torch
from torch import nn

from streamguard.cuda_context import share_primary_context
from streamguard.inference.contract import Engine, check_crops
from streamguard.model.checkpoint import LoadedModel, ModelMeta

log = logging.getLogger(__name__)

# Batch sizes a CUDA graph is captured for; a batch runs in the smallest bucket that
# holds it (padded), larger batches in chunks of the largest.
CUDA_GRAPH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CUDA_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cpu_has_native_bf16() -> bool:
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


class CropScorer(nn.Module):
    """The engine contract as one module: uint8 crops [N, S, S, 3] RGB -> (p_fake [N], embedding [N, D]).

    (x / 255 - mean) / std is folded into one multiply-add, x * scale - shift, in fp32;
    the result is cast to the model's dtype (fp16/bf16 weights on CUDA).
    """

    def __init__(self, model: nn.Module, meta: ModelMeta):  # an FSFMViT, or any net with forward_with_embedding
        super().__init__()
        self.model = model
        mean = torch.tensor(meta.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(meta.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", mean / std)
        self.fake_index = meta.fake_index
        self.dtype = next(model.parameters()).dtype

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = crops.permute(0, 3, 1, 2).float() * self.scale - self.shift  # [N, 3, S, S] normalised
        if self.dtype != torch.float32:
            x = x.to(self.dtype)
        logits, embedding = self.model.forward_with_embedding(x)  # [N, C], [N, D]
        if logits.dtype != torch.float32:  # bf16/fp16 runs: softmax and outputs in fp32 (an fp32 export has no Casts)
            logits, embedding = logits.float(), embedding.float()
        return logits.softmax(dim=-1)[:, self.fake_index], embedding


def host_tensor(crops: np.ndarray) -> torch.Tensor:
    """`crops` as a CPU tensor over the same memory where torch can share it (contiguous and
    writable), else a copy: at batch 256 the crops are 38.5 MB, and a copy costs ms."""
    if crops.flags.c_contiguous and crops.flags.writeable:
        return torch.from_numpy(crops)
    return torch.tensor(crops)


def graph_bucket(n: int) -> int:
    """The smallest CUDA graph bucket holding `n` crops (1 <= n <= the largest bucket)."""
    return next(b for b in CUDA_GRAPH_BUCKETS if b >= n)


class TorchEngine(Engine):
    """Runs a LoadedModel with torch; never changes the caller's model (CUDA works on a copy)."""

    concurrency = 1  # torch spreads one call over its threads (CUDA: its own stream, one graph per bucket)

    def __init__(
        self,
        loaded: LoadedModel,
        precision: str = "fp32",
        threads: int | None = None,
        device: str = "cpu",
        cuda_graphs: bool = False,
    ):
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cpu" and precision not in ("fp32", "bf16"):
            raise ValueError(f"torch on CPU runs fp32 or bf16, not {precision!r}")
        if device == "cuda" and precision not in CUDA_DTYPES:
            raise ValueError(f"torch on CUDA runs {', '.join(CUDA_DTYPES)}, not {precision!r}")
        if device == "cpu" and precision == "bf16" and not cpu_has_native_bf16():
            log.warning("precision bf16: this CPU has no native bf16 (AVX512-BF16/AMX); bf16 runs far slower than fp32 here")
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide; worker threads inherit it
        self.meta: ModelMeta = loaded.meta
        self.embed_dim: int = loaded.model.embed_dim
        self.input_size: int = loaded.meta.img_size
        self.precision = precision
        self.device = torch.device(device)
        self._cpu_bf16 = device == "cpu" and precision == "bf16"
        if device == "cuda":
            share_primary_context()  # before torch starts the context: NVDEC (ingest.hwaccel) shares it
            model = copy.deepcopy(loaded.model).to(self.device, CUDA_DTYPES[precision])
            self._scorer: CropScorer | None = CropScorer(model, self.meta).to(self.device).eval()
            self._stream: torch.cuda.Stream | None = torch.cuda.Stream(self.device)  # non-blocking (torch's pool)
            self._stream.wait_stream(torch.cuda.current_stream(self.device))  # the weights' copy above
        else:
            self._scorer = CropScorer(loaded.model, self.meta).eval()
            self._stream = None
        # CUDA: page-locked [M, S, S, 3] uint8 that crops are copied into before each transfer; grown on demand
        self._staging: torch.Tensor | None = None
        # bucket -> (graph, static input [B, S, S, 3] uint8, static outputs), captured on first use
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] | None = (
            {} if device == "cuda" and cuda_graphs else None
        )

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """crops uint8 [N, S, S, 3] RGB -> (p_fake float32 [N], embedding float32 [N, D])."""
        check_crops(crops, self.input_size)
        if self._scorer is None:
            raise RuntimeError("TorchEngine is closed")
        if crops.shape[0] == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.embed_dim), np.float32)
        with torch.inference_mode(), torch.cuda.stream(self._stream):  # CPU: no stream, a no-op
            if self._graphs is not None:
                p_fake, embedding = self._replay(crops)
            else:
                x = self._upload(crops) if self.device.type == "cuda" else host_tensor(crops)  # [N, S, S, 3] uint8
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._cpu_bf16):
                    p_fake, embedding = self._scorer(x)
            return p_fake.cpu().numpy(), embedding.cpu().numpy()

    def prepare(self, max_batch: int) -> None:
        """Capture the CUDA graph of every bucket a batch of up to `max_batch` crops runs in, now.

        Why: the pipeline calls this before any stream starts. A capture beside live NVDEC
        decoders was invalidated by their CUDA calls (cudaErrorStreamCaptureInvalidated) and
        the batch failed: on the H200, with every stream's first batch capturing its bucket,
        all 16 streams failed in the default capture mode and 6 of 16 and 11 of 64 in the
        thread-local one (benchmarks/results/gpu-h200-20261204, runs 9 and 10). Captured up
        front, a graph is only replayed while streams run. A no-op without CUDA graphs.
        """
        if self._graphs is None or self._scorer is None:
            return
        started = time.perf_counter()
        largest = graph_bucket(min(max(1, max_batch), CUDA_GRAPH_BUCKETS[-1]))
        buckets = [b for b in CUDA_GRAPH_BUCKETS if b <= largest]
        with torch.inference_mode(), torch.cuda.stream(self._stream):
            for bucket in buckets:
                self._graph(bucket)
        log.info("captured CUDA graphs for batches of %s crops in %.1f s", ", ".join(map(str, buckets)),
                 time.perf_counter() - started)

    def close(self) -> None:
        self._scorer = None
        self._graphs = None
        self._staging = None

    def _upload(self, crops: np.ndarray, into: torch.Tensor | None = None) -> torch.Tensor:
        """crops [n, S, S, 3] on the device (in `into` when given), by way of the staging buffer.

        The transfer is asynchronous on the current stream; every call reads its outputs
        back (a synchronisation) before the next one writes the buffer again."""
        n = len(crops)
        if self._staging is None or len(self._staging) < n:
            rows = graph_bucket(n) if n <= CUDA_GRAPH_BUCKETS[-1] else n
            self._staging = torch.empty((rows, *crops.shape[1:]), dtype=torch.uint8, pin_memory=True)
        staged = self._staging[:n].copy_(host_tensor(crops))  # torch's copy: on several threads, unlike numpy's
        if into is None:
            into = torch.empty(staged.shape, dtype=torch.uint8, device=self.device)
        return into.copy_(staged, non_blocking=True)

    # --- CUDA graphs -----------------------------------------------------------------------

    def _replay(self, crops: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy each chunk into its bucket's static input, replay the graph, read the first n rows."""
        p_parts, e_parts = [], []
        for start in range(0, len(crops), CUDA_GRAPH_BUCKETS[-1]):
            chunk = crops[start : start + CUDA_GRAPH_BUCKETS[-1]]  # [n, S, S, 3] uint8
            n = len(chunk)
            graph, static_in, (static_p, static_e) = self._graph(graph_bucket(n))
            self._upload(chunk, into=static_in[:n])  # rows n.. keep old crops: independent rows, results ignored
            graph.replay()
            p_parts.append(static_p[:n].cpu())
            e_parts.append(static_e[:n].cpu())
        return torch.cat(p_parts), torch.cat(e_parts)

    def _graph(self, bucket: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        assert self._graphs is not None and self._scorer is not None
        if bucket not in self._graphs:
            size = self.input_size
            static_in = torch.zeros((bucket, size, size, 3), dtype=torch.uint8, device=self.device)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up outside the graph: cuBLAS handles, kernel choices
                for _ in range(3):
                    self._scorer(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the default (global) mode forbids every thread of the process the calls
            # unsafe during capture, so a decoding thread's NVDEC call failed then; `prepare` still
            # captures before any decoder starts, since their device-wide waits can invalidate a capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                static_out = self._scorer(static_in)
            self._graphs[bucket] = (graph, static_in, static_out)
            log.debug("captured a CUDA graph for batch %d", bucket)
        return self._graphs[bucket]
