"""`streamguard bench model`: engines side by side on the same face crops, against this machine's roofline.

Each engine's speed is put next to what the hardware does at its precision, measured
in the same run: the FLOP/s of a large matrix product (torch.mm for fp32/bf16/fp16,
onnxruntime's MatMulInteger for int8). roofline ratio = FLOPs per crop x crops per
second / that rate. Engines are timed round-robin, one call each per round, and the
median is reported, so load from other processes hits all of them alike; the load
average is recorded with the figures. Accuracy is measured on the same real face
crops against torch fp32 on the same device.

The int8 ceiling says what no int8 recipe can beat on this machine: torch fp32's time
per crop over the time the linear layers alone take at the measured int8 rate, with
attention, LayerNorm, GELU and quantization counted as free. If it is below a speed
goal, that goal needs faster int8 hardware (VNNI), not another recipe.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from streamguard.errors import ConfigError
from streamguard.inference.contract import Engine
from streamguard.model.checkpoint import LoadedModel
from streamguard.model.fsfm import ViTSpec

ACCURACY_CROPS = 32
MATMUL_SIDE = {"cpu": 2048, "cuda": 8192}


@dataclass(frozen=True)
class Candidate:
    backend: str  # torch | onnxruntime | tensorrt
    precision: str  # fp32 | bf16 | fp16 | int8
    device: str  # cpu | cuda
    cuda_graphs: bool = False

    @property
    def label(self) -> str:
        graphs = " +graphs" if self.cuda_graphs else ""
        return f"{self.backend} {self.precision} {self.device}{graphs}"


def default_candidate(device: str) -> Candidate:
    """What `--precision auto` runs for trained weights on `device` (streamguard.inference.registry)."""
    if device == "cuda":
        return Candidate("torch", "fp16", "cuda", cuda_graphs=True)
    return Candidate("onnxruntime", "int8", "cpu")


def candidates(device: str, backends: list[str] | None, precisions: list[str] | None, graphs: str, plan: Path | None) -> list[Candidate]:
    """Every valid (backend, precision) on `device`, narrowed by the lists given (None = the defaults)."""
    from streamguard.inference.torch_engine import cpu_has_native_bf16

    if device == "cpu":
        valid = [Candidate("torch", p, "cpu") for p in ("fp32", "bf16")]
        valid += [Candidate("onnxruntime", p, "cpu") for p in ("fp32", "int8")]
        default_precisions = ["fp32", "int8"] + (["bf16"] if cpu_has_native_bf16() else [])  # bf16 is ~8x slower without
    else:
        modes = {"on": [True], "off": [False], "both": [False, True]}[graphs]
        valid = [Candidate("torch", p, "cuda", g) for p in ("fp32", "fp16", "bf16") for g in modes]
        default_precisions = ["fp16", "bf16"]
    if plan is not None:
        from streamguard.inference.contract import read_sidecar

        valid.append(Candidate("tensorrt", read_sidecar(plan).precision, "cuda"))
        default_precisions.append(valid[-1].precision)
    chosen = [
        c for c in valid
        if (backends is None or c.backend in backends) and c.precision in (precisions or default_precisions)
    ]
    if not chosen:
        raise ConfigError(f"no engine to benchmark on {device} for backends {backends} and precisions {precisions}")
    return chosen


def flops_per_crop(spec: ViTSpec, img_size: int) -> float:
    """Multiply-adds x 2 of one forward: patch embedding, then per block qkv + proj + MLP (12 T D^2) and attention (2 T^2 D)."""
    patches = (img_size // spec.patch_size) ** 2
    tokens, dim = patches + 1, spec.embed_dim
    block = 12 * tokens * dim * dim + 2 * tokens * tokens * dim
    patch_embed = patches * dim * 3 * spec.patch_size**2
    return 2.0 * (spec.depth * block + patch_embed)


def linear_flops_per_crop(spec: ViTSpec, img_size: int) -> float:
    """Multiply-adds x 2 of the linear layers (qkv, proj, MLP: 12 T D^2 per block): what int8 quantization speeds up."""
    tokens = (img_size // spec.patch_size) ** 2 + 1
    return 2.0 * spec.depth * 12 * tokens * spec.embed_dim**2


def int8_ceiling(rows: list[dict[str, Any]], baseline: str, linear_flops: float, int8_rate: float) -> dict[str, float]:
    """batch -> the largest throughput ratio over `baseline` any int8 engine could reach: its linear
    layers at `int8_rate` FLOP/s and everything else free (see the module docstring)."""
    floor_s = linear_flops / int8_rate
    return {str(r["batch"]): round(r["ms_per_crop"] / 1000 / floor_s, 2) for r in rows if r["engine"] == baseline}


def face_crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n real face crops [n, size, size, 3] (the two sample faces, jittered in place, scale and mirror)."""
    from streamguard.faces.crops import crop_face
    from streamguard.samples import face_sources

    rng = np.random.default_rng(seed)
    sources = face_sources()
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        src = sources[i % len(sources)]
        side = src.side * rng.uniform(0.85, 1.15)
        cx, cy = np.array(src.centre) + rng.uniform(-0.1, 0.1, 2) * src.side
        crop = crop_face(src.image, np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]), size=size)
        out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


def _best_seconds(fn: Any, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_rate(device: str, precision: str, threads: int | None) -> float:
    """FLOP/s of an n x n x n matrix product at `precision` on `device` (n: 2048 CPU, 8192 CUDA)."""
    import torch

    n = MATMUL_SIDE[device]
    if precision == "int8":
        return 2.0 * n**3 / _best_seconds(_ort_int8_matmul(n, threads))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def run() -> None:
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()

    return 2.0 * n**3 / _best_seconds(run)


def _ort_int8_matmul(n: int, threads: int | None) -> Any:
    """uint8 x int8 -> int32 MatMulInteger in onnxruntime: the product dynamic int8 quantization runs."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "b")
    zero = numpy_helper.from_array(np.array(128, np.uint8), "a_zero")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b", "a_zero"], ["y"])],
        "int8_matmul",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
        initializer=[weight, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    return lambda: session.run(None, {"a": a})


def open_candidate(c: Candidate, loaded: LoadedModel, onnx_dir: Path, plan: Path | None, threads: int | None) -> Engine:
    if c.backend == "torch":
        from streamguard.inference.torch_engine import TorchEngine

        return TorchEngine(loaded, c.precision, threads=threads, device=c.device, cuda_graphs=c.cuda_graphs)
    if c.backend == "onnxruntime":
        from streamguard.inference.export import export_onnx
        from streamguard.inference.onnx_engine import OnnxEngine
        from streamguard.inference.quantize import quantize_onnx

        fp32 = onnx_dir / "fp32.onnx"
        if not fp32.is_file():
            export_onnx(loaded, fp32)
        path = fp32 if c.precision == "fp32" else quantize_onnx(fp32, onnx_dir / "int8.onnx")
        return OnnxEngine(path, threads=threads, parallel_calls=1)  # per-call speed; calls at once: bench pipeline
    from streamguard.inference.tensorrt_engine import TensorRTEngine

    assert plan is not None
    return TensorRTEngine(plan)


def accuracy(engine: Engine, reference: tuple[np.ndarray, np.ndarray], crops: np.ndarray) -> dict[str, float]:
    p_fake, embedding = engine.infer(crops)
    ref_p, ref_e = reference
    cosine = (embedding * ref_e).sum(1) / np.linalg.norm(embedding, axis=1) / np.linalg.norm(ref_e, axis=1)
    return {"p_fake_max_abs_diff": float(np.abs(p_fake - ref_p).max()), "embedding_min_cosine": float(cosine.min())}


def machine(device: str) -> dict[str, Any]:
    from importlib.metadata import version

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1m_before": os.getloadavg()[0],
        "versions": {pkg: version(pkg) for pkg in ("torch", "onnxruntime", "timm")},
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


@dataclass(frozen=True)
class BenchOptions:
    arch: str = "base"
    device: str = "cpu"
    batches: tuple[int, ...] = (1, 8, 32)
    repeats: int = 3
    backends: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    cuda_graphs: str = "both"  # on | off | both
    threads: int | None = None
    img_size: int = 224
    checkpoint: Path | None = None
    plan: Path | None = None
    analysis_fps: float = 5.0  # for the streams-served estimate (the config's default)


def time_round_robin(engines: dict[Candidate, Engine], crops: np.ndarray, batches: tuple[int, ...], repeats: int) -> dict[tuple[Candidate, int], list[float]]:
    """Seconds per call of each engine at each batch size: one warm-up call each (on CUDA
    graphs it captures the bucket), then `repeats` rounds of one call per engine."""
    seconds: dict[tuple[Candidate, int], list[float]] = {}
    with tqdm(total=len(batches) * repeats * len(engines), desc="bench model", unit="call", leave=False) as progress:
        for batch in batches:
            x = crops[:batch]
            for engine in engines.values():
                engine.infer(x)
            for _ in range(repeats):
                for c, engine in engines.items():
                    t0 = time.perf_counter()
                    engine.infer(x)
                    seconds.setdefault((c, batch), []).append(time.perf_counter() - t0)
                    progress.update()
    return seconds


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    """Time every candidate at every batch size; return the result that `bench model` prints and saves."""
    from streamguard.inference.torch_engine import TorchEngine
    from streamguard.model.checkpoint import load_checkpoint, untrained_model

    if opts.threads is not None:
        import torch

        torch.set_num_threads(opts.threads)
    chosen = candidates(opts.device, list(opts.backends) if opts.backends else None,
                        list(opts.precisions) if opts.precisions else None, opts.cuda_graphs, opts.plan)
    info = machine(opts.device)
    loaded = load_checkpoint(opts.checkpoint, arch=opts.arch, img_size=opts.img_size) if opts.checkpoint \
        else untrained_model(opts.arch, seed=0, img_size=opts.img_size)
    crops = face_crops(max(max(opts.batches), ACCURACY_CROPS), opts.img_size)
    reference = TorchEngine(loaded, "fp32", device=opts.device).infer(crops[:ACCURACY_CROPS])
    rates = {p: matmul_rate(opts.device, p, opts.threads) for p in sorted({c.precision for c in chosen})}
    with tempfile.TemporaryDirectory(prefix="streamguard-bench-") as onnx_dir:
        engines = {c: open_candidate(c, loaded, Path(onnx_dir), opts.plan, opts.threads) for c in chosen}
        quality = {c: accuracy(e, reference, crops[:ACCURACY_CROPS]) for c, e in engines.items()}
        seconds = time_round_robin(engines, crops, opts.batches, opts.repeats)
        for engine in engines.values():
            engine.close()
    # Measured again after the engines, keeping the faster: the least disturbed by other load.
    rates = {p: max(rate, matmul_rate(opts.device, p, opts.threads)) for p, rate in rates.items()}
    flops = flops_per_crop(loaded.model.spec, opts.img_size)
    rows = []
    for (c, batch), times in seconds.items():
        per_crop = statistics.median(times) / batch
        rows.append({
            "engine": c.label, **asdict(c), "batch": batch,
            "ms_per_crop": round(per_crop * 1000, 3),
            "crops_per_s": round(1 / per_crop, 2),
            "best_ms_per_crop": round(min(times) / batch * 1000, 3),  # the fastest call: least disturbed by other load
            "roofline_ratio": round(flops / per_crop / rates[c.precision], 4),
            **{k: round(v, 6) for k, v in quality[c].items()},
        })
    info["loadavg_1m_after"] = os.getloadavg()[0]
    default, baseline = default_candidate(opts.device).label, f"torch fp32 {opts.device}"
    return {
        "bench": "model",
        "arch": opts.arch,
        "img_size": opts.img_size,
        "device": opts.device,
        "weights": loaded.meta.source,
        "gflops_per_crop": round(flops / 1e9, 3),
        "matmul_gflops": {p: round(r / 1e9, 1) for p, r in rates.items()},
        "machine": info,
        "default_engine": default,
        "speedup_vs_torch_fp32": speedups(rows, default, baseline),
        "speedup_vs_torch_fp32_best_calls": speedups(rows, default, baseline, key="best_ms_per_crop"),
        "streams_served": {"analysis_fps": opts.analysis_fps, "faces_per_stream": 1,
                           "by_engine": streams_served(rows, opts.analysis_fps)},
        "int8_ceiling_vs_torch_fp32": int8_ceiling(rows, baseline, linear_flops_per_crop(loaded.model.spec, opts.img_size),
                                                   rates["int8"]) if "int8" in rates else {},
        "results": rows,
    }


def speedups(rows: list[dict[str, Any]], engine: str, baseline: str, key: str = "ms_per_crop") -> dict[str, float]:
    """batch -> throughput of `engine` over `baseline` (from `key`, ms per crop), and 'best' (each at its
    best batch); empty if one of them is missing."""
    rate = {(r["engine"], r["batch"]): 1000 / r[key] for r in rows}
    batches = sorted({b for (e, b) in rate if e == engine} & {b for (e, b) in rate if e == baseline})
    if not batches:
        return {}
    out = {str(b): round(rate[engine, b] / rate[baseline, b], 2) for b in batches}
    best = max(rate[engine, b] for b in batches) / max(rate[baseline, b] for b in batches)
    return out | {"best": round(best, 2)}


def streams_served(rows: list[dict[str, Any]], fps: float, faces: int = 1) -> dict[str, dict[str, float]]:
    """engine -> its best batch, that batch's crops/s and how many streams of `faces` faces
    analysed at `fps` that rate keeps up with: the model's side of a host's capacity (the
    CPU side, decoding and detection per stream, is `bench pipeline`'s front-end table)."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        best = out.get(r["engine"])
        if best is None or r["crops_per_s"] > best["crops_per_s"]:
            out[r["engine"]] = {"batch": r["batch"], "crops_per_s": r["crops_per_s"],
                                "streams": math.floor(r["crops_per_s"] / (fps * faces))}
    return out


def table(result: dict[str, Any]) -> str:
    head = f"{'engine':<28} {'batch':>5} {'ms/crop':>9} {'crops/s':>9} {'best ms':>9} {'roofline':>9} {'|dp| max':>9} {'cos min':>8}"
    lines = [
        f"FSFM {result['arch']} ({result['gflops_per_crop']} GFLOP/crop) on {result['machine'].get('gpu') or result['machine']['cpu']}; "
        f"matmul GFLOP/s: {result['matmul_gflops']}; load {result['machine']['loadavg_1m_before']:.1f}",
        head,
        "-" * len(head),
    ]
    for r in result["results"]:
        lines.append(
            f"{r['engine']:<28} {r['batch']:>5} {r['ms_per_crop']:>9.2f} {r['crops_per_s']:>9.1f} {r['best_ms_per_crop']:>9.2f} "
            f"{r['roofline_ratio']:>9.1%} {r['p_fake_max_abs_diff']:>9.4f} {r['embedding_min_cosine']:>8.4f}"
        )
    if result["speedup_vs_torch_fp32"]:
        lines.append(
            f"default engine ({result['default_engine']}) vs torch fp32, throughput ratio by batch: "
            f"{result['speedup_vs_torch_fp32']} (median calls), {result['speedup_vs_torch_fp32_best_calls']} (best calls)"
        )
    served = result["streams_served"]
    lines.append(
        f"one-face streams at {served['analysis_fps']:g} analysed fps that the model keeps up with (best batch): "
        + ", ".join(f"{e} {s['streams']} (batch {s['batch']})" for e, s in served["by_engine"].items())
    )
    if result["int8_ceiling_vs_torch_fp32"]:
        lines.append(
            "int8 ceiling vs torch fp32 (linear layers at the int8 matmul rate, all else free): "
            f"{result['int8_ceiling_vs_torch_fp32']}"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in dict.fromkeys(r["engine"] for r in result["results"]):
        rows = [r for r in result["results"] if r["engine"] == label]
        ax.plot([r["batch"] for r in rows], [r["crops_per_s"] for r in rows], marker="o", label=label)
    ax.set_xscale("log", base=2)
    batches = sorted({r["batch"] for r in result["results"]})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("crops per second")
    ax.set_title(f"FSFM {result['arch']} on {result['machine'].get('gpu') or result['machine']['cpu']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
