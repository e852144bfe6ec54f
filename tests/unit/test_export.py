"""The ONNX export keeps the engine contract, and every backend available on this
machine computes what torch fp32 computes on the same real face crops.

Tolerances (asserted below): fp32 paths 1e-4 on P(fake); onnxruntime int8 0.03 on
P(fake) and embedding cosine >= 0.995 (measured here: 0.004 and 0.9995 for this
tiny model; 0.007 for ViT-B, docs/benchmarks.md); torch CUDA fp16/bf16 0.02 and 0.99.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import threading

import numpy as np
import onnx
import pytest
import torch

from streamguard.errors import ConfigError
from lab.bench.model import face_crops
from streamguard.inference.contract import read_sidecar, sidecar_path
from streamguard.inference.export import export_onnx
from streamguard.inference.onnx_engine import OnnxEngine
from streamguard.inference.quantize import quantize_onnx
from streamguard.inference.torch_engine import CUDA_GRAPH_BUCKETS, TorchEngine, graph_bucket
from streamguard.model import untrained_model

SIZE = 224  # the contract's crop size
no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here (torch.cuda.is_available() is False)")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def loaded():
    return untrained_model("tiny", seed=3, img_size=SIZE)


@pytest.fixture(scope="module")
def exported(loaded, tmp_path_factory):
    return export_onnx(loaded, tmp_path_factory.mktemp("onnx") / "tiny.onnx", threshold=0.62)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return face_crops(12, SIZE)


@pytest.fixture(scope="module")
def reference(loaded, crops):
    return TorchEngine(loaded).infer(crops)


def test_graph_keeps_the_engine_contract(exported):
    model = onnx.load(str(exported))
    onnx.checker.check_model(model)
    (x,) = model.graph.input
    dims = x.type.tensor_type.shape.dim
    assert x.name == "crops" and x.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [SIZE, SIZE, 3]  # dynamic N, then 224, 224, 3
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert set(outputs) == {"p_fake", "embedding"}
    assert all(t.elem_type == onnx.TensorProto.FLOAT for t in outputs.values())
    assert [bool(d.dim_param) for d in outputs["p_fake"].shape.dim] == [True]
    assert outputs["embedding"].shape.dim[1].dim_value == 192
    assert sorted(p.name for p in exported.parent.iterdir()) == ["tiny.json", "tiny.onnx"]  # one self-contained file


def test_sidecar_names_the_model(exported, loaded):
    data = json.loads(sidecar_path(exported).read_text())
    model = data["model"]
    assert model["arch"] == "tiny" and model["name"] == "fsfm-vit-tiny" and model["img_size"] == SIZE
    assert model["mean"] == list(loaded.meta.mean) and model["std"] == list(loaded.meta.std)
    assert model["class_names"] == ["fake", "real"] and model["fake_index"] == 0
    assert model["digest"] == loaded.meta.digest and model["threshold"] == 0.62 and model["trained"] is False
    assert data["precision"] == "fp32" and data["input"]["shape"] == ["N", SIZE, SIZE, 3]
    assert data["exporter"]["opset"] == 17 and {"torch", "onnx", "timm", "streamguard"} <= set(data["exporter"])
    assert data["exporter"]["attention"] == "split-qkv"
    sidecar = read_sidecar(exported)
    assert sidecar.meta.path == str(exported) and sidecar.embed_dim == 192


def test_onnxruntime_fp32_matches_torch(exported, loaded, crops, reference):
    engine = OnnxEngine(exported)
    assert engine.meta.digest == loaded.meta.digest and engine.meta.threshold == 0.62
    for n in (1, 5, 12):  # the batch axis is dynamic
        p_fake, embedding = engine.infer(crops[:n])
        assert p_fake.dtype == np.float32 and embedding.shape == (n, 192)
        np.testing.assert_allclose(p_fake, reference[0][:n], atol=1e-4)
        np.testing.assert_allclose(embedding, reference[1][:n], atol=1e-4)
    assert engine.infer(crops[:0])[1].shape == (0, 192)


def test_onnxruntime_int8_is_close_to_fp32(exported, loaded, crops, reference, tmp_path):
    path = quantize_onnx(exported, tmp_path / "tiny.int8.onnx")
    engine = OnnxEngine(path)
    quantization = read_sidecar(path).data["quantization"]
    assert engine.precision == "int8" and quantization["reduce_range"] is True and quantization["attention"] == "split-qkv"
    assert path.stat().st_size < exported.stat().st_size / 2  # the weights really are int8
    ops = collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    depth = loaded.model.spec.depth
    assert ops["MatMulInteger"] == 6 * depth + 1  # q, k, v, proj, fc1, fc2 of every block (split-qkv export), and the head
    assert ops["MatMul"] == 2 * depth  # attention's activation products stay fp32
    p_fake, embedding = engine.infer(crops)
    assert np.abs(p_fake - reference[0]).max() < 0.03
    assert cosine(embedding, reference[1]).min() > 0.995
    assert engine.meta == dataclasses.replace(read_sidecar(exported).meta, path=str(path))  # same model, same digest


def test_export_refuses_another_suffix(loaded, tmp_path):
    with pytest.raises(ConfigError, match=r"model\.onx: an ONNX export must end in \.onnx"):
        export_onnx(loaded, tmp_path / "model.onx")


def test_graph_buckets():
    assert [graph_bucket(n) for n in (1, 2, 3, 16, 17, 256)] == [1, 2, 4, 16, 32, 256]
    assert CUDA_GRAPH_BUCKETS[-1] == 256


@no_cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("graphs", [False, True])
def test_torch_cuda_is_close_to_fp32(loaded, crops, reference, precision, graphs):
    engine = TorchEngine(loaded, precision, device="cuda", cuda_graphs=graphs)
    for n in (3, 12, 3):  # a second call of a captured bucket replays it with other rows
        p_fake, embedding = engine.infer(crops[:n])
        assert np.abs(p_fake - reference[0][:n]).max() < 0.02
        assert cosine(embedding, reference[1][:n]).min() > 0.99
    assert next(loaded.model.parameters()).device.type == "cpu"  # the caller's model is untouched


@no_cuda
def test_prepared_cuda_graphs_replay_while_other_threads_use_the_gpu(loaded, crops, reference):
    """A GPU host's decoding threads (NVDEC) keep calling CUDA while the engine runs. A graph
    captured beside them was invalidated by their calls and its batch failed (runs 9 and 10 on
    the H200), so `prepare` captures every bucket up to max_batch before streams start, and
    the engine only replays them while the other thread works."""
    engine = TorchEngine(loaded, "fp16", device="cuda", cuda_graphs=True)
    engine.prepare(12)
    assert engine._graphs is not None and sorted(engine._graphs) == [1, 2, 4, 8, 16]
    stop, working, errors = threading.Event(), threading.Event(), []

    def decoder_like() -> None:  # copies on the legacy default stream, a device-wide wait, as FFmpeg's do
        try:
            host = torch.zeros(1 << 20, dtype=torch.uint8).pin_memory()
            while not stop.is_set():
                device = host.to("cuda", non_blocking=True)
                torch.cuda.synchronize()
                host.copy_(device)
                working.set()
        except Exception as error:  # noqa: BLE001 - the test reports it
            errors.append(error)
            working.set()

    thread = threading.Thread(target=decoder_like)
    thread.start()
    try:
        assert working.wait(30)
        results = {n: engine.infer(crops[:n]) for n in (3, 12)}  # buckets 4 and 16, replayed
    finally:
        stop.set()
        thread.join(30)
    assert not errors and sorted(engine._graphs) == [1, 2, 4, 8, 16]  # nothing captured meanwhile
    for n, (p_fake, _) in results.items():
        assert np.abs(p_fake - reference[0][:n]).max() < 0.02


@no_cuda
@pytest.mark.parametrize("graphs", [False, True])
def test_the_cuda_engine_does_not_queue_behind_the_legacy_default_stream(loaded, crops, reference, graphs):
    """NVDEC (ingest.hwaccel) copies its pictures on the context's legacy default stream; the
    engine's work runs on a non-blocking stream of its own, so neither waits for the other."""
    engine = TorchEngine(loaded, "fp16", device="cuda", cuda_graphs=graphs)
    engine.infer(crops[:4])  # warm-up: allocations and graph capture happen before the check
    torch.cuda.synchronize()
    legacy = torch.cuda.default_stream()
    with torch.cuda.stream(legacy):
        torch.cuda._sleep(4_000_000_000)  # keeps the legacy stream busy for about 2 s (GPU clock cycles)
    p_fake, _ = engine.infer(crops[:4])
    busy = not legacy.query()  # the engine's call came back while the legacy stream still worked
    torch.cuda.synchronize()
    assert busy
    assert np.abs(p_fake - reference[0][:4]).max() < 0.02
