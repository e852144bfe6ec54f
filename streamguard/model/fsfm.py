"""The FSFM ViT, defined so that official FSFM fine-tuned weights load unchanged.

FSFM (CVPR 2025) fine-tunes a plain timm ViT/16 (qkv bias, LayerNorm eps 1e-6) and
classifies from the *mean of the patch tokens* (class token excluded) passed through
`fc_norm`, with the encoder's final `norm` removed. timm's own
`VisionTransformer(global_pool="avg", fc_norm=True)` computes exactly that and uses
the same parameter names, so subclassing it keeps every official key loadable and
lets timm carry the fast attention kernels. `forward_with_embedding` exposes the
pre-head embedding, which identity tracking and metric-learning heads reuse.
"""

from __future__ import annotations

import streamguard._torchvision_compat  # noqa: F401  (must precede timm: see its docstring)

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn


@dataclass(frozen=True)
class ViTSpec:
    """The shape of one ViT variant; `name` is how messages refer to it."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16


ARCHS: dict[str, ViTSpec] = {
    # NOT an FSFM release: a small ViT for tests and smoke runs only.
    "tiny": ViTSpec("ViT-Ti", embed_dim=192, depth=12, num_heads=3),
    # FSFM's ViT-S is the MoCo-v3 variant (12 heads, not timm's 6).
    "small": ViTSpec("ViT-S", embed_dim=384, depth=12, num_heads=12),
    "base": ViTSpec("ViT-B", embed_dim=768, depth=12, num_heads=12),
    "large": ViTSpec("ViT-L", embed_dim=1024, depth=24, num_heads=16),
}


class FSFMViT(VisionTransformer):
    """timm ViT with FSFM's head: mean of patch tokens -> fc_norm -> head."""

    def __init__(self, spec: ViTSpec, num_classes: int = 2, img_size: int = 224, drop_path_rate: float = 0.0):
        super().__init__(
            img_size=img_size,
            patch_size=spec.patch_size,
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            global_pool="avg",  # mean over tokens after the class token
            fc_norm=True,  # LayerNorm after pooling; timm then makes `norm` an Identity
            num_classes=num_classes,
            drop_path_rate=drop_path_rate,
        )
        self.spec = spec

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 3, S, S] normalised -> (logits [N, C], embedding [N, D] = fc_norm output)."""
        tokens = self.forward_features(x)  # [N, 1 + L, D]
        embedding = self.forward_head(tokens, pre_logits=True)  # [N, D]
        return self.head(embedding), embedding


def build_fsfm_vit(arch: str, num_classes: int = 2, img_size: int = 224, drop_path_rate: float = 0.0) -> FSFMViT:
    """A freshly initialised FSFM ViT of variant `arch` (a key of ARCHS)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    if img_size % spec.patch_size:
        raise ValueError(f"img_size {img_size} is not a multiple of the patch size {spec.patch_size}")
    return FSFMViT(spec, num_classes=num_classes, img_size=img_size, drop_path_rate=drop_path_rate)


_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The ARCHS key whose (dim, depth, patch) match a ViT state dict; ValueError if none does."""
    proj = state_dict.get("patch_embed.proj.weight")  # [D, 3, P, P]
    if not isinstance(proj, torch.Tensor) or proj.ndim != 4:
        raise ValueError("no 'patch_embed.proj.weight' [D, 3, P, P]: not a ViT state dict")
    dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    depth = len({m.group(1) for k in state_dict if (m := _BLOCK_KEY.match(k))})
    for arch, spec in ARCHS.items():
        if (spec.embed_dim, spec.depth, spec.patch_size) == (dim, depth, patch):
            return arch
    raise ValueError(f"a ViT with dim {dim}, depth {depth}, patch {patch} matches no known arch ({', '.join(ARCHS)})")


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[1, 1 + g*g, D] -> [1, 1 + grid[0]*grid[1], D]: bicubic on the patch grid, class entry kept.

    Same as FSFM's `interpolate_pos_embed` (bicubic, align_corners=False), so a checkpoint
    trained at 224 runs at another crop size the way the official code would run it.
    """
    _, n, dim = pos_embed.shape
    side = math.isqrt(n - 1)
    if side * side != n - 1:
        raise ValueError(f"pos_embed has {n - 1} patch positions, not a square grid")
    if (side, side) == tuple(grid):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]  # [1, 1, D], [1, g*g, D]
    patch_pos = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)  # [1, D, g, g]
    patch_pos = F.interpolate(patch_pos.float(), size=grid, mode="bicubic", align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim)  # [1, h*w, D]
    return torch.cat([cls_pos, patch_pos.to(pos_embed.dtype)], dim=1)
