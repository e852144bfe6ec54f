"""`export`: a trained checkpoint -> the runtime's engine folder.

The folder holds `model.onnx` with its sidecar `model.json`, written by the very
function behind `streamguard export-onnx` (uint8 NHWC crops in, normalisation
baked in, `p_fake` and `embedding` out, the calibrated threshold in the sidecar), so
the engine contract holds for any backbone `fit` trains, FSFM ViT or timm CNN. Where
TensorRT and a CUDA GPU exist, `model.plan` is built from it too (TensorRT cannot be
installed on our machines: there that step is skipped and says so).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from streamguard.errors import CheckpointError
from streamguard.inference.export import export_onnx
from training.model import load_trained

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    onnx: Path
    plan: Path | None
    plan_skipped: str | None  # why no plan was built


def export_engine(checkpoint: Path, out_dir: Path, tensorrt: bool = True) -> ExportResult:
    loaded = load_trained(checkpoint)
    if not loaded.meta.trained:
        log.warning("%s: untrained weights; the exported engine's scores mean nothing", checkpoint)
    onnx = export_onnx(loaded, Path(out_dir) / "model.onnx")
    if not tensorrt:
        return ExportResult(onnx, None, "not asked for")
    from streamguard.inference.tensorrt_engine import BuildOptions, build_engine, require_cuda, require_tensorrt

    try:
        require_tensorrt(onnx)
        require_cuda(onnx)
    except CheckpointError as err:  # no tensorrt package or no CUDA GPU here: the ONNX engine is the export
        return ExportResult(onnx, None, str(err))
    return ExportResult(onnx, build_engine(onnx, Path(out_dir) / "model.plan", BuildOptions()), None)
