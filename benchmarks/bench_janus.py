"""What watching a Janus VideoRoom costs per participant: subscriber mode against RTP forwarding.

A real Janus (Debian's `janus`) and N real WebRTC publishers (aiortc, in another
process, each sending the two-face sample: VP8, 640x360, 10 fps) in a private network
namespace (lab/netns.py; root needed). This process then receives every publisher's
video in one of two ways and hands decoded frames to a newest-wins queue that a consumer
drains at `--analysis-fps`, as the pipeline's analysis loop does (no model: what differs
between the modes is ingest):

- subscriber: the product's connector (JanusVideoRoom.discover + ParticipantSource):
  a WebRTC subscriber per publisher, aiortc answering Janus's offer (ICE, DTLS-SRTP,
  jitter buffer, VP8 decoding in aiortc's thread);
- rtp_forward: VideoRoom's `rtp_forward` sends each publisher's plain RTP to a UDP port
  here; FFmpeg (PyAV) reads an SDP describing it, in a thread per participant (the
  way an RTP-forwarding connector would receive it; not built into streamguard).

Reported per mode and N: cpu_share (CPU seconds of this process per wall second, share
of one core) in all and per participant, over `--seconds` once every participant is
live; Janus's own CPU per participant; first_frame_s: from the moment the publisher is
in the room (its publish answered) to the first decoded frame here, median and worst
(subscriber mode includes the discovery poll, `--poll` s).

    .venv/bin/python benchmarks/bench_janus.py [--participants 1,4] [--seconds 20] [--modes subscriber,rtp_forward]

Prints a table and one JSON line; writes benchmarks/results/janus.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.netns import PrivateNetwork  # noqa: E402
from lab.servers.janus import JanusPublisher, JanusServer, LoopTrack, free_port, sample_loop, videoroom_request  # noqa: E402

ROOM = 1234


# --- publishers (a child process: their CPU is not ours) -------------------------


async def publish_forever(url: str, count: int) -> None:
    from streamguard.config import WebRTCConfig
    from streamguard.ingest import ice

    ice.configure(WebRTCConfig())
    frames = sample_loop()
    publishers = []
    for i in range(count):
        publisher = JanusPublisher(url, ROOM, f"p{i}", LoopTrack(frames))
        await publisher.publish()
        publishers.append(publisher)
        print(json.dumps({"display": publisher.display, "id": publisher.publisher_id, "published": time.time()}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    for publisher in publishers:
        await publisher.close()


def start_publishers(url: str, count: int) -> tuple[subprocess.Popen, dict[str, float]]:
    proc = subprocess.Popen([sys.executable, __file__, "--publish", url, str(count)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    published = {}
    assert proc.stdout is not None
    for _ in range(count):
        line = json.loads(proc.stdout.readline())
        published[str(line["id"])] = line["published"]
    return proc, published


# --- the two ways to receive ------------------------------------------------------


class Drain:
    """A consumer taking the newest frame at `fps`, as the analysis loop does."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.first: dict[str, float] = {}
        self.counters: list = []  # callables: frames decoded so far, one per participant
        self.errors: list[str] = []

    async def run(self, name: str, queue) -> None:
        from streamguard.ingest.latest import QueueClosed

        while True:
            try:
                frame = await queue.get()
            except QueueClosed:
                return
            self.first.setdefault(name, time.time())
            frame.rgb  # noqa: B018 - the pixels the detector would read
            await asyncio.sleep(1 / self.fps)


async def receive_subscribed(url: str, published: dict[str, float], drain: Drain, poll: float) -> list[asyncio.Task]:
    from streamguard.config import IngestConfig, JanusConfig, StreamConfig, WebRTCConfig
    from streamguard.connectors.janus import JanusVideoRoom
    from streamguard.connectors.source import ParticipantSource
    from streamguard.ingest.latest import LatestQueue

    connector = JanusVideoRoom(JanusConfig(url=url, rooms=[str(ROOM)]), WebRTCConfig())
    tasks: list[asyncio.Task] = []
    seen: set[str] = set()
    ingest = IngestConfig(analysis_fps=drain.fps, retry_first_open=True)
    while len(seen) < len(published):
        for p in await connector.discover():
            if p.publisher_id in seen:
                continue
            seen.add(p.publisher_id)
            queue = LatestQueue(1)
            source = ParticipantSource(StreamConfig(name=f"p{p.publisher_id}", url="janus+x"), ingest, queue, connector, p)
            drain.counters.append(lambda source=source: source.frames_decoded)
            tasks += [asyncio.create_task(source.run()), asyncio.create_task(drain.run(p.publisher_id, queue))]
        await asyncio.sleep(poll)
    tasks.append(asyncio.create_task(_hold(connector)))
    return tasks


async def _hold(connector) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await connector.close()


SDP = """v=0
o=- 0 0 IN IP4 {host}
s=janus rtp_forward
c=IN IP4 {host}
t=0 0
m=video {port} RTP/AVP 96
a=rtpmap:96 VP8/90000
a=recvonly
"""


def read_forwarded(sdp: Path, name: str, drain: Drain, decoded: list[int], stop: threading.Event) -> None:
    """FFmpeg reading one forwarded RTP stream: decode all, keep `fps` (as the PyAV source does)."""
    try:
        _read_forwarded(sdp, name, drain, decoded, stop)
    except Exception as err:  # noqa: BLE001 - reported with the result
        drain.errors.append(f"{name}: {err!r}")


def _read_forwarded(sdp: Path, name: str, drain: Drain, decoded: list[int], stop: threading.Event) -> None:
    import av

    from streamguard.ingest.pyav_source import LIVE_OPTIONS

    options = {**LIVE_OPTIONS, "protocol_whitelist": "file,udp,rtp", "reorder_queue_size": "0"}  # the PyAV source's
    container = av.open(str(sdp), format="sdp", options=options, timeout=(10, 2))
    due = 0.0
    try:
        for frame in container.decode(video=0):
            if stop.is_set():
                return
            now = time.monotonic()
            drain.first.setdefault(name, time.time())
            decoded[0] += 1
            if now >= due:
                frame.to_ndarray(format="rgb24")
                due = now + 1 / drain.fps
    finally:
        container.close()


async def receive_forwarded(url: str, published: dict[str, float], drain: Drain, host: str, workdir: Path,
                            stop: threading.Event, threads: list[threading.Thread]) -> None:
    for pid in published:
        port = free_port() & ~1  # RTP on an even port
        sdp = workdir / f"{pid}.sdp"
        sdp.write_text(SDP.format(host=host, port=port))
        decoded = [0]
        drain.counters.append(lambda decoded=decoded: decoded[0])
        thread = threading.Thread(target=read_forwarded, args=(sdp, pid, drain, decoded, stop), daemon=True)
        thread.start()  # a thread each: the default executor has too few workers for many participants
        threads.append(thread)
        await asyncio.sleep(0.3)  # FFmpeg binds its port while opening the SDP
        reply = await videoroom_request(url, {"request": "rtp_forward", "room": ROOM, "publisher_id": int(pid),
                                              "host": host, "host_family": "ipv4",
                                              "streams": [{"mid": "0", "port": port, "pt": 96}]})
        if "error" in reply:
            raise RuntimeError(f"rtp_forward: {reply['error']}")
        published[pid] = time.time()  # forwarding starts now: count the first frame from here


# --- measuring --------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_case(mode: str, n: int, seconds: float, fps: float, poll: float, workdir: Path) -> dict:
    janus = JanusServer(workdir / f"{mode}-{n}", rooms={ROOM: {"publishers": max(16, n)}})
    janus.workdir.mkdir(parents=True, exist_ok=True)
    janus.start()
    publishers, published = start_publishers(janus.url, n)
    drain, stop, tasks, threads = Drain(fps), threading.Event(), [], []
    try:
        if mode == "subscriber":
            tasks = await receive_subscribed(janus.url, published, drain, poll)
        else:
            await receive_forwarded(janus.url, published, drain, PrivateNetwork.address, workdir, stop, threads)
        deadline = time.monotonic() + 30
        while len(drain.first) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mode}: only {len(drain.first)} of {n} participants gave a frame within 30 s "
                                   f"{drain.errors}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(2)  # settle
        frames0 = [count() for count in drain.counters]
        cpu0, janus0, wall0 = time.process_time(), process_cpu(janus.pid), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, janus_cpu, wall = time.process_time() - cpu0, process_cpu(janus.pid) - janus0, time.monotonic() - wall0
        fps_each = [(count() - before) / wall for count, before in zip(drain.counters, frames0)]
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert publishers.stdin is not None
        publishers.stdin.close()
        publishers.wait(timeout=20)
        janus.stop()  # ends the forwarded streams: the FFmpeg reads time out and their threads see `stop`
        for thread in threads:
            thread.join(timeout=15)
    first = [drain.first[pid] - published[pid] for pid in published]
    return {
        "mode": mode, "participants": n, "seconds": round(wall, 1),
        "cpu_share": round(cpu / wall, 3), "cpu_share_per_participant": round(cpu / wall / n, 3),
        "janus_cpu_share_per_participant": round(janus_cpu / wall / n, 3),
        "first_frame_s_median": round(statistics.median(first), 2), "first_frame_s_max": round(max(first), 2),
        "received_fps_min": round(min(fps_each), 1), "received_fps_max": round(max(fps_each), 1),
    }


def cpu_name() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


async def main_async(args: argparse.Namespace) -> list[dict]:
    from streamguard.config import WebRTCConfig
    from streamguard.ingest import ice

    ice.configure(WebRTCConfig())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.participants:
            for mode in args.modes:
                row = await one_case(mode, n, args.seconds, args.analysis_fps, args.poll, Path(tmp))
                print(row, flush=True)
                rows.append(row)
    return rows


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--publish":
        asyncio.run(publish_forever(sys.argv[2], int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4])
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["subscriber", "rtp_forward"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--analysis-fps", type=float, default=5.0)
    parser.add_argument("--poll", type=float, default=0.5, help="discovery interval (connector poll_interval_s)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "janus.json")
    args = parser.parse_args()
    if (why := PrivateNetwork.available()) is not None:
        sys.exit(f"bench_janus: {why}")
    net = PrivateNetwork().create()
    net.enter()
    try:
        rows = asyncio.run(main_async(args))
    finally:
        net.delete()
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "analysis_fps": args.analysis_fps,
              "video": "VP8 640x360 10 fps (two-face sample)", "rows": rows}
    print(f"\nCPU: {result['cpu']} ({result['cores']} cores)")
    print(f"{'mode':<12} {'N':>3} {'cpu/participant':>16} {'participants/core':>18} {'janus cpu/p':>12} "
          f"{'first frame s (med/max)':>24} {'fps in (min/max)':>17}")
    for r in rows:
        per = r["cpu_share_per_participant"]
        print(f"{r['mode']:<12} {r['participants']:>3} {per:>16.3f} {(1 / per if per else 0):>18.1f} "
              f"{r['janus_cpu_share_per_participant']:>12.3f} {r['first_frame_s_median']:>17.2f} / {r['first_frame_s_max']:<4.2f} "
              f"{r['received_fps_min']:>10.1f} / {r['received_fps_max']:.1f}")
    print(json.dumps(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
