"""`streamguard bench model` end to end on the tiny model: a smoke test of the code
path (table, JSON line, files), not a measurement; speed is measured by the benchmark."""

from __future__ import annotations

import json

import pytest

from streamguard.cli import main
from streamguard.errors import ConfigError
from lab.bench.model import (
    candidates,
    flops_per_crop,
    int8_ceiling,
    linear_flops_per_crop,
    speedups,
    streams_served,
)
from streamguard.model import ARCHS


def test_flops_per_crop_of_vit_b():
    assert flops_per_crop(ARCHS["base"], 224) / 2 == pytest.approx(17.56e9, rel=0.01)  # ~17.6 GMACs (FACTS.md)


def test_linear_layers_are_most_of_vit_b():
    linear = linear_flops_per_crop(ARCHS["base"], 224)
    assert linear == 2 * 12 * 12 * 197 * 768**2  # depth x 12 T D^2 multiply-adds
    assert 0.9 < linear / flops_per_crop(ARCHS["base"], 224) < 1.0


def test_int8_ceiling():
    rows = [{"engine": "ref", "batch": 8, "ms_per_crop": 200.0}, {"engine": "ref", "batch": 16, "ms_per_crop": 150.0},
            {"engine": "int8", "batch": 8, "ms_per_crop": 100.0}]
    # 10 GFLOP of linear layers at 100 GFLOP/s: 100 ms per crop at best, whatever else the engine does
    assert int8_ceiling(rows, "ref", 10e9, 100e9) == {"8": 2.0, "16": 1.5}
    assert int8_ceiling(rows, "missing", 10e9, 100e9) == {}


def test_candidates_on_cpu():
    labels = [c.label for c in candidates("cpu", None, ["fp32", "int8"], "both", None)]
    assert labels == ["torch fp32 cpu", "onnxruntime fp32 cpu", "onnxruntime int8 cpu"]
    with pytest.raises(ConfigError, match="no engine to benchmark on cpu"):
        candidates("cpu", ["tensorrt"], None, "both", None)


def test_speedups():
    rows = [{"engine": e, "batch": b, "ms_per_crop": 1000 / r} for e, b, r in
            [("a", 1, 3.0), ("a", 8, 6.0), ("ref", 1, 1.0), ("ref", 8, 2.0), ("a", 32, 9.0)]]
    assert speedups(rows, "a", "ref") == {"1": 3.0, "8": 3.0, "best": 3.0}
    assert speedups(rows, "a", "missing") == {}


def test_streams_served_takes_each_engines_best_batch():
    rows = [{"engine": e, "batch": b, "crops_per_s": r} for e, b, r in
            [("gpu", 8, 900.0), ("gpu", 64, 2049.0), ("gpu", 128, 1800.0), ("cpu", 1, 9.9)]]
    assert streams_served(rows, fps=5.0) == {
        "gpu": {"batch": 64, "crops_per_s": 2049.0, "streams": 409},  # whole streams only: 409.8 -> 409
        "cpu": {"batch": 1, "crops_per_s": 9.9, "streams": 1},
    }
    assert streams_served(rows, fps=5.0, faces=2)["gpu"]["streams"] == 204


def test_bench_model_prints_a_table_and_a_json_line(tmp_path, capsys):
    argv = ["bench", "model", "--arch", "tiny", "--img-size", "64", "--batch", "1,2", "--repeats", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[1].split()[:5] == ["engine", "batch", "ms/crop", "crops/s", "best"]
    result = json.loads(next(line for line in out if line.startswith("{")))
    assert result["bench"] == "model" and result["device"] == "cpu" and result["default_engine"] == "onnxruntime int8 cpu"
    assert {(r["engine"], r["batch"]) for r in result["results"]} >= {("torch fp32 cpu", 2), ("onnxruntime int8 cpu", 1)}
    for row in result["results"]:
        assert row["ms_per_crop"] > 0 and row["crops_per_s"] > 0 and 0 < row["roofline_ratio"]
        assert row["p_fake_max_abs_diff"] < (1e-4 if row["precision"] == "fp32" else 0.05)
    assert set(result["speedup_vs_torch_fp32"]) == set(result["speedup_vs_torch_fp32_best_calls"]) == {"1", "2", "best"}
    assert result["matmul_gflops"]["int8"] > 0 and result["matmul_gflops"]["fp32"] > 0
    assert set(result["int8_ceiling_vs_torch_fp32"]) == {"1", "2"} and min(result["int8_ceiling_vs_torch_fp32"].values()) > 0
    assert any(line.startswith("int8 ceiling vs torch fp32") for line in out)
    served = result["streams_served"]
    assert served["analysis_fps"] == 5.0 and set(served["by_engine"]) == {r["engine"] for r in result["results"]}
    for label, s in served["by_engine"].items():
        best = max((r for r in result["results"] if r["engine"] == label), key=lambda r: r["crops_per_s"])
        assert (s["batch"], s["streams"]) == (best["batch"], int(best["crops_per_s"] // 5))
    assert any(line.startswith("one-face streams at 5 analysed fps") for line in out)
    assert (tmp_path / "bench_model_tiny_cpu.json").is_file() and (tmp_path / "bench_model_tiny_cpu.png").stat().st_size > 0
    assert main(["bench", "model", "--batch", "0"]) == 2
