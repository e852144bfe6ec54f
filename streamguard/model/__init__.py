"""The FSFM ViT and its checkpoints.

`_torchvision_compat` is imported first: timm imports torchvision, which fails beside
the CPU torch build unless the compat module has run (see its docstring).
"""

import streamguard._torchvision_compat  # noqa: F401  (must precede timm)

from streamguard.model.checkpoint import (
    LoadedModel,
    ModelMeta,
    load_checkpoint,
    save_checkpoint,
    untrained_model,
    weights_digest,
)
from streamguard.model.fsfm import ARCHS, FSFMViT, ViTSpec, build_fsfm_vit, infer_arch, resize_pos_embed

__all__ = [
    "ARCHS",
    "FSFMViT",
    "LoadedModel",
    "ModelMeta",
    "ViTSpec",
    "build_fsfm_vit",
    "infer_arch",
    "load_checkpoint",
    "resize_pos_embed",
    "save_checkpoint",
    "untrained_model",
    "weights_digest",
]
