"""Export a model to ONNX under the engine contract, with a sidecar that names it.

The graph is `CropScorer` traced as is: uint8 crops [N, S, S, 3] RGB in (normalisation
baked in), `p_fake` float32 [N] and `embedding` float32 [N, D] out, batch axis dynamic.
So onnxruntime and TensorRT run exactly what the torch engine runs, and a caller needs
nothing but the file. What the graph cannot say (which weights, which normalisation,
which class is fake, the calibrated threshold, who exported it) goes in the sidecar
`PATH.json`, read back into a `ModelMeta` so events name the model and its digest
whichever backend scored.

The TorchScript-based exporter (`dynamo=False`) is used because it writes one
self-contained file (the dynamo exporter puts ViT-B's weights in a side `.onnx.data`
file); every FSFM variant here is far below protobuf's 2 GB limit.

Attention is traced through `SplitQKVAttention` (same numbers as timm's module): three
q, k, v MatMuls and `softmax(q @ k / sqrt(d)) @ v`, instead of timm's packed qkv
(5-D reshape, split) into scaled_dot_product_attention. onnxruntime fuses the scale into
the product and quantizes the shared input once, and the int8 engine runs 2-4% faster
on ViT-B (docs/benchmarks.md, "Model engines"); it is also the pattern onnxruntime's
and TensorRT's attention fusions know.
"""

from __future__ import annotations

import streamguard._torchvision_compat  # noqa: F401  (must precede timm: see its docstring)

import copy
import math
import os
import warnings
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from timm.layers import Attention
from torch import nn

import streamguard
from streamguard.errors import ConfigError
from streamguard.inference.contract import INPUT_NAME, OUTPUT_NAMES, engine_sidecar, sidecar_path, write_json_atomic
from streamguard.inference.torch_engine import CropScorer
from streamguard.model.checkpoint import LoadedModel

ATTENTION_LAYOUT = "split-qkv"  # how attention is traced (see SplitQKVAttention); engine caches key on it


class SplitQKVAttention(nn.Module):
    """timm's plain `Attention` with q, k, v as three Linear layers and explicit products, for export."""

    def __init__(self, attn: Attention):
        super().__init__()
        plain = all(isinstance(m, nn.Identity) for m in (attn.q_norm, attn.k_norm, attn.norm)) and attn.gate is None
        if not plain or attn.qkv.bias is None:
            raise ValueError("SplitQKVAttention takes timm Attention with qkv bias and no qk-norm, scale-norm or gate")
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        dim = attn.qkv.in_features
        self.q, self.k, self.v = (nn.Linear(dim, attn.attn_dim) for _ in range(3))
        with torch.no_grad():
            for linear, weight, bias in zip((self.q, self.k, self.v), attn.qkv.weight.chunk(3), attn.qkv.bias.chunk(3)):
                linear.weight.copy_(weight)
                linear.bias.copy_(bias)
        self.proj = attn.proj

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """x [B, N, D] -> [B, N, D]; the ViT never masks."""
        if attn_mask is not None or is_causal:
            raise ValueError("SplitQKVAttention does not mask")
        b, n, _ = x.shape
        heads = (b, n, self.num_heads, self.head_dim)
        q = self.q(x).reshape(heads).permute(0, 2, 1, 3)  # [B, H, N, d]
        k = self.k(x).reshape(heads).permute(0, 2, 3, 1)  # [B, H, d, N]
        v = self.v(x).reshape(heads).permute(0, 2, 1, 3)  # [B, H, N, d]
        attn = (torch.matmul(q, k) / math.sqrt(self.head_dim)).softmax(dim=-1)  # [B, H, N, N]
        return self.proj(torch.matmul(attn, v).permute(0, 2, 1, 3).reshape(b, n, -1))


def export_model(model: nn.Module) -> nn.Module:
    """A copy of `model` with every timm Attention replaced by SplitQKVAttention."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, Attention):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, SplitQKVAttention(module))
    return model


def exporter_versions(opset: int) -> dict[str, Any]:
    return {
        "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
        "opset": opset,
        "attention": ATTENTION_LAYOUT,
        # streamguard's own from the package: a checkout run from PYTHONPATH (benchmarks/gpu.sh) is not installed
        "streamguard": streamguard.__version__,
        **{pkg: version(pkg) for pkg in ("torch", "timm", "onnx")},
    }


def export_onnx(loaded: LoadedModel, out: Path, *, threshold: float | None = None, opset: int = 17) -> Path:
    """Write `out` (.onnx) under the engine contract and its sidecar `out`.json; return `out`.

    `threshold`, when given, is the calibrated decision threshold recorded in the
    sidecar (else the one stored with the weights, if any).
    """
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"{out}: an ONNX export must end in .onnx")
    meta = loaded.meta if threshold is None else replace(loaded.meta, threshold=float(threshold))
    scorer = CropScorer(export_model(loaded.model), meta).eval()
    example = torch.zeros((2, meta.img_size, meta.img_size, 3), dtype=torch.uint8)  # batch 2: nothing specialises on 1
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with warnings.catch_warnings():  # the deprecation notice for dynamo=False and timm's tracer warnings
        warnings.simplefilter("ignore")
        torch.onnx.export(
            scorer,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "N"}, "p_fake": {0: "N"}, "embedding": {0: "N"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    _declare_embedding_dim(tmp, loaded.model.embed_dim)
    # The sidecar goes first: a model file never exists without its sidecar.
    sidecar = engine_sidecar(meta, loaded.model.embed_dim, "fp32", exporter=exporter_versions(opset))
    write_json_atomic(sidecar_path(out), sidecar)
    os.replace(tmp, out)
    return out


def _declare_embedding_dim(path: Path, dim: int) -> None:
    """Write D into the graph's `embedding` output: the exporter's shape inference loses it
    after the LayerNorm of a dynamic-batch mean and declares a symbolic dim instead."""
    import onnx

    model = onnx.load(str(path))
    (embedding,) = (o for o in model.graph.output if o.name == "embedding")
    embedding.type.tensor_type.shape.dim[1].dim_value = dim  # replaces the symbolic name
    onnx.save(model, str(path))
