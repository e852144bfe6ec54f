"""Raw uint8 against JPEG for crops crossing nodes: bytes, milliseconds, and what the model sees.

For each JPEG quality: bytes per crop, encode and decode milliseconds per crop (the best
of a few rounds, one thread), and the model's outputs on the decoded crops against the
raw ones: max |delta P(fake)| and the embeddings' cosine.

The crops are the two sample faces' real crops (`face_crops`: jittered, scaled, mirrored).
Untrained weights give a P(fake) that barely moves between crops (its spread over the set
is reported as `p_fake_std`), so a small delta would prove nothing about a trained model.
Two more measures make the comparison mean something without trained weights:

- `spread_head`: a probe on the embedding that does vary with the input: P = sigmoid(2 z),
  z the embedding's projection on its first principal axis over the raw crops, standardised,
  so P spans about 0.05-0.95 over these faces; a JPEG that moves the embedding along the
  direction the crops differ most moves this P.
- the embedding cosine itself, which any head reads.

With real weights (`--checkpoint`) the model's own P(fake) is the figure that counts.
Caveat kept in the report: a detector trained on blending artefacts may lean on exactly the
high frequencies JPEG removes; measure with the deployed weights before relying on a quality.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from streamguard.cluster.crop_codec import decode_jpeg, encode_jpeg

QUALITIES = (50, 60, 70, 80, 85, 90, 95)
DELTA_P_BUDGET = 0.01  # the issue's bound on |delta P(fake)|


def _best_ms_per_crop(fn: Any, n: int, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) / n * 1000


def spread_head(reference: np.ndarray) -> Any:
    """embedding [N, D] -> P [N]: sigmoid(2 z) on the first principal axis of `reference` (see the docstring)."""
    mean = reference.mean(0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    axis = vt[0]
    scale = float(((reference - mean) @ axis).std()) or 1.0

    def head(embedding: np.ndarray) -> np.ndarray:
        z = (embedding - mean) @ axis / scale
        return 1.0 / (1.0 + np.exp(-2.0 * z))

    return head


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def transport_table(engine: Any, crops: np.ndarray, qualities: tuple[int, ...] = QUALITIES) -> dict[str, Any]:
    """Rows for raw and each JPEG quality on `crops` through `engine` (any `Engine`)."""
    n = len(crops)
    ref_p, ref_e = engine.infer(crops)
    head = spread_head(ref_e)
    ref_s = head(ref_e)
    rows: list[dict[str, Any]] = [{
        "transport": "raw", "quality": None, "bytes_per_crop": int(crops[0].nbytes), "encode_ms_per_crop": 0.0,
        "decode_ms_per_crop": 0.0, "p_fake_max_abs_diff": 0.0, "spread_p_max_abs_diff": 0.0,
        "embedding_mean_cosine": 1.0, "embedding_min_cosine": 1.0,
    }]
    for q in qualities:
        payload = encode_jpeg(crops, q)
        decoded = decode_jpeg(payload)
        p, e = engine.infer(decoded)
        cos = _cosine(e, ref_e)
        rows.append({
            "transport": "jpeg", "quality": q,
            "bytes_per_crop": round(payload.nbytes / n),
            "encode_ms_per_crop": round(_best_ms_per_crop(lambda q=q: encode_jpeg(crops, q), n), 3),
            "decode_ms_per_crop": round(_best_ms_per_crop(lambda p=payload: decode_jpeg(p), n), 3),
            "p_fake_max_abs_diff": float(np.abs(p - ref_p).max()),
            "spread_p_max_abs_diff": float(np.abs(head(e) - ref_s).max()),
            "embedding_mean_cosine": float(cos.mean()),
            "embedding_min_cosine": float(cos.min()),
        })
    within: list[int] = []  # the qualities from the highest down to the first outside the budget
    for r in sorted(rows[1:], key=lambda r: -r["quality"]):
        if r["p_fake_max_abs_diff"] > DELTA_P_BUDGET or r["spread_p_max_abs_diff"] > DELTA_P_BUDGET:
            break
        within.append(r["quality"])
    return {
        "crops": n,
        "crop_size": int(crops.shape[1]),
        "p_fake_std": float(ref_p.std()),
        "spread_p_range": [float(ref_s.min()), float(ref_s.max())],
        "delta_p_budget": DELTA_P_BUDGET,
        "lowest_quality_within_budget": min(within) if within else None,
        "rows": rows,
    }


def transport_text(result: dict[str, Any]) -> str:
    lines = [
        f"crop transport: {result['crops']} real face crops at {result['crop_size']} px; P(fake) std over them "
        f"{result['p_fake_std']:.4f}, spread-head P {result['spread_p_range'][0]:.2f}-{result['spread_p_range'][1]:.2f}",
        f"{'transport':<10} {'bytes/crop':>10} {'enc ms':>7} {'dec ms':>7} {'max|dP|':>8} {'spread|dP|':>10} {'cos mean':>9} {'cos min':>8}",
    ]
    for r in result["rows"]:
        name = "raw" if r["quality"] is None else f"jpeg q{r['quality']}"
        lines.append(
            f"{name:<10} {r['bytes_per_crop']:>10} {r['encode_ms_per_crop']:>7.3f} {r['decode_ms_per_crop']:>7.3f} "
            f"{r['p_fake_max_abs_diff']:>8.4f} {r['spread_p_max_abs_diff']:>10.4f} {r['embedding_mean_cosine']:>9.5f} "
            f"{r['embedding_min_cosine']:>8.5f}"
        )
    lines.append(f"lowest quality from which every higher one keeps both |dP| <= {result['delta_p_budget']}: {result['lowest_quality_within_budget']}")
    return "\n".join(lines)


def open_reference_engine(arch: str, checkpoint: Path | None, img_size: int, seed: int = 0) -> Any:
    """torch fp32 on the CPU: the reference engine (untrained seeded weights without a checkpoint)."""
    from streamguard.inference.torch_engine import TorchEngine
    from streamguard.model.checkpoint import load_checkpoint, untrained_model

    loaded = load_checkpoint(checkpoint, img_size=img_size) if checkpoint else untrained_model(arch, seed=seed, img_size=img_size)
    return TorchEngine(loaded, precision="fp32")


if __name__ == "__main__":  # a quick look: python -m lab.bench.crop_transport [arch]
    import sys

    from lab.bench.model import face_crops

    engine = open_reference_engine(sys.argv[1] if len(sys.argv) > 1 else "tiny", None, 224)
    print(transport_text(transport_table(engine, face_crops(64, 224))))
