"""What the live console costs the server: CPU and bytes per open stream picture and for the alert
feed, at 1, 4 and 16 open pictures; and that with no viewer the pipeline's figures do not change.

Runs `streamguard run --http` as a user does (a child process, so its CPU is the server's
alone) on S generated two-face RTSP streams (lab/servers/rtsp.py, the tiny model, threshold 0
so the feed carries alerts), then plays viewers from this process with plain HTTP clients
polling as the page does: each open picture GET .../snapshot.jpg then waits 1 s; a page
reads the feed (server-sent events) and GET /console/api/streams every 2 s.

Phases, each `--seconds` long after `--settle`: the console off (console.enabled false) and
on with no viewer (the same run twice: the pipeline's analysed fps and CPU side by side);
then, console on, the feed alone and k open pictures for each k of `--opens`. The server's
CPU is read from /proc (all its threads). On a shared or saturated machine the
difference between two phases is noisy (the pipeline does less when it gets less), so
the cost of one picture is also measured apart: `draw` on a real frame, timed in this
process (OpenCV's threads included).

    .venv/bin/python benchmarks/bench_console.py [--streams 16] [--opens 1,4,16] [--seconds 20] \\
        [--resolution 720p] [--fps 0.5] [--out benchmarks/results/console.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import av
import numpy as np
import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lab.bench.pipeline import sample_videos
from lab.servers.rtsp import RtspServer
from streamguard.config import ConsoleConfig
from streamguard.console.snapshots import draw
from streamguard.types import Face, Frame
from streamguard.redis.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "console.json"
TOKEN = "bench-console"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PICTURE_S, STREAMS_S = 1.0, 2.0  # the page's polling (console.js PICTURE_MS, STREAMS_MS)


def draw_cost(video: Path, cfg: ConsoleConfig, count: int = 200) -> dict:
    """CPU (this process, OpenCV's threads included) and bytes of one picture, drawn `count` times from a real
    frame of `video` with two faces boxed: the console's own cost, apart from any load on the machine."""
    with av.open(str(video)) as container:
        picture = next(container.decode(video=0))
        frame = Frame("bench", 0.0, time.time(), picture.to_ndarray(format="rgb24"))
    w, h = frame.size
    faces = []
    for track, (x0, y0, x1, y1) in enumerate(((0.2, 0.3, 0.35, 0.6), (0.6, 0.2, 0.75, 0.5))):
        box = np.array([x0 * w, y0 * h, x1 * w, y1 * h], dtype=np.float32)
        faces.append(Face("bench", track, box, box / np.array([w, h, w, h], dtype=np.float32), 0.9,
                          np.zeros((224, 224, 3), np.uint8), 0.0, time.time()))
    scores = {0: 0.2, 1: 0.8}
    draw(frame, faces, scores, 0.5, cfg.snapshot_width, cfg.jpeg_quality)  # warm
    start = time.process_time()
    for _ in range(count):
        jpeg = draw(frame, faces, scores, 0.5, cfg.snapshot_width, cfg.jpeg_quality)
    ms = 1000 * (time.process_time() - start) / count
    return {"frame": f"{w}x{h}", "width": cfg.snapshot_width, "quality": cfg.jpeg_quality, "cpu_ms": round(ms, 2),
            "kbytes": round(len(jpeg) / 1000, 1)}


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
    return f"{name}, {os.cpu_count()} CPUs visible"


class Server:
    """`streamguard run --http` in a child process, on the given streams."""

    def __init__(self, streams: dict[str, str], fps: float, console: bool, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "model": {"arch": "tiny"},
            "ingest": {"analysis_fps": fps},
            "scoring": {"threshold": 0.0, "scores_interval_s": 1.0},
            "http": {"bind": f"127.0.0.1:{self.port}", "token": TOKEN},
            "console": {"enabled": console},
            "streams": [{"name": n, "url": u} for n, u in streams.items()],
        }
        path = workdir / f"console-{'on' if console else 'off'}.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamguard.cli", "run", "--config", str(path), "--log-level", "WARNING"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    async def wait_live(self, http: aiohttp.ClientSession, count: int, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                async with http.get(self.url + "/healthz") as resp:
                    if resp.status == 200 and (await resp.json())["live"] >= count:
                        return
            except aiohttp.ClientConnectionError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited ({self.proc.returncode})")
            await asyncio.sleep(0.5)
        raise SystemExit(f"{count} streams not live within {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def analysed(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url + "/streams", headers=AUTH) as resp:
        return sum(s["frames_analysed"] for s in (await resp.json())["streams"])


async def snapshot_cpu(http: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    """(sum, count) of streamguard_console_snapshot_cpu_seconds."""
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    found = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name == "streamguard_console_snapshot_cpu_seconds":
            for sample in family.samples:
                for key in found:
                    if sample.name.endswith("_" + key):
                        found[key] = sample.value
    return found["sum"], found["count"]


async def picture_viewer(http: aiohttp.ClientSession, url: str, name: str, counts: dict[str, int]) -> None:
    while True:
        async with http.get(f"{url}/console/api/streams/{name}/snapshot.jpg", headers=AUTH) as resp:
            counts["picture_bytes"] += len(await resp.read())
            counts["pictures"] += resp.status == 200
        await asyncio.sleep(PICTURE_S)


async def page(http: aiohttp.ClientSession, url: str, counts: dict[str, int]) -> None:
    """The page without pictures: the feed (read as it comes) and the stream list every 2 s."""

    async def feed() -> None:
        async with http.get(url + "/console/api/feed", headers=AUTH, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            async for chunk in resp.content.iter_any():
                counts["feed_bytes"] += len(chunk)
                counts["feed_events"] += chunk.count(b"\n\n")

    async def listing() -> None:
        while True:
            async with http.get(url + "/console/api/streams", headers=AUTH) as resp:
                counts["list_bytes"] += len(await resp.read())
            await asyncio.sleep(STREAMS_S)

    await asyncio.gather(feed(), listing())


async def measure(http: aiohttp.ClientSession, server: Server, label: str, seconds: float, opens: int | None,
                  names: list[str]) -> dict:
    counts = {"picture_bytes": 0, "pictures": 0, "feed_bytes": 0, "feed_events": 0, "list_bytes": 0}
    tasks = []
    if opens is not None:
        tasks.append(asyncio.create_task(page(http, server.url, counts)))
        tasks += [asyncio.create_task(picture_viewer(http, server.url, n, counts)) for n in names[:opens]]
        await asyncio.sleep(3.0)  # viewers connected, pictures watched: measure the steady state
        for key in counts:
            counts[key] = 0
    cpu0, frames0, (draw0, drawn0), t0 = server.cpu(), await analysed(http, server.url), await snapshot_cpu(http, server.url), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, frames1, (draw1, drawn1), t1 = server.cpu(), await analysed(http, server.url), await snapshot_cpu(http, server.url), time.monotonic()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    span = t1 - t0
    return {
        "phase": label, "open_pictures": opens or 0, "seconds": round(span, 1),
        "server_cpu_cores": round((cpu1 - cpu0) / span, 3),
        "analysed_fps_per_stream": round((frames1 - frames0) / span / len(names), 2),
        "pictures_per_s": round(counts["pictures"] / span, 2),
        "picture_kbytes_per_s": round(counts["picture_bytes"] / span / 1000, 1),
        "draws_per_s": round((drawn1 - drawn0) / span, 2),
        "draw_ms_cpu": round(1000 * (draw1 - draw0) / (drawn1 - drawn0), 2) if drawn1 > drawn0 else None,
        "feed_kbytes_per_s": round(counts["feed_bytes"] / span / 1000, 2),
        "feed_events_per_s": round(counts["feed_events"] / span, 2),
        "list_kbytes_per_s": round(counts["list_bytes"] / span / 1000, 2),
    }


async def run(args: argparse.Namespace, streams: dict[str, str], workdir: Path) -> list[dict]:
    names = list(streams)
    rows = []
    async with aiohttp.ClientSession() as http:
        for console in (False, True):
            server = Server(streams, args.fps, console, workdir)
            try:
                await server.wait_live(http, len(streams))
                await asyncio.sleep(args.settle)
                rows.append(await measure(http, server, f"console {'on' if console else 'off'}, no viewer", args.seconds, None, names))
                if console:
                    rows.append(await measure(http, server, "feed + list (a page, no picture)", args.seconds, 0, names))
                    for k in args.opens:
                        rows.append(await measure(http, server, f"page + {k} open picture(s)", args.seconds, k, names))
            finally:
                server.stop()
    base = next(r for r in rows if r["phase"].startswith("console on, no viewer"))
    page_row = next(r for r in rows if r["open_pictures"] == 0 and r["phase"].startswith("feed"))
    for row in rows:
        if row["open_pictures"]:
            extra = row["server_cpu_cores"] - page_row["server_cpu_cores"]
            row["cpu_ms_per_s_per_picture"] = round(1000 * extra / row["open_pictures"], 1)
            row["kbytes_per_s_per_picture"] = round(row["picture_kbytes_per_s"] / row["open_pictures"], 1)
    page_row["cpu_ms_per_s_page"] = round(1000 * (page_row["server_cpu_cores"] - base["server_cpu_cores"]), 1)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--opens", type=lambda s: [int(v) for v in s.split(",")], default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--resolution", default="720p", choices=["720p", "1080p"])
    parser.add_argument("--fps", type=float, default=0.5,
                        help="ingest.analysis_fps of every stream (0.5: keyframes only, so 16 streams fit 2 cores)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if max(args.opens) > args.streams:
        raise SystemExit("--opens cannot exceed --streams")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        videos = sample_videos(ROOT / "benchmarks" / "results" / "videos", ["720p", "1080p"])
        video = videos[args.resolution]
        drawing = [draw_cost(videos[res], ConsoleConfig()) for res in ("720p", "1080p")]
        rtsp = RtspServer({f"cam{i}": video for i in range(args.streams)}, workdir)
        rtsp.start()
        try:
            streams = {f"cam{i}": rtsp.url(f"cam{i}") for i in range(args.streams)}
            rows = asyncio.run(run(args, streams, workdir))
        finally:
            rtsp.stop()
    result = {"cpu": cpu_name(), "load_average": os.getloadavg(), "streams": args.streams, "resolution": args.resolution,
              "analysis_fps": args.fps, "seconds": args.seconds, "drawing": drawing, "rows": rows}
    cols = ["phase", "server_cpu_cores", "analysed_fps_per_stream", "pictures_per_s", "draw_ms_cpu",
            "cpu_ms_per_s_per_picture", "kbytes_per_s_per_picture", "feed_kbytes_per_s", "list_kbytes_per_s"]
    print(f"{result['cpu']}; load average {result['load_average']}")
    for d in drawing:
        print(f"one picture from a {d['frame']} frame at width {d['width']}: {d['cpu_ms']} ms CPU, {d['kbytes']} kB")
    print(f"{args.streams} x {args.resolution} streams at {args.fps} fps analysed, tiny model")
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row.get(c, "")) for c in cols))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
