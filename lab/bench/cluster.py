"""`streamguard bench cluster`: the Ray cluster path against `run --processes`, and failover time.

On one machine: several Ray nodes (a head and `--nodes` workers of one CPU each, one
shard per node), the same streams (real RTSP, looping the two-face sample) and the
same config run first through `streamguard run --ray`, then through `streamguard run
--processes NODES`, each for `--seconds` after every stream is live. Both are the real
commands, each behind its front door; the frames analysed per second come from GET
/streams. The ratio (cluster / processes) is the cluster path's cost at the same load.
Then a worker node is removed hard and we time (a) until the director has given its
streams to a live shard (a higher epoch in Redis) and (b) until each of them is live
again there (a `live` stream event with the new epoch in the Redis Stream).

Everything runs inside a network namespace the bench makes (lab/netns.py): Ray binds
this machine's interface address otherwise. Needs root.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

STREAMGUARD = str(Path(sys.executable).parent / "streamguard")
GCS_PORT = 25011
REDIS_PORT = 26389
TOKEN = "bench-cluster-token-0123456789abcdef"
PREFIX = "bench:cluster:"
STREAM_KEY = "bench:cluster:events"
NAMESPACE = "streamguard-bench"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    return platform.processor() or "unknown"


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)
    return value


def get(front: str, path: str) -> Any:
    request = urllib.request.Request(f"http://{front}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def analysed(front: str, names: set[str]) -> tuple[int, int] | None:
    """(frames analysed so far, streams live) over `names`, from the front door."""
    listing = get(front, "/streams")
    if listing is None:
        return None
    mine = [s for s in listing["streams"] if s["name"] in names]
    return sum(s["frames_analysed"] for s in mine), sum(1 for s in mine if s["state"] == "live")


def measure(front: str, names: set[str], seconds: float, warmup: float = 5.0) -> dict[str, float]:
    """Frames analysed per second over `seconds`, once every stream is live and `warmup` has passed."""
    wait_until(lambda: (a := analysed(front, names)) and a[1] == len(names), 300, "every stream live")
    time.sleep(warmup)  # a measurement window, not a wait for a condition
    first = analysed(front, names)
    started = time.monotonic()
    time.sleep(seconds)
    last = analysed(front, names)
    elapsed = time.monotonic() - started
    assert first is not None and last is not None
    fps = (last[0] - first[0]) / elapsed
    return {"analysed_fps": round(fps, 2), "per_stream_fps": round(fps / len(names), 2)}


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([STREAMGUARD, "run", *args], stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_cluster_bench(streams: int, nodes: int, fps: float, seconds: float, video: Path) -> dict[str, Any]:
    import ray
    import redis
    from lab.netns import PrivateNetwork
    from lab.raycluster import start_cluster, stop_cluster
    from lab.servers.rtsp import RtspServer
    from streamguard.events import StreamEventV1, parse_any_event
    from streamguard.redis.embedded import EmbeddedRedis, find_redis_server

    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    log = folder / "streamguard.log"
    names = {f"s{i}" for i in range(streams)}
    namespace = PrivateNetwork().create()
    namespace.enter()
    undo: list[Callable[[], None]] = [namespace.delete]
    try:
        server = EmbeddedRedis(port=REDIS_PORT, binary=find_redis_server(prefer_system=True)).start()
        undo.append(server.close)
        rtsp = RtspServer({f"cam{i}": video for i in range(streams)}, folder)
        rtsp.start()
        undo.append(rtsp.stop)
        config = folder / "bench.yaml"
        config.write_text(json.dumps({
            "redis": {"stream_key": STREAM_KEY, "channel": "bench:cluster:alerts"},
            "model": {"arch": "tiny"}, "scoring": {"threshold": 0.0}, "ingest": {"analysis_fps": fps},
            "cluster": {"shards": nodes, "shard_cpus": 1, "lease_s": 3.0, "key_prefix": PREFIX, "namespace": NAMESPACE},
            "http": {"token": TOKEN},
            "streams": [{"name": f"s{i}", "url": rtsp.url(f"cam{i}")} for i in range(streams)],
        }))
        common = ["--config", str(config), "--redis-url", server.url, "--log-level", "WARNING"]
        result: dict[str, Any] = {"cpu": cpu_name(), "streams": streams, "nodes": nodes, "shards": nodes, "target_fps": fps,
                                  "seconds": seconds, "model": "tiny (untrained)"}

        # --- run --processes NODES: the same streams and config, no Ray
        front = "127.0.0.1:18181"
        proc = start(["--processes", str(nodes), "--http", front, *common], log)
        try:
            result["processes"] = measure(front, names, seconds)
        finally:
            stop(proc)

        # --- run --ray: a head (no CPUs) and NODES worker nodes of one CPU, one shard each
        cluster, workers = start_cluster(GCS_PORT, workers=nodes)
        undo.append(lambda: stop_cluster(cluster))
        ray.init(address=cluster.address, namespace=NAMESPACE, logging_level="WARNING", log_to_driver=False)
        undo.append(ray.shutdown)
        front = "127.0.0.1:18182"
        proc = start(["--ray", cluster.address, "--http", front, *common], log)
        undo.append(lambda: stop(proc))
        result["cluster"] = measure(front, names, seconds)
        result["cluster_over_processes"] = round(result["cluster"]["analysed_fps"] / max(result["processes"]["analysed_fps"], 1e-9), 3)

        # --- failover: remove the node of the first shard hard
        director = ray.get_actor("streamguard-director", namespace=NAMESPACE)
        shards = ray.get(director.shards.remote())
        victim = next(s for s in shards if s["live"] and s["streams"])
        node = next(w for w in workers if w.node_id == victim["node"])
        before = ray.get(director.assignments.remote())
        moved = victim["streams"]
        client = redis.Redis.from_url(server.url)
        undo.append(client.close)
        last_id = (client.xrevrange(STREAM_KEY, count=1) or [(b"0-0", None)])[0][0]
        killed = time.monotonic()
        cluster.remove_node(node, allow_graceful=False)

        def reassigned() -> bool:
            now = ray.get(director.assignments.remote())
            return all(now.get(s, {}).get("epoch", 0) > before[s]["epoch"] for s in moved)

        wait_until(reassigned, 120, "the streams reassigned")
        reassigned_s = time.monotonic() - killed
        pending = set(moved)
        while pending:
            for entry_id, fields in client.xrange(STREAM_KEY, min=f"({last_id.decode()}"):
                last_id = entry_id
                event = parse_any_event(fields[b"event"])
                if isinstance(event, StreamEventV1) and event.state == "live" and event.stream in pending \
                        and (event.epoch or 0) > before[event.stream]["epoch"]:
                    pending.discard(event.stream)
            if time.monotonic() - killed > 120:
                raise TimeoutError(f"streams {sorted(pending)} not live again within 120 s")
            time.sleep(0.1)
        result["failover"] = {"streams_moved": len(moved), "lease_s": 3.0, "reassigned_s": round(reassigned_s, 2),
                              "live_again_s": round(time.monotonic() - killed, 2)}
        result["log"] = str(log)
        return result
    finally:
        for step in reversed(undo):
            try:
                step()
            except Exception as err:  # noqa: BLE001 - undo the rest anyway
                print(f"bench cluster teardown: {err!r}", file=sys.stderr)


def table(result: dict[str, Any]) -> str:
    rows = [
        ("CPU", result["cpu"]),
        ("load", f"{result['streams']} RTSP streams at {result['target_fps']} analysed fps, tiny model, {result['nodes']} nodes/shards"),
        ("run --processes", f"{result['processes']['analysed_fps']} frames/s ({result['processes']['per_stream_fps']} per stream)"),
        ("run --ray", f"{result['cluster']['analysed_fps']} frames/s ({result['cluster']['per_stream_fps']} per stream)"),
        ("ray / processes", f"{result['cluster_over_processes']}"),
        ("failover", f"{result['failover']['streams_moved']} stream(s) reassigned in {result['failover']['reassigned_s']} s, "
                     f"live again in {result['failover']['live_again_s']} s (lease {result['failover']['lease_s']} s)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
