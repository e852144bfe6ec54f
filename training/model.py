"""What is trained: the runtime's network, plus heads and optimiser groups only training needs.

The network is either the runtime's FSFM ViT (streamguard.model.fsfm, the real-run
backbone) or any timm classifier wrapped to offer the same interface
(`forward_with_embedding`, `embed_dim`), so evaluation, the runtime's torch engine
and the exporters treat both alike. Checkpoints are the runtime's own format
(`save_checkpoint`): weights, normalisation, class order, threshold, and the
training config under "config". FSFM ViT checkpoints load in the runtime as they
are; timm ones through their ONNX export.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import timm
import torch
from timm.optim import param_groups_layer_decay
from torch import nn

from streamguard.errors import CheckpointError, ConfigError
from streamguard.model.checkpoint import (
    FORMAT,
    VGGFACE2_MEAN,
    VGGFACE2_STD,
    LoadedModel,
    ModelMeta,
    load_checkpoint,
    weights_digest,
)
from streamguard.model.fsfm import FSFMViT, build_fsfm_vit
from training.config import ModelSection, OptimConfig
from training.datasets import CLASS_NAMES, FAKE


class TimmNet(nn.Module):
    """A timm classifier with the runtime's interface; its embedding is the pre-logits feature."""

    def __init__(
        self,
        name: str,
        num_classes: int = 2,
        drop_path_rate: float = 0.0,
        weights: Path | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__()
        kwargs: dict[str, Any] = dict(extra or {})
        if drop_path_rate > 0:
            kwargs["drop_path_rate"] = drop_path_rate
        if weights is not None:
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
        try:
            self.net = timm.create_model(name, num_classes=num_classes, **kwargs)
        except RuntimeError as err:  # timm's message for an unknown name
            raise ConfigError(f"model.arch: {str(err).splitlines()[0]}") from None
        except TypeError as err:  # an argument this model does not take
            raise ConfigError(
                f"model.arch {name!r}: {err} (check model.kwargs; model.drop_path must be 0 for models without it)"
            ) from None
        self.embed_dim: int = getattr(self.net, "head_hidden_size", None) or self.net.num_features

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 3, S, S] normalised -> (logits [N, C], embedding [N, D])."""
        embedding = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        return self.net.get_classifier()(embedding), embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_embedding(x)[0]


Net = FSFMViT | TimmNet


class Detector(nn.Module):
    """The network plus the optional attribution head (training only; never exported)."""

    def __init__(self, net: Net, attribution_classes: int = 0):
        super().__init__()
        self.net = net
        self.attribution = nn.Linear(net.embed_dim, attribution_classes) if attribution_classes else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """x [N, 3, S, S] -> (binary logits [N, 2], attribution logits [N, A] or None, embedding [N, D])."""
        logits, embedding = self.net.forward_with_embedding(x)
        return logits, (self.attribution(embedding) if self.attribution is not None else None), embedding


def _meta(net: Net, cfg: ModelSection, img_size: int, mean: tuple, std: tuple, trained: bool, path: str | None) -> ModelMeta:
    return ModelMeta(
        name=f"fsfm-vit-{cfg.arch}" if cfg.family == "fsfm" else f"timm-{cfg.arch}",
        arch=cfg.arch,
        img_size=img_size,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        fake_index=FAKE,
        class_names=CLASS_NAMES,
        threshold=None,
        digest=weights_digest(net),
        trained=trained,
        source="streamguard",
        path=path,
    )


def build_net(cfg: ModelSection, img_size: int) -> LoadedModel:
    """A fresh network for training: from `cfg.init` when given (FSFM pretraining checkpoints
    are what FSFM fine-tuning starts from), else from scratch."""
    if cfg.family == "timm":
        net = TimmNet(cfg.arch, 2, cfg.drop_path, cfg.init, cfg.kwargs)
        cfg_mean, cfg_std = net.net.pretrained_cfg.get("mean"), net.net.pretrained_cfg.get("std")
        return LoadedModel(net, _meta(net, cfg, img_size, cfg_mean, cfg_std, False, None))  # type: ignore[arg-type]
    net = build_fsfm_vit(cfg.arch, num_classes=len(CLASS_NAMES), img_size=img_size, drop_path_rate=cfg.drop_path)
    mean, std = VGGFACE2_MEAN, VGGFACE2_STD
    if cfg.init is not None:
        start = load_checkpoint(cfg.init, arch=cfg.arch, img_size=img_size)  # resizes pos_embed to img_size
        net.load_state_dict(start.model.state_dict())
        mean, std = start.meta.mean, start.meta.std
    return LoadedModel(net, _meta(net, cfg, img_size, mean, std, False, None))


def _streamguard_payload(path: Path) -> dict[str, Any] | None:
    """The checkpoint's dict when it is a streamguard one, else None (load_checkpoint then says what it is).

    mmap: only the small fields are read here; tensors are read where they are used.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError):
        return None
    return payload if isinstance(payload, dict) and payload.get("format") == FORMAT else None


def load_trained(path: Path | str) -> LoadedModel:
    """A checkpoint for eval/export: a streamguard one written by `fit` (any backbone) or an official FSFM one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    payload = _streamguard_payload(path)
    model_cfg = ((payload or {}).get("config") or {}).get("train", {}).get("model", {})
    if model_cfg.get("family") != "timm":  # an FSFM ViT: the runtime's loader
        return load_checkpoint(path, img_size=int(payload["img_size"]) if payload else 224)
    cfg = ModelSection.model_validate(model_cfg)
    net = TimmNet(cfg.arch, len(payload["class_names"]), extra=cfg.kwargs)
    try:
        net.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit timm model {cfg.arch!r}: {str(err).splitlines()[0]}") from None
    meta = _meta(net.eval(), cfg, int(payload["img_size"]), payload["mean"], payload["std"], bool(payload["trained"]), str(path))
    return LoadedModel(net, replace(meta, threshold=payload.get("threshold")))  # type: ignore[arg-type]


def training_config_of(path: Path | str) -> dict[str, Any]:
    """The "config" a streamguard checkpoint carries ({} for other checkpoints)."""
    return dict((_streamguard_payload(Path(path)) or {}).get("config") or {})


def param_groups(model: Detector, cfg: OptimConfig, lr: float) -> list[dict[str, Any]]:
    """AdamW groups with layer-wise lr decay (timm's BEiT/MAE rule, the one FSFM uses) and no
    weight decay on biases, norms and position/class tokens. Each group's "lr" is `lr` x its
    scale, so a schedule that multiplies every group's initial lr keeps the decay."""
    timm_model = model.net.net if isinstance(model.net, TimmNet) else model.net
    skip = getattr(timm_model, "no_weight_decay", lambda: set())()
    groups = param_groups_layer_decay(timm_model, cfg.weight_decay, skip, layer_decay=cfg.layer_decay)
    if model.attribution is not None:  # a new head: full lr, like the binary head
        groups += [
            {"params": [model.attribution.weight], "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
            {"params": [model.attribution.bias], "weight_decay": 0.0, "lr_scale": 1.0},
        ]
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return groups
