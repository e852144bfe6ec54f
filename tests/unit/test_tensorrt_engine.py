"""TensorRT: what runs everywhere (options, buckets, the errors on a machine without
TensorRT or a GPU), and a real build + parity run that only runs where TensorRT does.

TensorRT cannot be installed on this project's machines (FACTS.md), so the tests
marked `needs_tensorrt` have not run here; they skip saying so.
"""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
import torch

from streamguard.cli import main
from streamguard.config import ModelConfig
from streamguard.errors import CheckpointError, ConfigError
from streamguard.inference import open_engine
from lab.bench.model import face_crops
from streamguard.inference.contract import sidecar_path
from streamguard.inference.export import export_onnx
from streamguard.inference.tensorrt_engine import BuildOptions, TensorRTEngine, build_engine, plan_buckets
from streamguard.inference.torch_engine import TorchEngine
from streamguard.model import untrained_model

SIZE = 64
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_tensorrt = pytest.mark.skipif(
    not (HAS_TENSORRT and torch.cuda.is_available()),
    reason="TensorRT and a CUDA GPU are needed; TensorRT cannot be installed on this project's machines (FACTS.md)",
)
without_tensorrt = pytest.mark.skipif(HAS_TENSORRT, reason="checks the error on a machine without TensorRT")


@pytest.fixture(scope="module")
def loaded():
    return untrained_model("tiny", seed=2, img_size=SIZE)


@pytest.fixture(scope="module")
def exported(loaded, tmp_path_factory):
    return export_onnx(loaded, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_build_options_are_checked_first():
    with pytest.raises(ConfigError, match=r"1 <= min \(8\) <= opt \(4\) <= max \(64\)"):
        BuildOptions(min_batch=8, opt_batch=4).check()
    with pytest.raises(ConfigError, match="--workspace-gb must be > 0"):
        BuildOptions(workspace_gb=0).check()
    BuildOptions().check()


def test_plan_buckets():
    assert plan_buckets(1, 64) == [1, 2, 4, 8, 16, 32, 64]
    assert plan_buckets(3, 40) == [3, 4, 8, 16, 32, 40]
    assert plan_buckets(8, 8) == [8]


def test_build_engine_refuses_bad_paths(exported, tmp_path):
    with pytest.raises(ConfigError, match=r"model\.trt: a TensorRT plan must end in \.plan or \.engine"):
        build_engine(exported, tmp_path / "model.trt", BuildOptions())
    with pytest.raises(CheckpointError, match=r"engine not found: .*none\.onnx"):
        build_engine(tmp_path / "none.onnx", tmp_path / "model.plan", BuildOptions())


@without_tensorrt
def test_without_tensorrt_build_and_open_are_one_clear_error(exported, tmp_path, capsys):
    assert main(["build-engine", "--onnx", str(exported), "--out", str(tmp_path / "tiny.plan")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"streamguard: error: {exported}: TensorRT needs the 'tensorrt' Python package (TensorRT 10), which is not installed on this machine"
    plan = tmp_path / "tiny.plan"
    plan.write_bytes(b"a plan built elsewhere")
    shutil.copy(sidecar_path(exported), sidecar_path(plan))
    with pytest.raises(CheckpointError, match=r"tiny\.plan: TensorRT needs the 'tensorrt' Python package"):
        open_engine(ModelConfig(engine=plan), img_size=SIZE)
    with pytest.raises(CheckpointError, match=r"engine not found: .*other\.engine"):
        open_engine(ModelConfig(engine=tmp_path / "other.engine"), img_size=SIZE)


@needs_tensorrt
def test_build_and_run_a_plan_matches_torch(loaded, exported, tmp_path):
    plan = build_engine(exported, tmp_path / "tiny.plan", BuildOptions(min_batch=1, opt_batch=4, max_batch=8, workspace_gb=1))
    cache = tmp_path / "trt_timing.cache"
    assert cache.stat().st_size > 0
    engine = open_engine(ModelConfig(engine=plan), img_size=SIZE)
    assert isinstance(engine, TensorRTEngine) and engine.precision == "fp16"
    assert engine.meta.digest == loaded.meta.digest
    crops = face_crops(11, SIZE)
    ref_p, ref_e = TorchEngine(loaded).infer(crops)
    for n in (1, 3, 8, 11, 3):  # buckets 1, 4, 8, then 8 + 4 in two chunks, then bucket 4 again
        p_fake, embedding = engine.infer(crops[:n])
        assert np.abs(p_fake - ref_p[:n]).max() < 0.02
        cosine = (embedding * ref_e[:n]).sum(1) / np.linalg.norm(embedding, axis=1) / np.linalg.norm(ref_e[:n], axis=1)
        assert cosine.min() > 0.99
    # A rebuild reads the timing cache it wrote.
    build_engine(exported, tmp_path / "again.plan", BuildOptions(min_batch=1, opt_batch=4, max_batch=8, workspace_gb=1))
    assert (tmp_path / "again.json").is_file()
