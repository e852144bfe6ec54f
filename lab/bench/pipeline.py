"""Whole-pipeline benchmark: N live RTSP streams through the full pipeline into a
real Redis, and, in the same run, the engine alone on the same crops. (`--server flv`
serves the streams as FLV over TCP instead, for a host without GStreamer: the GPU host.)

Why both in one run: the pipeline's throughput only means something as a ratio to
what the model alone can do on this machine at this moment (the goal is >= 0.85 once
the model is the bottleneck). CPU per stage comes from the kernel's per-thread
accounting (/proc/self/task/*/stat), grouped by the names the pipeline gives its
threads: `ingest-*` (decode), `faces-*` (detection, tracking, crops),
`streamguard-infer*` (the engine) and the event loop (scoring, Redis). The engine's
own pool, where it has one (onnxruntime's intra-op threads, torch's OpenMP threads),
counts as `engine` too: those are the threads Python did not start that exist once the
engine alone has run, before the pipeline starts its detectors. Other threads Python
did not start land in `other`: mediapipe's graph threads.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from streamguard import metrics
from streamguard.redis.embedded import EmbeddedRedis
from streamguard.redis.sink import RedisSink
from streamguard.blas import limit_numpy_blas_threads
from streamguard.config import Config, StreamConfig
from streamguard.faces.stage import FaceStage
from streamguard.inference.contract import Engine
from streamguard.ingest.latest import LatestQueue
from streamguard.ingest.pyav_source import StreamSource
from streamguard.app import running
from streamguard.samples import make_two_face_video
from lab.servers.rtsp import FlvServer, RtspServer, StreamServer
from streamguard.types import Frame, Sample

RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}
FACES_PER_FRAME = 2  # in the generated sample
SERVERS: dict[str, type[StreamServer]] = {"rtsp": RtspServer, "flv": FlvServer}
THREAD_GROUPS = (("ingest-", "decode"), ("faces-", "faces"), ("streamguard-infer", "engine"), ("MainThread", "loop"))
TICKS = os.sysconf("SC_CLK_TCK")
LATENCY_WINDOW_S = 10.0
STEADY_DRIFT = 0.10  # a case across which the engine alone sped up or slowed down by more has a rough ratio


@dataclass
class CaseResult:
    streams: int
    resolution: str
    seconds: float  # measured (after warm-up)
    crops_per_s: float
    model_only_crops_per_s: float  # the mean of the engine alone just before and just after the case
    ratio_to_model: float
    model_only_before_crops_per_s: float  # at the batch the case should form, before it started
    model_only_after_crops_per_s: float  # at the batch it did form, on its own crops
    mean_batch: float
    engine_busy: float  # share of the measured time the engine was computing (1.0: never waited for crops)
    latency_p50_s: float
    latency_p95_s: float
    latency_p99_s: float
    latency_p99_first_min_s: float | None
    latency_p99_last_min_s: float | None
    analysed_fps_per_stream: list[float]
    fairness_max_dev: float  # max |rate - mean| / mean over streams
    frames_dropped_per_stream: list[int]
    crops_dropped: int
    cpu_cores_by_stage: dict[str, float]
    rtsp_server_cores: float  # the test harness's stream server (RTSP, or FLV with --server flv): shares this machine's cores, not part of the pipeline
    load_factor: float  # crops/s the streams offer (analysis fps x faces) over model-only crops/s
    peak_rss_mb: float  # largest RSS sampled during the case
    rss_growth: float | None  # RSS at the end over RSS at minute 2 (runs of >= 5 min), the soak figure
    variant: str = ""  # `--vary KEY=VALUE` this case ran with ("" without --vary)
    round: int = 0  # which pass over all cases (`--rounds`)
    rss_mb_timeline: list[tuple[float, float]] = field(default_factory=list)
    # per LATENCY_WINDOW_S of the measured time: (start s, crops/s, p50 s, p99 s). Latency that rises while
    # crops/s holds is a queue growing; latency that rises as crops/s falls is the machine slowing down.
    latency_timeline: list[tuple[float, float, float, float]] = field(default_factory=list)


@dataclass
class FrontEndResult:
    """Decode + detection + tracking + crops of N live streams, no model: the per-stream CPU floor."""

    resolution: str
    seconds: float
    analysed_fps: float  # per stream, mean over streams
    cpu_cores: float  # the whole process, over the measured window
    streams: int = 1
    analysed_fps_min: float = 0.0  # the slowest stream's
    cpu_cores_by_stage: dict[str, float] = field(default_factory=dict)  # as CaseResult's (no engine here)
    rtsp_server_cores: float = 0.0  # the harness's server, on the same cores


def cores_by_stage(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores each stage used between two `thread_cpu_seconds` readings `seconds` apart."""
    return {g: round((after.get(g, 0) - before.get(g, 0)) / seconds, 3) for g in after}


def native_threads() -> frozenset[int]:
    """Ids of this process's threads that Python did not start (the pools of C++ libraries)."""
    python = {t.native_id for t in threading.enumerate()}
    return frozenset(tid for tid in map(int, os.listdir("/proc/self/task")) if tid not in python)


def thread_cpu_seconds(engine_pool: frozenset[int] = frozenset()) -> dict[str, float]:
    """CPU seconds used so far by this process's live threads, by stage; `engine_pool`: the
    ids of the engine's own worker threads (`native_threads` once it has run), counted as `engine`."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        cpu = stat_cpu_seconds(Path(f"/proc/self/task/{tid}/stat"))
        if cpu is None:
            continue  # the thread ended meanwhile
        name = names.get(int(tid), "")
        group = "engine" if int(tid) in engine_pool else next((g for prefix, g in THREAD_GROUPS if name.startswith(prefix)), "other")
        out[group] = out.get(group, 0.0) + cpu
    return out


def stat_cpu_seconds(stat: Path) -> float | None:
    """utime + stime in a /proc .../stat file (a process or one thread); None if it is gone."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """The process's high-water mark (includes start-up, e.g. building the int8 engine)."""
    return _status_mb("VmHWM")


def sample_videos(folder: Path, resolutions: list[str], keyframe_every_s: float = 1.0) -> dict[str, Path]:
    """One 30 s two-face H.264 clip per resolution (made once, then reused)."""
    out = {}
    for res in resolutions:
        suffix = "" if keyframe_every_s == 1.0 else f"_k{keyframe_every_s:g}s"
        path = folder / f"two_faces_{res}{suffix}.mp4"
        if not path.is_file():
            make_two_face_video(path, seconds=30.0, size=RESOLUTIONS[res], keyframe_every_s=keyframe_every_s)
        out[res] = path
    return out


def model_only_throughput(engine: Engine, crops: np.ndarray, batch: int, seconds: float = 8.0, parts: int = 4) -> float:
    """Crops per second of `engine.infer` alone at `batch`, on the pipeline's own crops,
    with `engine.concurrency` calls at once as the batcher runs them.

    The median over `parts` consecutive parts of `seconds`: on the shared machines this
    was built on, a passing slowdown of a few seconds (seen: a quarter off) would
    otherwise make the pipeline look better than the model alone.
    """
    batch = max(1, min(batch, len(crops)))
    x = crops[np.arange(batch) % len(crops)]

    def crops_until(deadline: float) -> int:
        done = 0
        while time.perf_counter() < deadline:
            engine.infer(x)
            done += batch
        return done

    with ThreadPoolExecutor(engine.concurrency) as pool:
        list(pool.map(lambda _: engine.infer(x), range(engine.concurrency)))  # warm-up
        rates = []
        for _ in range(parts):
            start = time.perf_counter()
            done = sum(pool.map(crops_until, [start + seconds / parts] * engine.concurrency))
            rates.append(done / (time.perf_counter() - start))
    return float(np.median(rates))


def streams_for_load(load: float, model_crops_per_s: float, analysis_fps: float) -> int:
    """How many sample streams (two faces each) offer at least `load` times what the engine
    alone scores: the overload run's N on any machine (2 streams were 2.5-3.5x on the AVX2
    EPYC but 1.3x on the AVX-512 one, whose int8 engine is twice as fast)."""
    return max(1, math.ceil(load * model_crops_per_s / (analysis_fps * FACES_PER_FRAME)))


def stand_in_crops(size: int, n: int = 16) -> np.ndarray:
    """Noise crops, for timing the engine before a case has crops of its own: a ViT's
    arithmetic is dense, so its time does not depend on the pixels."""
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _p(values: list[float], q: float) -> float:
    return float(np.quantile(values, q)) if values else float("nan")


async def run_case(
    cfg: Config, engine: Engine, server: StreamServer, redis_url: str,
    streams: int, resolution: str, seconds: float, warmup: float, variant: str = "", model_only_seconds: float = 8.0,
) -> CaseResult:
    """One case: the engine alone, then the pipeline on `streams` live streams, then the
    engine alone again. The ratio's denominator is the mean of the two, so that a
    machine whose speed drifts (shared cores) does not tilt it either way."""
    before = model_only_throughput(
        engine, stand_in_crops(cfg.crop.size), min(cfg.batcher.max_batch, FACES_PER_FRAME * streams), model_only_seconds
    )
    engine_pool = native_threads()  # the engine has run and the detectors do not exist yet
    names = [f"s{i}" for i in range(streams)]
    case_cfg = cfg.model_copy(update={"streams": [StreamConfig(name=n, url=server.url(resolution)) for n in names]})
    latencies: list[tuple[float, float, str]] = []  # (time since start, latency, stream)
    crops: list[np.ndarray] = []
    t0 = time.monotonic()

    def on_sample(sample: Sample) -> None:
        now = time.monotonic() - t0
        if now >= warmup:
            latencies.append((now, time.time() - sample.face.wall_ts, sample.face.stream))
        if len(crops) < 64:
            crops.append(sample.face.crop)

    batch_sum0, batch_n0 = _hist(metrics.BATCH_SIZE)
    infer_s0 = 0.0
    crops_dropped0 = metrics.CROPS_DROPPED._value.get()
    rss_timeline: list[tuple[float, float]] = []
    sink = RedisSink(case_cfg.redis, redis_url)
    async with running(case_cfg, sink, engine=engine, on_sample=on_sample, flush_timeout=5) as app:
        pipeline = app.pipeline
        stop = asyncio.Event()
        cpu_start: dict[str, float] = {}
        server_start = 0.0
        deadline = warmup + seconds
        while (now := time.monotonic() - t0) < deadline:
            if not cpu_start and now >= warmup:
                cpu_start = thread_cpu_seconds(engine_pool)  # stage threads exist once streams are live
                infer_s0 = _hist(metrics.INFER_SECONDS)[0]
                server_start = process_cpu_seconds_of(server.pid)
            rss_timeline.append((round(now, 1), round(rss_mb(), 1)))
            await pipeline.wait(stop, duration=min(1.0, deadline - now), until_idle=False)
        cpu_end = thread_cpu_seconds(engine_pool)
        infer_s = _hist(metrics.INFER_SECONDS)[0] - infer_s0
        server_cores = (process_cpu_seconds_of(server.pid) - server_start) / seconds
        dropped = [w.queue.dropped for w in pipeline.workers.values()]

    batch_sum, batch_n = _hist(metrics.BATCH_SIZE)
    mean_batch = (batch_sum - batch_sum0) / max(1, batch_n - batch_n0)
    lat = [lt for _, lt, _ in latencies]
    per_stream = [sum(1 for *_, s in latencies if s == n) / seconds for n in names]
    fps = [r / FACES_PER_FRAME for r in per_stream]
    mean_rate = statistics.mean(per_stream) if per_stream else 0.0
    first = [lt for t, lt, _ in latencies if t < warmup + 60]
    last = [lt for t, lt, _ in latencies if t >= deadline - 60]
    after = model_only_throughput(engine, np.stack(crops), round(mean_batch), model_only_seconds) if crops else float("nan")
    model_only = (before + after) / 2
    crops_per_s = len(latencies) / seconds
    offered = streams * cfg.ingest.analysis_fps * FACES_PER_FRAME
    return CaseResult(
        streams=streams,
        resolution=resolution,
        seconds=seconds,
        crops_per_s=round(crops_per_s, 2),
        model_only_crops_per_s=round(model_only, 2),
        ratio_to_model=round(crops_per_s / model_only, 3),
        model_only_before_crops_per_s=round(before, 2),
        model_only_after_crops_per_s=round(after, 2),
        mean_batch=round(mean_batch, 2),
        engine_busy=round(infer_s / seconds / engine.concurrency, 3),  # of all its workers
        latency_p50_s=round(_p(lat, 0.5), 3),
        latency_p95_s=round(_p(lat, 0.95), 3),
        latency_p99_s=round(_p(lat, 0.99), 3),
        latency_p99_first_min_s=round(_p(first, 0.99), 3) if seconds >= 150 else None,
        latency_p99_last_min_s=round(_p(last, 0.99), 3) if seconds >= 150 else None,
        analysed_fps_per_stream=[round(f, 2) for f in fps],
        fairness_max_dev=round(max(abs(r - mean_rate) / mean_rate for r in per_stream), 3) if mean_rate else 0.0,
        frames_dropped_per_stream=dropped,
        crops_dropped=int(metrics.CROPS_DROPPED._value.get() - crops_dropped0),
        cpu_cores_by_stage=cores_by_stage(cpu_start, cpu_end, seconds),
        rtsp_server_cores=round(server_cores, 3),
        load_factor=round(offered / model_only, 2),
        peak_rss_mb=max(mb for _, mb in rss_timeline),
        rss_growth=rss_growth(rss_timeline),
        variant=variant,
        rss_mb_timeline=rss_timeline,
        latency_timeline=latency_timeline([(t - warmup, lt) for t, lt, _ in latencies], seconds),
    )


def latency_timeline(samples: list[tuple[float, float]], seconds: float) -> list[tuple[float, float, float, float]]:
    """(time into the measured part, latency) pairs -> per LATENCY_WINDOW_S: (start, crops/s, p50, p99)."""
    rows = []
    for i in range(int((seconds + LATENCY_WINDOW_S / 2) // LATENCY_WINDOW_S)):  # a last window under half is left out
        start = i * LATENCY_WINDOW_S
        window = [lt for t, lt in samples if start <= t < start + LATENCY_WINDOW_S]
        span = min(LATENCY_WINDOW_S, seconds - start)
        rows.append((float(start), round(len(window) / span, 2), round(_p(window, 0.5), 3), round(_p(window, 0.99), 3)))
    return rows


def rss_growth(timeline: list[tuple[float, float]]) -> float | None:
    """Largest RSS after minute 2 over RSS at minute 2, for runs of at least 5 minutes (else None).

    Minute 2, not 0: by then every buffer pool, cache and allocator arena has reached its
    working size, so what grows after it is a leak.
    """
    if not timeline or timeline[-1][0] < 300:
        return None
    at_2min = next(mb for t, mb in timeline if t >= 120)
    return round(max(mb for t, mb in timeline if t >= 120) / at_2min, 4)


async def run_front_end(
    cfg: Config, server: StreamServer, resolution: str, seconds: float, warmup: float, streams: int = 1
) -> FrontEndResult:
    """`streams` live streams through decode, detection, tracking and crops only; the process's CPU per second.

    The issue's per-stream budget (< 25% of a core for 1080p25 at 5 analysed fps) is
    about this part alone: no model runs, and its idle threads cost nothing. With
    several streams it is also what a host whose model is fast (a GPU) needs on the
    CPU side to keep every stream at the full analysis rate, and where that runs out.
    """
    limit_numpy_blas_threads()  # as the pipeline does
    names = ["front-end"] if streams == 1 else [f"front-end-{i}" for i in range(streams)]
    analysed = dict.fromkeys(names, 0)

    async def analyse(name: str, queue: LatestQueue[Frame]) -> None:
        # As the pipeline: each stream's detector lives in one thread of its own.
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"faces-{name}") as executor:
            stage = await loop.run_in_executor(executor, FaceStage, name, cfg.detector, cfg.tracker, cfg.crop)
            try:
                while True:
                    frame = await queue.get()
                    await loop.run_in_executor(executor, stage.process, frame)
                    analysed[name] += 1
            finally:
                await asyncio.shield(loop.run_in_executor(executor, stage.close))

    tasks = []
    for name in names:
        queue: LatestQueue[Frame] = LatestQueue(cfg.ingest.queue_size)
        source = StreamSource(StreamConfig(name=name, url=server.url(resolution)), cfg.ingest, queue)
        tasks += [asyncio.create_task(source.run(), name=f"{name}-source"),
                  asyncio.create_task(analyse(name, queue), name=f"{name}-faces")]
    try:
        done, _ = await asyncio.wait(tasks, timeout=warmup)
        for task in done:
            task.result()  # a stream failed: say why
        cpu0, stages0, server0 = process_cpu_seconds(), thread_cpu_seconds(), process_cpu_seconds_of(server.pid)
        frames0, t0 = dict(analysed), time.monotonic()
        done, _ = await asyncio.wait(tasks, timeout=seconds)
        for task in done:
            task.result()
        wall = time.monotonic() - t0
        cpu, stages = process_cpu_seconds() - cpu0, thread_cpu_seconds()
        fps = [(analysed[n] - frames0[n]) / wall for n in names]
        return FrontEndResult(
            resolution=resolution,
            seconds=round(wall, 1),
            analysed_fps=round(statistics.mean(fps), 2),
            cpu_cores=round(cpu / wall, 3),
            streams=streams,
            analysed_fps_min=round(min(fps), 2),
            cpu_cores_by_stage=cores_by_stage(stages0, stages, wall),
            rtsp_server_cores=round((process_cpu_seconds_of(server.pid) - server0) / wall, 3),
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def process_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def process_cpu_seconds_of(pid: int | None) -> float:
    """CPU seconds used so far by another process (all its threads); 0 if it is gone."""
    cpu = None if pid is None else stat_cpu_seconds(Path(f"/proc/{pid}/stat"))
    return cpu or 0.0


def _hist(h) -> tuple[float, float]:
    """(sum, count) of a prometheus Histogram without labels."""
    sum_, count = 0.0, 0.0
    for metric in h.collect():
        for s in metric.samples:
            if s.name.endswith("_sum"):
                sum_ = s.value
            elif s.name.endswith("_count"):
                count = s.value
    return sum_, count


def model_drift(r: CaseResult) -> float:
    """How much faster the engine alone ran after the case than before it (negative: slower).
    Beyond a few percent the machine changed speed during the case, and its ratio is rough."""
    return r.model_only_after_crops_per_s / r.model_only_before_crops_per_s - 1


def is_steady(r: CaseResult) -> bool:
    """Whether the machine held its speed across the case (drift within STEADY_DRIFT)."""
    return abs(model_drift(r)) <= STEADY_DRIFT


def is_model_bound(r: CaseResult) -> bool:
    """Whether the streams offered at least what the engine alone scores: only then is the
    model the bottleneck, and the ratio a measure of what the rest of the pipeline costs
    (below, the ratio is just the load)."""
    return r.load_factor >= 1.0


def steady_ratio(results: list[CaseResult]) -> dict[str, float] | None:
    """The ratio to the engine alone over the model-bound cases where the machine held its
    speed (`is_model_bound`, `is_steady`): what the throughput goal is judged on. None if none was."""
    ratios = [r.ratio_to_model for r in results if is_model_bound(r) and is_steady(r)]
    if not ratios:
        return None
    return {"cases": len(ratios), "of": len(results), "median": statistics.median(ratios),
            "min": min(ratios), "max": max(ratios)}


def print_table(results: list[CaseResult], front_end: list[FrontEndResult]) -> None:
    several_rounds = any(r.round for r in results)
    width = max((len(r.variant) for r in results), default=0) + 3 * several_rounds

    def variant_column(text: str) -> str:  # only with --vary or --rounds
        return f"{text:<{max(width, 7)}} " if width else ""

    head = variant_column("variant") + (
        f"{'N':>3} {'res':>6} {'load':>5} {'crops/s':>8} {'model/s':>8} {'drift':>6} {'ratio':>6} {'batch':>6} {'busy':>5} {'p50 s':>6} "
        f"{'p99 s':>6} {'p99 1st/last min':>16} {'fps/stream':>10} {'fair':>5} {'drop/str':>9} {'decode':>7} "
        f"{'faces':>6} {'engine':>7} {'loop':>6} {'other':>6} {'server':>6} {'RSS MB':>7} {'growth':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        fps = f"{min(r.analysed_fps_per_stream):.1f}-{max(r.analysed_fps_per_stream):.1f}"
        minutes = "-" if r.latency_p99_first_min_s is None else f"{r.latency_p99_first_min_s:.2f}/{r.latency_p99_last_min_s:.2f}"
        growth = "-" if r.rss_growth is None else f"{r.rss_growth:.3f}"
        cpu = r.cpu_cores_by_stage
        label = f"{r.variant} r{r.round + 1}" if several_rounds else r.variant
        ratio = f"{r.ratio_to_model:.2f}" if is_steady(r) else f"({r.ratio_to_model:.2f})"
        print(
            variant_column(label) + f"{r.streams:>3} {r.resolution:>6} {r.load_factor:>5.1f} {r.crops_per_s:>8.2f} "
            f"{r.model_only_crops_per_s:>8.2f} {model_drift(r):>+6.0%} "
            f"{ratio:>6} {r.mean_batch:>6.1f} {r.engine_busy:>5.2f} {r.latency_p50_s:>6.2f} {r.latency_p99_s:>6.2f} "
            f"{minutes:>16} {fps:>10} {r.fairness_max_dev:>5.2f} {max(r.frames_dropped_per_stream):>9} "
            f"{cpu.get('decode', 0):>7.3f} {cpu.get('faces', 0):>6.3f} {cpu.get('engine', 0):>7.3f} "
            f"{cpu.get('loop', 0):>6.3f} {cpu.get('other', 0):>6.3f} {r.rtsp_server_cores:>6.3f} {r.peak_rss_mb:>7.0f} {growth:>6}"
        )
    for f in front_end:
        what = f"one {f.resolution} stream" if f.streams == 1 else f"{f.streams} x {f.resolution}"
        stages = ", ".join(f"{g} {c:.3f}" for g, c in sorted(f.cpu_cores_by_stage.items()))
        print(
            f"front end (decode + detection + tracking + crops, no model), {what}: {f.cpu_cores:.3f} cores "
            f"({f.cpu_cores / f.streams:.3f} per stream: {stages}) at {f.analysed_fps:.2f} analysed fps per stream "
            f"(slowest {f.analysed_fps_min:.2f}); stream server {f.rtsp_server_cores:.3f}"
        )


def plot(results: list[CaseResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for res, variant in sorted({(r.resolution, r.variant) for r in results}):
        rs = [r for r in results if (r.resolution, r.variant) == (res, variant)]
        ns, name = sorted({r.streams for r in rs}), f"{res} {variant}".strip()

        def median(attr: str) -> list[float]:  # over rounds
            return [statistics.median(getattr(r, attr) for r in rs if r.streams == n) for n in ns]

        ax1.plot(ns, median("crops_per_s"), "o-", label=f"pipeline {name}")
        ax1.plot(ns, median("model_only_crops_per_s"), "x--", label=f"model only {name}")
        ax2.plot(ns, median("latency_p99_s"), "o-", label=f"p99 {name}")
        ax2.plot(ns, median("latency_p50_s"), "x--", label=f"p50 {name}")
    ax1.set(xlabel="streams", ylabel="analysed crops / s", title="Throughput")
    ax2.set(xlabel="streams", ylabel="frame arrival to score (s)", title="Latency")
    _save(fig, path)
    long = [r for r in results if r.seconds >= 150]
    if long:  # overload and soak runs: does latency grow with time?
        plot_timelines(long, path.with_name(path.stem + "-timeline.png"))


def plot_timelines(results: list[CaseResult], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for r in results:
        name = " ".join(filter(None, [f"{r.streams} x {r.resolution}", r.variant]))
        t = [row[0] + LATENCY_WINDOW_S / 2 for row in r.latency_timeline]
        ax1.plot(t, [row[3] for row in r.latency_timeline], "o-", ms=3, label=f"p99 {name}")
        ax1.plot(t, [row[2] for row in r.latency_timeline], "x--", ms=3, label=f"p50 {name}")
        ax2.plot(t, [row[1] for row in r.latency_timeline], "o-", ms=3, label=name)
    ax1.set(ylabel="frame arrival to score (s)", title=f"Latency and throughput per {LATENCY_WINDOW_S:g} s")
    ax2.set(xlabel="seconds into the measured part", ylabel="analysed crops / s")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    for ax in fig.axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def run_bench(
    cfg: Config, engine: Engine, streams: list[int], resolutions: list[str],
    seconds: float, warmup: float, out_dir: Path, video_dir: Path, front_end_seconds: float = 20.0,
    variants: dict[str, Config] | None = None, keyframe_every_s: float = 1.0, rounds: int = 1,
    variant_engines: dict[str, Engine] | None = None, front_end_streams: tuple[int, ...] = (1,),
    model_only_seconds: float = 8.0, server_kind: str = "rtsp",
) -> list[CaseResult]:
    """Every (resolution, stream count) case, once per variant (config) and round, the
    variants of a case back to back so that they see the same machine (its speed drifts by
    the minute), the rounds one after another so that a passing slowdown hits one round.
    `variant_engines`: an engine of its own for a variant that changes how the model runs."""
    variants = variants or {"": cfg}
    videos = sample_videos(video_dir, resolutions, keyframe_every_s)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[CaseResult] = []
    front_end: list[FrontEndResult] = []
    with EmbeddedRedis() as redis_server:
        server = SERVERS[server_kind](videos, out_dir, loop=True)
        server.start()
        try:
            for round_, res in itertools.product(range(rounds), resolutions):
                if front_end_seconds > 0 and round_ == 0:
                    for n in front_end_streams:
                        print(f"... front end alone, {n} stream(s) at {res}: {front_end_seconds:.0f} s", flush=True)
                        front_end.append(await run_front_end(cfg, server, res, front_end_seconds, warmup, n))
                for n, (label, case_cfg) in itertools.product(streams, variants.items()):
                    name = " ".join(filter(None, [res, label, f"round {round_ + 1}/{rounds}" if rounds > 1 else ""]))
                    print(f"... {n} stream(s) at {name}: {warmup:.0f} s warm-up + {seconds:.0f} s", flush=True)
                    case_engine = (variant_engines or {}).get(label, engine)
                    case = await run_case(
                        case_cfg, case_engine, server, redis_server.url, n, res, seconds, warmup, label, model_only_seconds
                    )
                    results.append(replace(case, round=round_))
        finally:
            server.stop()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    doc = {
        "benchmark": "pipeline",
        "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
        "engine": {"name": engine.meta.name, "backend": type(engine).__name__, "precision": engine.precision,
                   "concurrency": engine.concurrency, "threads_per_call": getattr(engine, "threads", None)},
        "analysis_fps": cfg.ingest.analysis_fps,
        "detect_every": cfg.detector.detect_every,
        "keyframe_every_s": keyframe_every_s,
        "server": server_kind,
        "rounds": rounds,
        "peak_rss_mb_process": peak_rss_mb(),
        "front_end": [asdict(f) for f in front_end],
        "ratio_steady": steady_ratio(results),
        "results": [asdict(r) for r in results],
    }
    (out_dir / f"pipeline-{stamp}.json").write_text(json.dumps(doc, indent=1))
    plot(results, out_dir / f"pipeline-{stamp}.png")
    print_table(results, front_end)
    if (steady := doc["ratio_steady"]) is not None:
        print(f"ratio to the engine alone over the {steady['cases']} of {steady['of']} cases where the model was the bottleneck "
              f"(load >= 1) and the machine held its speed (drift within {STEADY_DRIFT:.0%}; others in brackets): median {steady['median']:.2f}, "
              f"{steady['min']:.2f}-{steady['max']:.2f}")
    print(json.dumps({k: v for k, v in doc.items() if k != "results"} | {
        "results": [{k: v for k, v in asdict(r).items() if k not in ("rss_mb_timeline", "latency_timeline")} for r in results]
    }))
    print(f"wrote {out_dir}/pipeline-{stamp}.json and .png")
    return results
