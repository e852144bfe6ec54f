"""`streamguard bench pipeline` end to end on the tiny model: one short live case, so the
harness (RTSP server, Redis, per-thread CPU, front-end case, JSON, PNG) keeps working."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import numpy as np
import pytest

from lab.bench.commands import _variants
from lab.bench.pipeline import (
    latency_timeline,
    native_threads,
    plot,
    rss_growth,
    run_bench,
    steady_ratio,
    streams_for_load,
    thread_cpu_seconds,
)
from streamguard.cli import main
from streamguard.config import build_config
from streamguard.errors import ConfigError
from streamguard.inference.export import export_onnx
from streamguard.inference.onnx_engine import OnnxEngine
from streamguard.inference.torch_engine import TorchEngine
from streamguard.model.checkpoint import untrained_model


def test_rss_growth_compares_the_end_with_minute_two():
    timeline = [(float(t), 100.0 + (5.0 if t >= 300 else 0.0)) for t in range(0, 601, 10)]
    assert rss_growth(timeline) == pytest.approx(1.05)
    assert rss_growth(timeline[:20]) is None  # under 5 minutes: no soak figure


def test_latency_timeline_gives_rate_and_percentiles_per_window():
    samples = [(t / 4, 1.0 if t < 80 else 3.0) for t in range(120)]  # 4 crops/s over 30 s; slower in the last 10 s
    rows = latency_timeline(samples, 30.0)
    assert [r[0] for r in rows] == [0.0, 10.0, 20.0]
    assert [r[1] for r in rows] == [4.0, 4.0, 4.0]
    assert [r[3] for r in rows] == [1.0, 1.0, 3.0]
    # a last window of at least half the length counts over its own length; a shorter one is left out
    assert [r[:2] for r in latency_timeline(samples[:100], 25.0)] == [(0.0, 4.0), (10.0, 4.0), (20.0, 4.0)]
    assert [r[0] for r in latency_timeline(samples[:56], 14.0)] == [0.0]


def test_vary_parses_one_key_and_refuses_what_the_shared_engine_fixes():
    assert _variants("ingest.keyframes_only_beyond=1,2") == ("ingest.keyframes_only_beyond", ["1", "2"])
    assert _variants(None) is None
    assert _variants("model.parallel_calls=1,2") == ("model.parallel_calls", ["1", "2"])  # own engine per variant
    for bad, message in [
        ("ingest.decode_threads", "KEY=V1,V2"),
        ("ingest.decode_threads=1,", "KEY=V1,V2"),
        ("ingest.decode_threads=1,2,1", "each value once"),
        ("model.precision=int8,fp32", "same model"),
        ("crop.size=224,256", "same model"),
    ]:
        with pytest.raises(ConfigError, match=message):
            _variants(bad)


def test_an_engines_own_worker_threads_count_as_the_engine(tmp_path):
    """onnxruntime's intra-op workers are threads Python did not start: once the engine has
    run they are told apart from the pipeline's and from any started later (mediapipe's)."""
    before = native_threads()
    engine = OnnxEngine(export_onnx(untrained_model("tiny", seed=0), tmp_path / "tiny.onnx"), threads=2)
    release = threading.Event()
    python_thread = threading.Thread(target=release.wait, name="faces-x")
    python_thread.start()
    try:
        crops = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
        for _ in range(5):
            engine.infer(crops)
        pool = native_threads() - before
        assert pool and python_thread.native_id not in pool  # its second worker, not a Python thread
        with_pool, without = thread_cpu_seconds(pool), thread_cpu_seconds()
        assert with_pool["engine"] > without.get("engine", 0)  # the work its worker did is the engine's
        assert with_pool["faces"] == without["faces"]  # Python's threads keep their stage
    finally:
        release.set()
        python_thread.join()
        engine.close()


def test_overload_picks_the_streams_from_the_engines_rate(capsys):
    # two faces a frame at 5 fps: 10 crops/s a stream
    assert streams_for_load(2.0, 15.0, 5.0) == 3  # 30 crops/s asked: 3 streams offer exactly that
    assert streams_for_load(2.0, 15.1, 5.0) == 4  # never less than asked
    assert streams_for_load(2.0, 7.5, 5.0) == 2
    assert streams_for_load(2.0, 0.5, 5.0) == 1
    assert streams_for_load(3.0, 15.0, 2.5) == 9  # 45 crops/s at 5 a stream
    assert main(["bench", "pipeline", "--overload", "0"]) == 2
    assert "--overload must be > 0 (times what the engine alone scores), got 0.0" in capsys.readouterr().err


async def test_one_stream_case_reports_throughput_latency_cpu_and_files(tmp_path, capsys):
    engine = TorchEngine(untrained_model("tiny"))
    cfg = build_config({"ingest": {"analysis_fps": 5}})
    variants = {f"ingest.decode_on_demand={v}": build_config({"ingest": {"analysis_fps": 5, "decode_on_demand": v}})
                for v in (True, False)}
    try:
        results = await run_bench(cfg, engine, [1], ["720p"], seconds=4.0, warmup=3.0, out_dir=tmp_path,
                                  video_dir=tmp_path / "videos", front_end_seconds=2.0, variants=variants,
                                  keyframe_every_s=2.0, rounds=2, front_end_streams=(1, 2),
                                  model_only_seconds=2.0)
    finally:
        engine.close()
    # each case once per variant, back to back, and the whole again per round
    assert [(r.variant, r.round) for r in results] == [(v, i) for i in range(2) for v in variants]
    case = results[0]
    assert case.streams == 1 and case.crops_per_s > 0
    # the engine alone just before and just after the case; the ratio is to their mean
    before, after = case.model_only_before_crops_per_s, case.model_only_after_crops_per_s
    assert before > 0 and after > 0 and case.model_only_crops_per_s == pytest.approx((before + after) / 2, abs=0.01)
    assert case.ratio_to_model == pytest.approx(case.crops_per_s / case.model_only_crops_per_s, abs=0.002)
    # the goal is judged on the cases where the model was the bottleneck (the streams offered at
    # least what it scores alone) and the engine alone held its speed across the case
    steady = replace(case, model_only_before_crops_per_s=10.0, model_only_after_crops_per_s=10.5, ratio_to_model=0.9, load_factor=2.0)
    rough = replace(steady, model_only_after_crops_per_s=13.0, ratio_to_model=0.6)
    light = replace(steady, load_factor=0.6, ratio_to_model=0.6)  # the streams offer less than the model scores
    assert steady_ratio([steady, rough, light, steady]) == {"cases": 2, "of": 4, "median": 0.9, "min": 0.9, "max": 0.9}
    assert steady_ratio([rough, light]) is None
    # a long case (overload, soak) also gets its latency and throughput over time plotted
    long = replace(case, seconds=180.0, latency_timeline=[(0.0, 4.0, 1.0, 1.5), (10.0, 4.2, 1.1, 1.6)])
    plot([long], tmp_path / "long.png")
    assert (tmp_path / "long-timeline.png").stat().st_size > 0
    assert 0 < case.engine_busy <= 1
    assert 0 < case.latency_p50_s <= case.latency_p99_s < 5
    assert case.cpu_cores_by_stage["decode"] > 0 and case.rtsp_server_cores > 0
    assert case.peak_rss_mb > 0 and case.rss_growth is None
    doc = json.loads(next(tmp_path.glob("pipeline-*.json")).read_text())
    one, two = doc["front_end"]
    assert (one["resolution"], one["streams"], two["streams"]) == ("720p", 1, 2)
    for front in (one, two):  # each stream detected frames, in its own faces-* thread, while ingest decoded
        assert front["analysed_fps_min"] > 0 and front["cpu_cores"] > 0 and front["rtsp_server_cores"] > 0
        assert front["cpu_cores_by_stage"]["decode"] > 0 and front["cpu_cores_by_stage"]["faces"] > 0
    assert doc["results"][0]["streams"] == 1 and doc["keyframe_every_s"] == 2.0 and "ratio_steady" in doc
    assert (tmp_path / "videos" / "two_faces_720p_k2s.mp4").is_file()
    assert next(tmp_path.glob("pipeline-*.png")).stat().st_size > 0
    out = capsys.readouterr().out
    assert "ratio" in out and "drift" in out and "ingest.decode_on_demand=False r2" in out and out.strip().splitlines()[-2].startswith("{")
    assert out.count("front end (") == 2  # once per stream count, not per round


async def test_a_host_without_gstreamer_serves_the_streams_as_flv(tmp_path, capsys):
    engine = TorchEngine(untrained_model("tiny"))
    cfg = build_config({"ingest": {"analysis_fps": 5}})
    try:
        (case,) = await run_bench(cfg, engine, [2], ["720p"], seconds=3.0, warmup=2.0, out_dir=tmp_path,
                                  video_dir=tmp_path / "videos", front_end_seconds=0, model_only_seconds=1.0,
                                  server_kind="flv")
    finally:
        engine.close()
    assert case.crops_per_s > 0 and min(case.analysed_fps_per_stream) > 0  # both streams were scored
    assert case.rtsp_server_cores > 0  # the FLV server's process, counted as the RTSP server's is
    assert json.loads(next(tmp_path.glob("pipeline-*.json")).read_text())["server"] == "flv"
    assert "stream(s) at 720p" in capsys.readouterr().out


def test_an_unknown_stream_server_is_refused(capsys):
    assert main(["bench", "pipeline", "--server", "rtmp"]) == 2
    assert "--server: unknown 'rtmp'; choose from rtsp, flv" in capsys.readouterr().err
