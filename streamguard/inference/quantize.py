"""int8 ONNX engines: onnxruntime dynamic quantization, and the cache behind the CPU default.

Dynamic quantization stores the weights of every MatMul with a constant weight (all
Linear layers: qkv, proj, MLP; ~98% of a ViT's FLOPs) as int8 and quantizes their
activations per batch at run time, so no calibration data is needed. Attention's own
activation-by-activation products, the patch convolution and the head stay fp32.
Weights use 7 bits (`reduce_range`): x86 CPUs without VNNI (ours: AVX2) multiply
uint8 x int8 with VPMADDUBSW, whose int16 pair sums saturate with 8-bit weights; on
face crops through random ViT-B weights that cut the largest P(fake) error from
0.011 to 0.007 (ViT-Ti: 0.016 to 0.004) at the same speed (docs/benchmarks.md).

This recipe stayed after every alternative was measured side by side on ViT-B
(docs/benchmarks.md, "Model engines"): onnxruntime's transformer optimizer (SkipLayerNorm,
BiasGelu, and QAttention once the export's attention matched its pattern) was 2-5%
slower, static QDQ/QOperator quantization calibrated on face crops 4-10% slower and
less exact, MatMulNBits (8/4-bit) 1.9-2.7x slower, session options within 1-2%. The
only gain was the export's split-qkv attention (2-4%; export.py). 2.5x over torch fp32
is out of reach on AVX2 without VNNI: the linear layers alone, at the measured int8
matrix-product rate, take ~90 ms per ViT-B crop against torch's ~210 (a 2.3-2.4x
ceiling with everything else free), and they already are ~78% of this engine's time.

`cached_int8` is what `--precision auto` runs on a CPU: the checkpoint is exported and
quantized once, into a file named after everything the graph bakes in (weights
digest, normalisation, class order, input size, this recipe), and reused after that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

from streamguard.errors import CheckpointError, ConfigError
from streamguard.inference.contract import read_sidecar, sidecar_path, write_json_atomic
from streamguard.inference.export import ATTENTION_LAYOUT, export_onnx
from streamguard.model.checkpoint import LoadedModel

log = logging.getLogger(__name__)

# Part of every cached file's key: change it when the recipe below changes.
RECIPE = {
    "method": "onnxruntime.quantize_dynamic",
    "op_types": ["MatMul"],
    "weight_type": "QInt8",
    "reduce_range": True,
    "attention": ATTENTION_LAYOUT,  # the fp32 graph it starts from
}


def quantize_onnx(src: Path, out: Path) -> Path:
    """Write `out` (.onnx), the int8 version of the fp32 engine `src`, and its sidecar; return `out`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, out = Path(src), Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"{out}: a quantized engine must end in .onnx")
    if not src.is_file():
        raise CheckpointError(f"engine not found: {src}")
    sidecar = read_sidecar(src)
    if sidecar.precision != "fp32":
        raise CheckpointError(f"{src}: is already {sidecar.precision}; quantize an fp32 export")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.onnx")
    # quantize_dynamic prints advice through the root logger (`logging.warning`); named loggers still propagate.
    logging.getLogger().disabled = True
    try:
        quantize_dynamic(
            src,
            tmp,
            op_types_to_quantize=RECIPE["op_types"],
            weight_type=QuantType.QInt8,
            reduce_range=RECIPE["reduce_range"],
        )
    finally:
        logging.getLogger().disabled = False
    # An fp32 file from before ATTENTION_LAYOUT existed traced timm's packed qkv: say so.
    attention = sidecar.data.get("exporter", {}).get("attention", "packed-qkv")
    data = dict(sidecar.data, precision="int8",
                quantization={**RECIPE, "attention": attention, "onnxruntime": version("onnxruntime")})
    write_json_atomic(sidecar_path(out), data)
    os.replace(tmp, out)
    return out


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamguard" / "engines"


def int8_cache_path(loaded: LoadedModel, cache_dir: Path) -> Path:
    """cache_dir / NAME-DIGEST-KEY-int8.onnx, KEY covering everything the graph and sidecar hold."""
    meta = loaded.meta.to_dict()
    meta.pop("path")  # the same weights from another path make the same engine
    key = hashlib.sha256(json.dumps([meta, RECIPE], sort_keys=True).encode()).hexdigest()[:8]
    return cache_dir / f"{loaded.meta.name}-{loaded.meta.digest}-{key}-int8.onnx"


def cached_int8(loaded: LoadedModel, cache_dir: Path | None = None) -> Path:
    """The int8 engine of `loaded`, built on first use (export + quantize) and reused after."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = int8_cache_path(loaded, cache_dir)
    if path.is_file() and sidecar_path(path).is_file():
        return path
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".build-"))
    except OSError as err:
        raise CheckpointError(
            f"{cache_dir}: cannot write the engine cache ({err.strerror or err}); "
            "set model.engine_cache, or run torch with --precision fp32"
        ) from None
    log.info("building the int8 onnxruntime engine for %s (digest %s), once: %s", loaded.meta.name, loaded.meta.digest, path)
    try:
        fp32 = export_onnx(loaded, work / "fp32.onnx")
        built = quantize_onnx(fp32, work / path.name)
        # Into place whole, the engine first and its sidecar last (a reader wants both): several
        # processes starting at once (`run --processes`) may each build it, and none reads half of one.
        os.replace(built, path)
        os.replace(sidecar_path(built), sidecar_path(path))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path
