"""What ingest costs per live stream: decode CPU and the latency it adds.

A sender in another process plays an H.264 clip (25 fps, one keyframe a second,
no B-frames, like a camera) in real time as FLV over TCP (RTMP's container: every
frame is a length-prefixed tag, so no format adds a frame of look-ahead); it records
when each frame's last byte left. A StreamSource opens tcp://127.0.0.1:PORT like any
URL, with the product's settings, and an analysis loop takes frames from the
newest-wins queue and has each one's RGB pixels made in the stream's own thread, as the
pipeline's detection thread does (with NVDEC, that is when a picture leaves the GPU).
`--streams N` runs N such pairs at once (N senders, N sources in this one process), to
see what many streams cost together: decode threads, the GIL, NVDEC sessions.
Reported per resolution, decoder and N:

- cpu_share: CPU seconds of this process (demux, decode, sampling, RGB conversion,
  hand-off) per wall second, as a share of one core, in all and per stream;
- analysed fps per stream (lowest, highest): whether every stream got its rate;
- start s: from starting the sources to every stream's first frame (left out of the rest);
- latency p50/p99: from the frame's last byte sent to the analysis loop holding it
  as RGB (loopback TCP, demux, decode, RGB, queue hand-off); the JSON also says when in
  the window the worst frame came, and how many came later than 500 ms and when.

`--hwaccel` takes ingest.hwaccel's values, plus `cuda-download-all`: NVDEC with every
decoded picture downloaded to system memory as it comes (FFmpeg's default, and
streamguard's before pictures stayed on the GPU until analysis takes them), for a side by
side. `--engine own-stream,default-stream` also runs a ViT-B engine (torch fp16, CUDA
graphs, random weights, `--engine-batch` crops a call) flat out on the GPU in a thread of
the same process, as a GPU host does, and reports its crops/s: `own-stream` is
TorchEngine as it is (its own non-blocking CUDA stream), `default-stream` puts its work
on the legacy default stream that FFmpeg's CUDA copies use (TorchEngine before). The
JSON also has each engine call's wall time and its thread's CPU time in it: what the
call waited for (the GPU, the GIL, a core) is the difference. `--torch-threads` and
`--switch-interval-ms` set the two process-wide knobs that decide how an engine thread
fares beside busy decoders: torch's intra-op threads (the staging copy runs on them)
and Python's GIL switch interval.

    .venv/bin/python benchmarks/bench_ingest.py [--seconds 20] [--analysis-fps 5] [--sizes 1280x720,1920x1080] \
        [--hwaccel none,cuda,cuda-download-all] [--streams 1,16] [--engine none,own-stream,default-stream] \
        [--torch-threads N] [--switch-interval-ms MS]

Prints a table and one JSON line; writes benchmarks/results/ingest.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import platform
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from fractions import Fraction
from unittest import mock
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from av.codec.hwaccel import HWAccel

from streamguard import metrics
from streamguard.config import IngestConfig, StreamConfig
from streamguard.ingest import LatestQueue, StreamSource
from streamguard.ingest import pyav_source as source_module
from streamguard.ingest.hwaccel import decoder_hwaccel
from streamguard.types import Frame
from streamguard.samples import render_frame
from lab.servers.flv_server import SocketFile

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamguard"
RESULTS = Path(__file__).with_name("results") / "ingest.json"
FPS = 25
CLIP_SECONDS = 10  # looped by the sender for as long as a run lasts
SENDER_SPARE_S = 60  # a sender plays until its receiver hangs up, or this long past the run at most
HWACCEL_MODES = ("none", "cuda", "auto", "cuda-download-all")
ENGINES = ("none", "own-stream", "default-stream")
LATE_MS = 500  # frames later than this are counted, with when in the window they came


def make_clip(width: int, height: int) -> Path:
    """10 s of the two-face sample at this size with sensor-like noise, H.264 at a camera's
    bitrate (~3 Mbit/s at 720p, ~6 at 1080p); cached."""
    path = CACHE / f"bench_ingest_{width}x{height}.mp4"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    noise = [rng.normal(0, 3, (height, width, 3)).astype(np.int16) for _ in range(7)]
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 3_000_000 if height <= 720 else 6_000_000
        stream.codec_context.gop_size, stream.codec_context.max_b_frames = FPS, 0
        stream.codec_context.time_base = Fraction(1, FPS)
        stream.options = {"preset": "veryfast", "tune": "zerolatency"}
        for i in tqdm(range(CLIP_SECONDS * FPS), desc=f"encoding {width}x{height} clip", leave=False):
            rgb = av.VideoFrame.from_ndarray(render_frame(i / FPS), format="rgb24").reformat(width, height).to_ndarray()
            rgb = np.clip(rgb + noise[i % len(noise)], 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    partial.replace(path)
    return path


def serve_clip(clip: str, seconds: float, ports: mp.Queue, sent_times: mp.Queue) -> None:
    """Sender process: accept one client, play the clip (looped) in real time as FLV until the
    client hangs up; report send times."""
    with av.open(clip) as src:
        video = src.streams.video[0]
        packets = [(bytes(p), p.pts, p.is_keyframe) for p in src.demux(video) if p.size]
        with socket.create_server(("127.0.0.1", 0)) as server:
            port = server.getsockname()[1]
            ports.put(port)
            conn, _ = server.accept()
        sent: dict[int, float] = {}  # stream ms -> unix time its last byte was sent
        # no_duration_filesize: the FLV trailer must not seek back (a socket cannot)
        out = av.open(SocketFile(conn), "w", format="flv", options={"flush_packets": "1", "flvflags": "no_duration_filesize"})
        stream = out.add_stream_from_template(video)
        start = time.monotonic() + 0.1
        frame = 0
        try:
            while frame / FPS < seconds + SENDER_SPARE_S:
                data, _, key = packets[frame % len(packets)]
                t = frame / FPS
                time.sleep(max(0.0, start + t - time.monotonic()))
                packet = av.Packet(data)
                packet.pts = packet.dts = frame
                packet.time_base, packet.stream, packet.is_keyframe = Fraction(1, FPS), stream, key
                out.mux(packet)
                sent[round(t * 1000)] = time.time()
                frame += 1
        except (OSError, av.FFmpegError):  # the receiver stopped first
            pass
    sent_times.put((port, sent))
    conn.close()


def packets_skipped(sources: list[StreamSource]) -> int:
    """Packets the sources skipped so far (the counter is per stream name, for the whole process)."""
    return int(sum(metrics.REGISTRY.get_sample_value("streamguard_packets_skipped_total", {"stream": s.stream.name}) or 0
                   for s in sources))


class EngineLoad:
    """A ViT-B engine scoring random crops flat out on the GPU in its own thread, as a GPU
    host's engine does beside its decoders; `totals` says what it has done so far."""

    def __init__(self, stream: str, batch: int) -> None:
        import torch

        from streamguard.inference.torch_engine import TorchEngine
        from streamguard.model import untrained_model

        self.engine = TorchEngine(untrained_model("base", seed=0), "fp16", device="cuda", cuda_graphs=True)
        if stream == "default-stream":  # the legacy default stream, as TorchEngine ran before it had its own
            self.engine._stream = torch.cuda.default_stream()
        self.crops = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
        self.engine.infer(self.crops)  # CUDA graph capture, outside the window
        self.torch_threads = torch.get_num_threads()  # the staging copy runs on these
        self.calls, self.call_s, self.call_cpu_s = 0, 0.0, 0.0  # the calls' wall time and the thread's CPU time in them
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-load", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            wall, cpu = time.perf_counter(), time.thread_time()
            self.engine.infer(self.crops)
            self.call_s += time.perf_counter() - wall
            self.call_cpu_s += time.thread_time() - cpu
            self.calls += 1

    def totals(self) -> tuple[int, int, float, float]:
        """(crops scored, calls, their wall seconds, the thread's CPU seconds in them) so far."""
        return self.calls * len(self.crops), self.calls, self.call_s, self.call_cpu_s

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.engine.close()


def download_every_picture(mode: str) -> HWAccel | None:
    """decoder_hwaccel as it was: the product's NVDEC settings, but every picture downloaded to
    system memory as it is decoded."""
    hwaccel = decoder_hwaccel(mode)
    if hwaccel is None:
        return None
    return HWAccel("cuda", allow_software_fallback=hwaccel.allow_software_fallback, options=dict(hwaccel.options),
                   is_hw_owned=False)


async def receive(ports: list[int], seconds: float, analysis_fps: float, hwaccel: str, engine: EngineLoad | None) -> dict:
    """Run one StreamSource per port on tcp://127.0.0.1:PORT, each with its own analysis loop;
    once every stream has delivered a frame, for `seconds`: what they cost together and when
    each stream's frames arrived. Start-up (opening, the first keyframe, NVDEC set-up) is
    left out of the window and reported as its own time."""
    cfg = IngestConfig(analysis_fps=analysis_fps, hwaccel="auto" if hwaccel == "cuda-download-all" else hwaccel)
    queues: list[LatestQueue] = [LatestQueue(1) for _ in ports]
    with ExitStack() as stack:
        if hwaccel == "cuda-download-all":
            stack.enter_context(mock.patch.object(source_module, "decoder_hwaccel", download_every_picture))
        sources = [StreamSource(StreamConfig(name=f"bench{i}", url=f"tcp://127.0.0.1:{port}"), cfg, queue)
                   for i, (port, queue) in enumerate(zip(ports, queues, strict=True))]
    # one thread per stream makes the RGB pixels, as each stream's detection thread does in the pipeline
    converters = [ThreadPoolExecutor(1, thread_name_prefix=f"rgb{i}") for i in range(len(ports))]
    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(source.run()) for source in sources]
    got: list[list[tuple[float, float]]] = [[] for _ in ports]  # per stream: (stream seconds, unix time the loop held it)
    started = time.monotonic()
    try:
        for queue in queues:
            await asyncio.wait_for(queue.get(), 30)
        cpu0, wall0, window_start = time.process_time(), time.monotonic(), time.time()
        decoded0 = [source.frames_decoded for source in sources]
        dropped0, skipped0 = sum(source.frames_dropped for source in sources), packets_skipped(sources)
        engine0 = engine.totals() if engine else (0, 0, 0.0, 0.0)
        deadline = wall0 + seconds

        async def analyse(queue: LatestQueue, converter: ThreadPoolExecutor, arrivals: list[tuple[float, float]]) -> None:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    frame = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    return
                await loop.run_in_executor(converter, Frame.rgb.fget, frame)
                arrivals.append((frame.pts, time.time()))

        await asyncio.gather(*(analyse(q, c, a) for q, c, a in zip(queues, converters, got, strict=True)))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        scored, calls, call_s, call_cpu_s = (np.subtract(engine.totals(), engine0) if engine else (0, 0, 0.0, 0.0))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for converter in converters:
            converter.shutdown()
    return {
        "cpu_share": cpu / wall,
        "decode_fps": [(s.frames_decoded - d0) / wall for s, d0 in zip(sources, decoded0, strict=True)],
        "analysed_fps": [len(a) / wall for a in got],
        "got": got,
        "startup_s": wall0 - started,
        "window_start": window_start,
        "dropped": sum(s.frames_dropped for s in sources) - dropped0,
        "skipped": packets_skipped(sources) - skipped0,
        "hw_decoding": [s.hw_decoding for s in sources],
        "engine_crops_per_s": scored / wall,
        # per engine call: its wall time, and the CPU time of its thread in it (the rest is waiting: GPU, GIL, cores)
        "engine_ms_per_call": 1000 * call_s / calls if calls else None,
        "engine_cpu_ms_per_call": 1000 * call_cpu_s / calls if calls else None,
    }


def bench_one(width: int, height: int, seconds: float, analysis_fps: float, hwaccel: str = "none", streams: int = 1,
              engine: str = "none", engine_batch: int = 64) -> dict:
    clip = make_clip(width, height)
    load = None if engine == "none" else EngineLoad(engine, engine_batch)
    ctx = mp.get_context("spawn")
    ports, sent_q = ctx.Queue(), ctx.Queue()
    senders = [ctx.Process(target=serve_clip, args=(str(clip), seconds, ports, sent_q), daemon=True) for _ in range(streams)]
    for sender in senders:
        sender.start()
    try:
        port_list = [ports.get(timeout=60) for _ in senders]
        run = asyncio.run(receive(port_list, seconds, analysis_fps, hwaccel, load))
        sent = dict(sent_q.get(timeout=30) for _ in senders)  # port -> {stream ms: unix time its last byte left}
    finally:
        if load is not None:
            load.close()
        for sender in senders:
            sender.join(timeout=10)
            if sender.is_alive():
                sender.kill()
    timed = np.array([  # (arrived s into the window, latency ms) per measured frame
        (arrived - run["window_start"], (arrived - sent[port][round(pts * 1000)]) * 1000)
        for port, arrivals in zip(port_list, run["got"], strict=True) for pts, arrived in arrivals
        if round(pts * 1000) in sent[port]
    ])
    latency = timed[:, 1]
    late = timed[latency > LATE_MS, 0]
    analysed = run["analysed_fps"]
    return {
        "resolution": f"{width}x{height}",
        "hwaccel": hwaccel,
        "streams": streams,
        "decoded_on_gpu": all(run["hw_decoding"]),
        "engine": engine,
        "engine_batch": engine_batch if load else None,
        "engine_crops_per_s": round(run["engine_crops_per_s"], 1) if load else None,
        "engine_ms_per_call": run["engine_ms_per_call"] and round(run["engine_ms_per_call"], 2),
        "engine_cpu_ms_per_call": run["engine_cpu_ms_per_call"] and round(run["engine_cpu_ms_per_call"], 2),
        "torch_threads": load.torch_threads if load else None,
        "switch_interval_ms": round(sys.getswitchinterval() * 1000, 3),
        "fps": FPS,
        "analysis_fps": analysis_fps,
        "seconds": seconds,
        "cpu_share_of_one_core": round(run["cpu_share"], 3),
        "cpu_per_stream": round(run["cpu_share"] / streams, 4),
        "startup_s": round(run["startup_s"], 2),
        "decode_fps": round(float(np.mean(run["decode_fps"])), 1),
        "analysed_fps_per_stream": [round(min(analysed), 2), round(max(analysed), 2)],
        "frames_measured": int(latency.size),
        "latency_ms_p50": round(float(np.percentile(latency, 50)), 1),
        "latency_ms_p99": round(float(np.percentile(latency, 99)), 1),
        "latency_ms_max": round(float(latency.max()), 1),
        "worst_at_s": round(float(timed[latency.argmax(), 0]), 2),  # when in the window the worst frame arrived
        f"frames_over_{LATE_MS}ms": int(late.size),
        f"frames_over_{LATE_MS}ms_at_s": [round(float(late.min()), 2), round(float(late.max()), 2)] if late.size else None,
        "frames_dropped": run["dropped"],
        "packets_skipped": run["skipped"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    parser.add_argument("--analysis-fps", type=float, default=5.0, help="frames sampled per second (the product default)")
    parser.add_argument("--sizes", default="1280x720,1920x1080")
    parser.add_argument("--hwaccel", default="none", help=f"decoders to run side by side, of {', '.join(HWACCEL_MODES)}")
    parser.add_argument("--streams", default="1", help="streams at once in this process, e.g. 1,16 (each its own sender)")
    parser.add_argument("--engine", default="none", help=f"a CUDA engine beside the streams, of {', '.join(ENGINES)}")
    parser.add_argument("--engine-batch", type=int, default=64, help="crops per engine call")
    parser.add_argument("--torch-threads", type=int, help="torch's intra-op threads for the engine (default: torch's)")
    parser.add_argument("--switch-interval-ms", type=float,
                        help="Python's GIL switch interval (default 5 ms): how long a thread waiting for the GIL waits")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    for name, values, allowed in (("--hwaccel", args.hwaccel, HWACCEL_MODES), ("--engine", args.engine, ENGINES)):
        if unknown := set(values.split(",")) - set(allowed):
            parser.error(f"{name}: unknown {', '.join(sorted(unknown))} (of {', '.join(allowed)})")
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    cases = [(w, h, mode, int(n), engine) for w, h in sizes for n in args.streams.split(",")
             for engine in args.engine.split(",") for mode in args.hwaccel.split(",")]
    results = [bench_one(w, h, args.seconds, args.analysis_fps, mode, n, engine, args.engine_batch)
               for w, h, mode, n, engine in tqdm(cases, desc="cases")]
    head = (f"{'resolution':<10} {'streams':>7} {'decoder':>23} {'engine':>14} {'crops/s':>7} {'call ms (cpu)':>13} {'cpu (1 core)':>12} "
            f"{'per stream':>10} {'decode fps':>10} {'analysed fps':>12} {'start s':>7} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'max ms':>7} {'worst at s':>10} {'>500 ms':>7} {'frames':>6}")
    print("\n" + head)
    for r in results:
        low, high = r["analysed_fps_per_stream"]
        decoder = f"{'GPU' if r['decoded_on_gpu'] else 'CPU'} ({r['hwaccel']})"
        crops = "" if r["engine_crops_per_s"] is None else f"{r['engine_crops_per_s']:.0f}"
        call = "" if r["engine_ms_per_call"] is None else f"{r['engine_ms_per_call']:.1f} ({r['engine_cpu_ms_per_call']:.1f})"
        print(
            f"{r['resolution']:<10} {r['streams']:>7} {decoder:>23} {r['engine']:>14} {crops:>7} {call:>13} "
            f"{r['cpu_share_of_one_core']:>12.1%} {r['cpu_per_stream']:>10.1%} {r['decode_fps']:>10.1f} "
            f"{f'{low:.2f}-{high:.2f}':>12} {r['startup_s']:>7.2f} {r['latency_ms_p50']:>7.1f} "
            f"{r['latency_ms_p99']:>7.1f} {r['latency_ms_max']:>7.1f} {r['worst_at_s']:>10.2f} "
            f"{r[f'frames_over_{LATE_MS}ms']:>7} {r['frames_measured']:>6}"
        )
    summary = {"bench": "ingest", "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
               "av": av.__version__, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
