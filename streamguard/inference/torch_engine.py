"""The eager PyTorch backend: the reference every other backend is checked against.

Normalisation happens here, inside the engine, because mean/std belong to the
weights (ModelMeta), not to the crop stage. bf16 uses CPU autocast: about 1.8x faster
than fp32 on CPUs with bf16 instructions (AVX512-BF16 or AMX), within a few
thousandths on P(fake); on CPUs without them (AVX2 only) it measured 7-11x *slower*, so
asking for it there logs a warning.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from streamguard.config import ModelConfig
from streamguard.inference.engine import check_crops
from streamguard.model.checkpoint import LoadedModel, ModelMeta, load_checkpoint, untrained_model

log = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


class TorchEngine:
    def __init__(self, loaded: LoadedModel, precision: str = "fp32", threads: int | None = None):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if precision == "bf16" and not cpu_has_native_bf16():
            log.warning("precision bf16: this CPU has no native bf16 (AVX512-BF16/AMX); bf16 runs far slower than fp32 here")
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide; worker threads inherit it
        self.meta: ModelMeta = loaded.meta
        self.embed_dim: int = loaded.model.embed_dim
        self.input_size: int = loaded.meta.img_size
        self._model: torch.nn.Module | None = loaded.model.eval()
        self._bf16 = precision == "bf16"
        self._mean = torch.tensor(self.meta.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(self.meta.std, dtype=torch.float32).view(1, 3, 1, 1)

    @classmethod
    def from_config(cls, cfg: ModelConfig, img_size: int = 224) -> TorchEngine:
        if cfg.checkpoint is not None:
            loaded = load_checkpoint(cfg.checkpoint, arch=cfg.arch, img_size=img_size)
        else:
            loaded = untrained_model(cfg.arch or "base", seed=cfg.seed, img_size=img_size)
        return cls(loaded, precision=cfg.precision, threads=cfg.threads)

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """crops uint8 [N, S, S, 3] RGB -> (p_fake float32 [N], embedding float32 [N, D])."""
        check_crops(crops, self.input_size)
        if self._model is None:
            raise RuntimeError("TorchEngine is closed")
        n = crops.shape[0]
        if n == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.embed_dim), np.float32)
        with torch.inference_mode():
            x = torch.tensor(crops).permute(0, 3, 1, 2).float().div_(255.0)  # [N, 3, S, S] in [0, 1]
            x = (x - self._mean) / self._std
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._bf16):
                logits, embedding = self._model.forward_with_embedding(x)  # [N, C], [N, D]
            p_fake = logits.float().softmax(dim=-1)[:, self.meta.fake_index]  # [N]
            return p_fake.numpy().astype(np.float32), embedding.float().numpy()

    def close(self) -> None:
        self._model = None
