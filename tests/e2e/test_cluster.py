"""`streamguard run --ray` on a real Ray cluster: a head and two worker nodes, real RTSP and Redis.

Everything runs inside a network namespace this module makes (lab/netns.py):
Ray, redis-server, the RTSP server and the `streamguard run --ray` command. One cluster
for the whole module (Ray is slow to start); the tests run in order and each leaves the
cluster with two live shards for the next. The model is the untrained `tiny` at
threshold 0, so every tracked face alerts, at 2 analysed frames a second.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from streamguard.events import EventV1, StreamEventV1, parse_any_event
from lab.netns import PrivateNetwork

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.skipif(PrivateNetwork.available() is not None, reason=PrivateNetwork.available() or "")

STREAMGUARD = str(Path(sys.executable).parent / "streamguard")
GCS_PORT = 25001  # outside Ray's worker ports (10002-19999), and not Redis's 6379
REDIS_PORT = 26379
FRONT = "127.0.0.1:18080"  # inside our own namespace: free
TOKEN = "cluster-test-token-0123456789abcdef"
PREFIX = "test:cluster:"
STREAM_KEY = "test:cluster:events"
NAMESPACE = "streamguard-test"
LEASE_S = 3.0


def wait_until(check: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` (and the driver's last lines) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log is not None and log.exists() else ""
            pytest.fail(f"not within {timeout} s: {what}\n{tail}")
        time.sleep(0.2)


class Scene:
    """The module's cluster and what runs on it."""

    def __init__(self, cluster: Any, redis_url: str, log: Path, driver: subprocess.Popen[bytes], rtsp: Any) -> None:
        self.cluster = cluster
        self.client = redis.Redis.from_url(redis_url)
        self.log = log
        self.driver = driver
        self.rtsp = rtsp

    def director(self) -> Any:
        return ray.get_actor("streamguard-director", namespace=NAMESPACE)

    def call(self, method: str, *args: Any, timeout: float = 30.0) -> Any:
        return ray.get(getattr(self.director(), method).remote(*args), timeout=timeout)

    def http(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://{FRONT}{path}", data=data, method=method,
                                         headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def events(self) -> list[EventV1 | StreamEventV1]:
        return [parse_any_event(fields[b"event"]) for _, fields in self.client.xrange(STREAM_KEY)]

    def alerts(self, stream: str, epoch: int | None = None) -> list[EventV1]:
        return [e for e in self.events() if isinstance(e, EventV1) and e.stream == stream and e.type == "alert"
                and (epoch is None or e.epoch == epoch)]

    def live_shards(self) -> list[dict[str, Any]]:
        return [s for s in self.call("shards") if s["live"]]


def test_run_ray_without_a_shared_redis_is_one_clear_error():
    proc = subprocess.run([STREAMGUARD, "run", "--ray", "127.0.0.1:1", "--stream", "a=x.mp4"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "--ray needs --redis-url" in proc.stderr and "Traceback" not in proc.stderr


def assert_ordered(events: list[EventV1 | StreamEventV1]) -> None:
    """Per stream, (epoch, seq) rises strictly in the Stream's order; each alert id: one alert, updates, at most one clear, last."""
    last: dict[str, tuple[int, int]] = {}
    for event in events:
        assert event.epoch is not None and event.seq is not None, f"an event without epoch/seq: {event}"
        key = (event.epoch, event.seq)
        assert key > last.get(event.stream, (0, 0)), f"stream {event.stream}: {key} after {last[event.stream]}"
        last[event.stream] = key
    lives: dict[str, list[str]] = {}
    for event in events:
        if isinstance(event, EventV1):
            lives.setdefault(event.id, []).append(event.type)
    for alert_id, types in lives.items():
        assert types[0] == "alert" and types.count("alert") == 1, f"alert {alert_id}: {types}"
        assert types.count("clear") <= 1 and ("clear" not in types or types[-1] == "clear"), f"alert {alert_id}: {types}"


@pytest.fixture(scope="module")
def scene(sample_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    from lab.raycluster import start_cluster, stop_cluster
    from lab.servers.rtsp import RtspServer
    from streamguard.redis.embedded import EmbeddedRedis, find_redis_server

    folder = tmp_path_factory.mktemp("cluster")
    namespace = PrivateNetwork().create()
    namespace.enter()
    stack: list[Callable[[], None]] = [namespace.delete]
    try:
        server = EmbeddedRedis(port=REDIS_PORT, binary=find_redis_server(prefer_system=True)).start()
        stack.append(server.close)
        rtsp = RtspServer({"cam1": sample_video, "cam2": sample_video}, folder)
        rtsp.start()
        stack.append(rtsp.stop)
        cluster, _ = start_cluster(GCS_PORT, workers=2)
        stack.append(lambda: stop_cluster(cluster))
        ray.init(address=cluster.address, namespace=NAMESPACE)
        stack.append(ray.shutdown)
        config = folder / "cluster.yaml"
        config.write_text(json.dumps({
            "redis": {"stream_key": STREAM_KEY, "channel": "test:cluster:alerts"},
            "model": {"arch": "tiny"},
            "scoring": {"threshold": 0.0, "min_samples": 2, "window_s": 2.0},
            "ingest": {"analysis_fps": 2},
            "cluster": {"shards": 2, "shard_cpus": 1, "lease_s": LEASE_S, "key_prefix": PREFIX, "namespace": NAMESPACE},
            "http": {"token": TOKEN},
            "webrtc": {"host_interfaces": False, "additional_hosts": ["127.0.0.1"]},
            "streams": [{"name": "a", "url": rtsp.url("cam1")}, {"name": "b", "url": rtsp.url("cam2")}],
        }))
        log = folder / "driver.log"
        with log.open("wb") as out:
            driver = subprocess.Popen([STREAMGUARD, "run", "--ray", cluster.address, "--config", str(config), "--http", FRONT,
                                       "--redis-url", server.url], stdout=out, stderr=subprocess.STDOUT)

        def stop_driver() -> None:
            driver.send_signal(signal.SIGTERM)
            try:
                driver.wait(60)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait()

        stack.append(stop_driver)
        scene = Scene(cluster, server.url, log, driver, rtsp)
        wait_until(lambda: driver.poll() is not None or len(scene.alerts("a")) and len(scene.alerts("b")), 180,
                   "alerts from both streams", log)
        assert driver.poll() is None, log.read_text()[-3000:]
        yield scene
    finally:
        for undo in reversed(stack):
            try:
                undo()
            except Exception as err:  # noqa: BLE001 - undo the rest anyway
                print(f"cluster teardown: {err!r}", file=sys.stderr)


def test_streams_run_on_both_shards_behind_one_front_door(scene: Scene):
    status, listing = scene.http("GET", "/streams")
    assert status == 200
    shards = {s["name"]: s["shard"] for s in listing["streams"]}
    assert set(shards) == {"a", "b"} and shards["a"] != shards["b"]  # spread: one per shard
    assert all(s["node"] for s in listing["streams"])
    assert {e.epoch for e in scene.alerts("a") + scene.alerts("b")} == {1}
    status, text = scene.http("GET", "/metrics")
    assert status == 200 and 'shard="streamguard-shard-' in text and "streamguard_events_fenced_total" in text
    assert scene.http("GET", "/healthz")[0] == 200

    status, added = scene.http("POST", "/streams", {"name": "c", "url": scene.rtsp.url("cam1")})
    assert status == 201 and added["name"] == "c", added
    assert scene.http("POST", "/streams", {"name": "c", "url": scene.rtsp.url("cam2")})[0] == 409
    assert scene.http("POST", "/streams", {"name": "a", "url": scene.rtsp.url("cam2")})[0] == 409
    assert scene.http("GET", "/streams/c")[0] == 200
    assert scene.call("assignments")["c"]["epoch"] == 1
    assert scene.http("DELETE", "/streams/c")[0] == 200
    assert scene.http("GET", "/streams/c")[0] == 404
    assert scene.http("DELETE", "/streams/c")[0] == 404
    assert "c" not in scene.call("assignments")
    assert_ordered(scene.events())


async def test_a_whip_publisher_through_the_front_door_is_analysed_and_its_claim_released(scene: Scene):
    import aiohttp

    from streamguard.config import WebRTCConfig
    from streamguard.ingest import ice
    from tests.support.harness import LOOPBACK_WEBRTC
    from tests.support.webrtc import make_offer, whip_publish

    ice.configure(WebRTCConfig(**LOOPBACK_WEBRTC))  # our publisher on 127.0.0.1 only, like the shards (the config)
    pc = await make_offer()
    base = f"http://{FRONT}"
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            location, _ = await whip_publish(http, base, "call", pc)
            owner = scene.call("assignments")["call"]
            assert owner["epoch"] >= 1 and owner["shard"].startswith("streamguard-shard-")
            deadline = time.monotonic() + 60  # polled without blocking: this loop also runs our publisher
            while (status := await (await http.get(f"{base}/streams/call")).json()).get("state") != "live":
                assert time.monotonic() < deadline, f"the WHIP stream not live through the cluster: {status}"
                await asyncio.sleep(0.2)
            assert status["url"] == "whip://127.0.0.1/call"
            listing = await (await http.get(f"{base}/streams")).json()
            assert next(s["shard"] for s in listing["streams"] if s["name"] == "call") == owner["shard"]
            async with http.post(f"{base}/streams", json={"name": "call", "url": "rtsp://x/y"}) as resp:
                assert resp.status == 409  # one name, whichever way it came
            async with http.delete(base + location) as resp:
                assert resp.status == 200
            async with http.delete(base + location) as resp:  # its session is gone: told how to publish again
                assert resp.status == 404 and "POST /whip/call" in (await resp.json())["error"]
            assert "call" not in scene.call("assignments")  # its claim ended with it
    finally:
        await pc.close()
        if "call" in scene.call("assignments"):  # failed half way: leave the cluster clean for the next tests
            scene.http("DELETE", "/streams/call")
    events = [e for e in scene.events() if e.stream == "call"]
    assert [e.state for e in events if isinstance(e, StreamEventV1)][:2] == ["connecting", "live"]
    assert all(e.epoch == owner["epoch"] for e in events)  # stamped with its claim's epoch
    assert int(scene.client.hget(PREFIX + "fenced", "call") or 0) == 0  # and none refused
    assert_ordered(scene.events())


def test_a_killed_director_comes_back_with_the_same_assignments(scene: Scene):
    before = scene.call("assignments")
    first = scene.call("stats")["pid"]
    os.kill(first, signal.SIGKILL)  # a crash: Ray starts it again (max_restarts=-1)
    again = wait_until(lambda: (answer := _answer(scene, "stats")) and answer["pid"] != first and answer, 60,
                       "the director back in a new process", scene.log)
    assert again["failovers"] == 0  # a new life: nothing in memory, yet
    assert scene.call("assignments") == before  # read back from Redis: nobody moved
    assert len(scene.live_shards()) == 2  # found again by name, their leases fresh
    assert all(s["url"] and s["node"] for s in scene.live_shards())  # asked again at the restart
    wait_until(lambda: scene.http("GET", "/healthz")[0] == 200, 10, "the front door healthy")


def _answer(scene: Scene, method: str) -> Any:
    try:
        return scene.call(method, timeout=5)
    except Exception:  # noqa: BLE001 - restarting
        return None


def test_a_killed_node_moves_its_streams_and_alerts_stay_ordered(scene: Scene):
    before = scene.call("assignments")
    victim_shard = next(s for s in scene.live_shards() if "a" in s["streams"])
    node = next(n for n in scene.cluster.worker_nodes if n.node_id == victim_shard["node"])
    moved = victim_shard["streams"]
    open_before = {s: {e.id for e in scene.alerts(s)} - {e.id for e in scene.events() if isinstance(e, EventV1) and e.type == "clear"}
                   for s in moved}
    assert any(open_before.values())  # threshold 0: its faces are alerting when the node dies
    started = time.monotonic()
    scene.cluster.remove_node(node, allow_graceful=False)

    def moved_on() -> bool:
        now = scene.call("assignments")
        return all(now.get(s, {}).get("shard") not in (None, victim_shard["actor"]) and now[s]["epoch"] > before[s]["epoch"]
                   for s in moved)

    wait_until(moved_on, 60, f"streams {moved} on another shard", scene.log)
    after = scene.call("assignments")
    for stream in moved:
        wait_until(lambda s=stream: scene.alerts(s, after[s]["epoch"]), 60, f"alerts of {stream} from its new owner", scene.log)
    failover_s = time.monotonic() - started
    events = scene.events()
    clears = {e.id: e.reason for e in events if isinstance(e, EventV1) and e.type == "clear"}
    for stream in moved:
        for alert_id in open_before[stream]:  # open when the node died: cleared by the new owner, never left open
            assert clears.get(alert_id) == "failover", (stream, alert_id, clears.get(alert_id))
    assert_ordered(events)
    status, health = scene.http("GET", "/healthz")
    print(f"failover after a node kill: streams {moved} alerting again after {failover_s:.1f} s; healthz {status}")
    scene.cluster.add_node(num_cpus=1)  # room for the replacement shard, for the next test
    wait_until(lambda: len(scene.live_shards()) == 2, 120, "a replacement shard", scene.log)


def test_a_stopped_shard_loses_its_streams_and_its_late_events_are_fenced(scene: Scene):
    victim = next(s for s in scene.live_shards() if "a" in s["streams"])
    before = scene.call("assignments")["a"]
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        wait_until(lambda: scene.call("assignments")["a"]["shard"] != victim["actor"], 30, "stream a moved off the stopped shard")
        assert scene.http("GET", "/healthz")[0] in (200, 503)
        epoch = scene.call("assignments")["a"]["epoch"]
        assert epoch > before["epoch"]
        wait_until(lambda: scene.alerts("a", epoch), 60, "alerts of a from its new owner", scene.log)
    finally:
        os.kill(victim["pid"], signal.SIGCONT)
    shard = ray.get_actor(victim["actor"], namespace=NAMESPACE)
    wait_until(lambda: ray.get(shard.fenced.remote(), timeout=10) > 0, 60, "the resumed shard's late events refused")
    wait_until(lambda: "a" not in ray.get(shard.streams.remote(), timeout=10), 30, "the resumed shard dropping stream a")
    assert int(scene.client.hget(PREFIX + "fenced", "a") or 0) > 0  # refused by the script in Redis, not only locally
    events = scene.events()
    assert_ordered(events)  # no late event of the old epoch after the new owner's
    status, listing = scene.http("GET", "/streams")
    assert [s["name"] for s in listing["streams"]].count("a") == 1
