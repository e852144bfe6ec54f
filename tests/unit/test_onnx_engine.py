"""Choosing and opening engines: the onnxruntime backend, the int8 cache behind
`--precision auto`, and one clear error for every bad engine file, before any stream."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from streamguard.cli import main
from streamguard.config import ModelConfig
from streamguard.errors import CheckpointError, ConfigError
from streamguard.inference import open_engine
from streamguard.inference.contract import sidecar_path
from streamguard.inference.export import export_onnx
from streamguard.inference.onnx_engine import OnnxEngine, threads_per_call
from streamguard.inference.torch_engine import TorchEngine
from streamguard.model import save_checkpoint, untrained_model

SIZE = 64  # small crops keep the tiny ViT fast


@pytest.fixture(scope="module")
def untrained():
    return untrained_model("tiny", seed=5, img_size=SIZE)


@pytest.fixture(scope="module")
def exported(untrained, tmp_path_factory):
    return export_onnx(untrained, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def trained_checkpoint(untrained, tmp_path_factory):
    """Weights that say they are trained: what `--precision auto` turns into int8."""
    loaded = dataclasses.replace(untrained, meta=dataclasses.replace(untrained.meta, trained=True))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "trained.pth", loaded)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(6, SIZE, SIZE, 3), dtype=np.uint8)


def write_onnx(path, inputs, outputs):
    """A small ONNX graph of Identity nodes with the given inputs and outputs."""
    nodes = [helper.make_node("Identity", [inputs[0].name], [o.name]) for o in outputs]
    graph = helper.make_graph(nodes, "other", inputs, outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_engine_file_runs_as_is(exported, untrained, crops):
    engine = open_engine(ModelConfig(engine=exported), img_size=SIZE)
    assert isinstance(engine, OnnxEngine) and engine.precision == "fp32"
    assert engine.meta.digest == untrained.meta.digest and engine.meta.path == str(exported)
    np.testing.assert_allclose(engine.infer(crops)[0], TorchEngine(untrained).infer(crops)[0], atol=1e-4)
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.infer(crops)


def test_calls_at_once_share_the_cores_unless_threads_are_given():
    assert threads_per_call(None, 1, cores=8) == 0  # onnxruntime's default: one per physical core
    assert threads_per_call(None, 3, cores=8) == 2
    assert threads_per_call(None, 16, cores=8) == 1
    assert threads_per_call(4, 2, cores=8) == 4


def test_calls_at_once_share_one_session_and_get_their_own_rows(exported, crops):
    engine = open_engine(ModelConfig(engine=exported, parallel_calls=2), img_size=SIZE)
    assert (engine.concurrency, engine.threads) == (2, max(1, len(os.sched_getaffinity(0)) // 2))
    alone = [engine.infer(crops[i : i + 2]) for i in range(0, 6, 2)]
    with ThreadPoolExecutor(3) as pool:  # three calls at once, as the batcher's workers make them
        together = list(pool.map(engine.infer, [crops[i : i + 2] for i in range(0, 6, 2)] * 4))
    for i, (p_fake, embedding) in enumerate(together):
        np.testing.assert_allclose(p_fake, alone[i % 3][0], atol=1e-6)
        np.testing.assert_allclose(embedding, alone[i % 3][1], atol=1e-6)


def test_parallel_calls_is_refused_where_calls_run_one_at_a_time(trained_checkpoint):
    with pytest.raises(ConfigError, match="model.parallel_calls is for onnxruntime engines; torch fp32 runs one call"):
        open_engine(ModelConfig(engine=trained_checkpoint, parallel_calls=2), img_size=SIZE)
    assert open_engine(ModelConfig(engine=trained_checkpoint, parallel_calls=1), img_size=SIZE).concurrency == 1


def test_auto_runs_trained_weights_as_cached_int8(trained_checkpoint, tmp_path, crops):
    cfg = ModelConfig(checkpoint=trained_checkpoint, engine_cache=tmp_path / "cache")
    engine = open_engine(cfg, img_size=SIZE)
    assert isinstance(engine, OnnxEngine) and engine.precision == "int8"
    assert engine.meta.source == "streamguard" and engine.meta.trained
    (cached,) = (tmp_path / "cache").glob("*.onnx")
    assert cached.name.startswith(f"fsfm-vit-tiny-{engine.meta.digest}-") and sidecar_path(cached).is_file()
    assert not list((tmp_path / "cache").glob(".build-*"))  # the work folder is gone
    built = cached.stat().st_mtime_ns
    again = open_engine(cfg, img_size=SIZE)  # reused, not rebuilt
    assert cached.stat().st_mtime_ns == built and again.meta == engine.meta
    torch_fp32 = open_engine(cfg.model_copy(update={"precision": "fp32"}), img_size=SIZE)
    assert isinstance(torch_fp32, TorchEngine)
    assert np.abs(engine.infer(crops)[0] - torch_fp32.infer(crops)[0]).max() < 0.03


def test_auto_keeps_torch_for_untrained_weights_and_engine_files(trained_checkpoint, tmp_path):
    assert isinstance(open_engine(ModelConfig(arch="tiny"), img_size=SIZE), TorchEngine)
    as_is = open_engine(ModelConfig(engine=trained_checkpoint), img_size=SIZE)
    assert isinstance(as_is, TorchEngine) and as_is.precision == "fp32"
    with pytest.raises(ConfigError, match="precision int8 runs on onnxruntime"):
        open_engine(ModelConfig(engine=trained_checkpoint, precision="int8"), img_size=SIZE)
    explicit = open_engine(ModelConfig(arch="tiny", precision="int8", engine_cache=tmp_path), img_size=SIZE)
    assert isinstance(explicit, OnnxEngine) and not explicit.meta.trained


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without CUDA")
def test_cuda_settings_without_a_gpu():
    with pytest.raises(ConfigError, match="precision fp16 needs CUDA"):
        open_engine(ModelConfig(arch="tiny", precision="fp16"), img_size=SIZE)
    with pytest.raises(ConfigError, match="model.device is cuda, but torch sees no CUDA GPU"):
        open_engine(ModelConfig(arch="tiny", device="cuda"), img_size=SIZE)


def test_unwritable_cache_is_one_clear_error(trained_checkpoint, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(CheckpointError, match=r"not-a-dir/sub: cannot write the engine cache .* --precision fp32"):
        open_engine(ModelConfig(checkpoint=trained_checkpoint, engine_cache=blocker / "sub"), img_size=SIZE)


def test_engine_and_checkpoint_together(exported, trained_checkpoint):
    with pytest.raises(ConfigError, match="give model.engine .* or model.checkpoint .*, not both"):
        open_engine(ModelConfig(engine=exported, checkpoint=trained_checkpoint))


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(CheckpointError, match=r"engine not found: .*nope\.onnx"):
        open_engine(ModelConfig(engine=tmp_path / "nope.onnx"))
    with pytest.raises(CheckpointError, match=r"model\.tflite: unsupported engine type '\.tflite'; expected one of \.pth"):
        open_engine(ModelConfig(engine=tmp_path / "model.tflite"))


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a protobuf at all")
    with pytest.raises(CheckpointError, match=r"junk\.onnx: not a loadable ONNX model"):
        open_engine(ModelConfig(engine=path))


def test_onnx_with_other_inputs_is_refused(tmp_path):
    path = write_onnx(
        tmp_path / "imagenet.onnx",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, 224, 224])],
    )
    with pytest.raises(CheckpointError) as err:
        open_engine(ModelConfig(engine=path))
    assert str(err.value) == (
        f"{path}: not a streamguard engine: inputs 'input' tensor(float) ['N', 3, 224, 224]; expected one input "
        "'crops' tensor(uint8) [N, S, S, 3] with a dynamic N (see `streamguard export-onnx`)"
    )


def test_onnx_with_a_fixed_batch_or_other_outputs_is_refused(tmp_path):
    fixed = write_onnx(
        tmp_path / "fixed.onnx",
        [helper.make_tensor_value_info("crops", TensorProto.UINT8, [1, SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("p_fake", TensorProto.UINT8, [1, SIZE, SIZE, 3])],
    )
    with pytest.raises(CheckpointError, match=r"fixed\.onnx: not a streamguard engine: inputs 'crops' tensor\(uint8\) \[1, "):
        open_engine(ModelConfig(engine=fixed))
    outputs = write_onnx(
        tmp_path / "outputs.onnx",
        [helper.make_tensor_value_info("crops", TensorProto.UINT8, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.UINT8, ["N", SIZE, SIZE, 3])],
    )
    with pytest.raises(CheckpointError, match=r"outputs\.onnx: not a streamguard engine: outputs 'scores' .* expected 'p_fake'"):
        open_engine(ModelConfig(engine=outputs))


def test_sidecar_missing_or_broken(exported, tmp_path):
    copy = shutil.copy(exported, tmp_path / "copy.onnx")
    with pytest.raises(CheckpointError, match=r"copy\.onnx: its sidecar copy\.json is missing"):
        open_engine(ModelConfig(engine=copy), img_size=SIZE)
    data = json.loads(sidecar_path(exported).read_text())
    del data["model"]["digest"]
    sidecar_path(copy).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"copy\.json: not a valid streamguard\.engine\.v1 sidecar \(KeyError: 'digest'\)"):
        open_engine(ModelConfig(engine=copy), img_size=SIZE)


def test_engine_of_another_arch_or_size(exported):
    with pytest.raises(CheckpointError, match=r"tiny\.onnx holds fsfm-vit-tiny \(arch 'tiny'\) but arch 'base' was asked for"):
        open_engine(ModelConfig(engine=exported, arch="base"), img_size=SIZE)
    with pytest.raises(CheckpointError, match=r"tiny\.onnx takes 64 px crops but crop\.size is 224"):
        open_engine(ModelConfig(engine=exported), img_size=224)


def test_cli_export_quantize_then_run_refuses_a_bad_engine(tmp_path, capsys, crops):
    fp32, int8 = tmp_path / "e" / "tiny.onnx", tmp_path / "e" / "tiny.int8.onnx"
    assert main(["export-onnx", "--arch", "tiny", "--img-size", str(SIZE), "--out", str(fp32), "--threshold", "0.4"]) == 0
    assert main(["quantize", "--onnx", str(fp32), "--out", str(int8)]) == 0
    assert "wrote" in capsys.readouterr().out
    engine = open_engine(ModelConfig(engine=int8), img_size=SIZE)
    assert engine.precision == "int8" and engine.meta.threshold == 0.4 and engine.infer(crops)[0].shape == (6,)
    # A bad engine is refused before any stream is opened (the stream URL does not exist either).
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    assert main(["run", "--stream", "a=/nonexistent.mp4", "--engine", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"streamguard: error: {bad}: not a loadable ONNX model") and "\n" not in err
