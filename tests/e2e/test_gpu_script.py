"""`benchmarks/gpu.sh`, the GPU part of the benchmark in one command, smoke-run on the CPU
(DEVICE=cpu, the tiny model) so that the script a lent GPU machine runs keeps working
between the rare sessions that have one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO


@pytest.mark.slow
def test_gpu_script_runs_every_step_on_the_cpu(tmp_path):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # python3 = this venv's
        "OUT": str(tmp_path), "DEVICE": "cpu", "ARCH": "tiny", "BATCHES": "1,2", "REPEATS": "1",
        "INGEST_SECONDS": "4", "SIZES": "320x240", "MANY": "2", "MANY_SIZE": "320x240",
        "PIPE_RES": "720p", "PIPE_STREAMS": "1", "PIPE_SECONDS": "3", "PIPE_WARMUP": "3", "PIPE_FRONT_SECONDS": "2",
        "PROC_STREAMS": "2", "PROCESSES": "2",
    }
    run = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert " passed" in (tmp_path / "gpu-tests.txt").read_text()
    model = json.loads((tmp_path / "bench_model_tiny_cpu.json").read_text())
    assert model["device"] == "cpu" and model["streams_served"]["by_engine"]["onnxruntime int8 cpu"]["streams"] > 0
    ingest = json.loads((tmp_path / "ingest-cpu.json").read_text())
    assert [(r["hwaccel"], r["decoded_on_gpu"]) for r in ingest["results"]] == [("none", False), ("auto", False)]
    assert all(r["decode_fps"] > 20 for r in ingest["results"])  # a 25 fps stream, decoded as it arrives
    many = json.loads((tmp_path / "ingest-many-cpu.json").read_text())
    assert [(r["streams"], r["hwaccel"]) for r in many["results"]] == [(2, "none"), (2, "auto")]
    for r in many["results"]:
        assert r["cpu_per_stream"] == pytest.approx(r["cpu_share_of_one_core"] / 2, abs=1e-3)
        assert r["analysed_fps_per_stream"][0] > 3  # both streams analysed, at about their 5 fps
        assert r["frames_measured"] > 2 * 3 * 3  # latencies from both streams: each one's sender times found
    (pipeline_json,) = tmp_path.glob("pipeline-*.json")  # the whole pipeline, its streams served as FLV
    pipeline = json.loads(pipeline_json.read_text())
    assert pipeline["server"] == "flv" and pipeline["engine"]["name"] == "fsfm-vit-tiny"
    assert pipeline["results"][0]["crops_per_s"] > 0 and pipeline["front_end"][0]["analysed_fps_min"] > 0
    (case,) = json.loads((tmp_path / "processes-cpu.json").read_text())["results"]  # 2 streams in 2 workers
    assert (case["streams"], case["processes"], case["streams_silent"]) == (2, 2, 0) and case["analysed_fps_per_stream"][0] > 3
    assert "all steps passed" in run.stdout


@pytest.mark.slow
def test_gpu_script_runs_only_the_steps_asked_for(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OUT": str(tmp_path), "DEVICE": "cpu", "ONLY": "gpu-bench-ingest", "INGEST_SECONDS": "2", "SIZES": "320x240"}
    run = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["gpu-bench-ingest.txt", "machine.txt"]
