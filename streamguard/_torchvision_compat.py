"""Make `import torchvision` (and so `import timm`) work beside the CPU torch build.

The only torchvision 0.28.0 wheel on the registry is built for CUDA. Beside the CPU
torch its compiled ops library cannot load, and its meta registrations then fail
with `RuntimeError: operator torchvision::nms does not exist`. When, and only when,
that happens, define the `torchvision::nms` schema with a pure-torch CPU kernel so
the import succeeds (0.28 also registers `qnms`, the quantized variant; it gets the
same kernel so the schema exists, though nothing here calls it). Where the compiled ops load (CUDA machines) this does nothing.
Import this module before torchvision or timm; `streamguard.model` does.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_library: torch.library.Library | None = None  # kept alive: dropping it unregisters the op


def _compiled_ops_load() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # no torchvision: nothing to fix
    for lib in Path(spec.origin).parent.glob("_C.*"):
        try:
            torch.ops.load_library(str(lib))
            return True
        except (OSError, RuntimeError):
            return False
    return False


def _nms_cpu(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; indices of kept boxes, highest score first."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    x0, y0, x1, y1 = boxes.unbind(1)
    areas = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x1[i], x1) - torch.maximum(x0[i], x0)).clamp(min=0)
        h = (torch.minimum(y1[i], y1) - torch.maximum(y0[i], y0)).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def install() -> bool:
    """Register the fallback op if needed; True when the fallback is in use."""
    global _library
    if _library is not None:
        return True
    if hasattr(torch.ops, "torchvision") and hasattr(torch.ops.torchvision, "nms"):
        return False
    if _compiled_ops_load():
        return False
    _library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        _library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _library.impl(op, _nms_cpu, "CPU")
    return True


FALLBACK_IN_USE = install()
