"""P(fake) for a set of crops, computed the way the runtime engine computes it.

uint8 crops -> (x / 255 - mean) / std with the model's own statistics ->
`forward_with_embedding` -> softmax column `fake_index`. Validation during `fit` and
`eval` both use this, on any device; a test checks it against the runtime's
TorchEngine on the same crops.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from streamguard.model.checkpoint import ModelMeta
from training.augment import Normalize


@torch.inference_mode()
def predict(
    net: torch.nn.Module, meta: ModelMeta, loader: DataLoader, device: torch.device, amp: torch.dtype | None = None
) -> np.ndarray:
    """float32 [N] P(fake) for every crop of `loader` (batches of (uint8 [B, 3, S, S], ...)), in order."""
    was_training = net.training
    net.eval()
    normalize = Normalize(meta.mean, meta.std, device)
    out = []
    try:
        for x, *_ in loader:
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits, _ = net.forward_with_embedding(normalize(x.to(device, non_blocking=True)))
            out.append(logits.float().softmax(dim=-1)[:, meta.fake_index].cpu())
    finally:
        net.train(was_training)
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)
