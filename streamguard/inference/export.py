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
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from streamguard.errors import CheckpointError, ConfigError
from streamguard.inference.torch_engine import CropScorer
from streamguard.model.checkpoint import LoadedModel, ModelMeta

SIDECAR_FORMAT = "streamguard.engine.v1"
INPUT_NAME = "crops"
OUTPUT_NAMES = ("p_fake", "embedding")


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


def exporter_versions(opset: int) -> dict[str, Any]:
    return {
        "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
        "opset": opset,
        **{pkg: version(pkg) for pkg in ("streamguard", "torch", "timm", "onnx")},
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
    scorer = CropScorer(loaded.model, meta).eval()
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
