"""A shard: one Ray actor (one process) running a share of the streams.

Why an actor around the ordinary composition root: a shard is exactly a `streamguard
run` (app.running: engine, sink, pipeline, HTTP API), so the cluster adds no second
pipeline. What the cluster adds is ownership: the director gives the shard a stream
with an epoch (`adopt`), the sink stamps the stream's events with it and writes them
through the fenced script (redis/fence.py), and the shard renews a lease in Redis so
that the director can tell a live shard from one whose process lives but is stopped
or cut off. A shard that finds it lost a stream (its events are refused, or the owner
in Redis is no longer it) stops that stream by itself.

Streams are added through the shard's own HTTP API (POST /streams on itself), so the
cluster validates and opens them exactly as one host does (retry of the first open,
per-stream ingest settings, the stream limit). That API listens on the node's address
with the config's token: the front door reaches it from any node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from streamguard.config import Config
from streamguard.events import EventV1
from streamguard.inference.contract import Engine
from streamguard.redis.fence import ClusterKeys, Fence

log = logging.getLogger(__name__)

ADD_TIMEOUT_S = 30.0


def shard_config(cfg: Config, host: str) -> Config:
    """The config a shard runs: no streams of its own (the director gives them), its API on `host`, plain HTTP
    with no rate limit (TLS and the per-client rate are the front door's), as `run --processes` workers get."""
    http = cfg.http.model_copy(update={"bind": f"{host}:0", "tls_cert": None, "tls_key": None, "rate_per_client": 0.0})
    return cfg.model_copy(update={"streams": [], "http": http})


def open_engine_for(cfg: Config) -> Engine | None:
    """The engine a shard passes to `running`: None (its own, opened there) or the shared model service's client."""
    if cfg.cluster.model == "local":
        return None
    from streamguard.cluster.remote_engine import RemoteEngine

    return RemoteEngine.connect(cfg.cluster.model_service, namespace=cfg.cluster.namespace)


class Shard:
    """The actor's class (the director applies `ray.remote` with its name, CPUs and spread)."""

    def __init__(self, name: str, cfg: dict[str, Any], redis_url: str) -> None:
        self.name = name
        self.cfg = Config.model_validate(cfg)
        self.redis_url = redis_url
        self.keys = ClusterKeys(self.cfg.cluster.key_prefix)
        self.fence = Fence(self.keys, on_fenced=self._lost)
        self.url: str | None = None
        self.node = ""
        self._started = False
        self._ready: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._app: Any = None
        self._client: aioredis.Redis | None = None
        self._http: aiohttp.ClientSession | None = None
        self._dropping: dict[str, asyncio.Task[None]] = {}

    # --- life

    async def run(self) -> str:
        """The shard's life: returns when stopped. The director watches this call: if it fails, the shard is gone.
        A second call (a restarted director's) waits for the same end."""
        self._ready = self._ready or asyncio.Event()
        self._stop = self._stop or asyncio.Event()
        if self._started:
            await self._stop.wait()
            return self.name
        self._started = True
        import ray

        from streamguard.app import running
        from streamguard.redis.sink import RedisSink

        host = ray.util.get_node_ip_address()
        self.node = ray.get_runtime_context().get_node_id()
        cfg = shard_config(self.cfg, host)
        self._client = aioredis.Redis.from_url(self.redis_url, socket_connect_timeout=2.0, socket_timeout=5.0)
        token = {"Authorization": f"Bearer {cfg.http.token}"} if cfg.http.token else {}
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ADD_TIMEOUT_S), headers=token)
        sink = RedisSink(cfg.redis, self.redis_url, self.fence)
        engine = await asyncio.to_thread(open_engine_for, cfg)  # the service's client asks it (blocking) what it runs
        try:
            async with running(cfg, sink, engine=engine) as app:
                self._app = app
                self.url = app.server.url
                heartbeat = asyncio.create_task(self._heartbeat(), name="shard-lease")
                self._ready.set()
                log.info("shard %s on node %s serves %s", self.name, self.node[:8], self.url)
                try:
                    await self._stop.wait()
                finally:
                    heartbeat.cancel()
                    await asyncio.gather(heartbeat, return_exceptions=True)
        finally:
            await self._http.close()
            await self._client.aclose()
            if engine is not None:  # ours: running() closes only the engines it opened
                engine.close()
        return self.name

    async def ready(self) -> dict[str, Any]:
        """Once the pipeline runs and the API listens: where (for the front door and the director)."""
        self._ready = self._ready or asyncio.Event()
        await self._ready.wait()
        return {"name": self.name, "url": self.url, "node": self.node, "pid": os.getpid()}

    async def stop(self) -> None:
        self._stop = self._stop or asyncio.Event()
        self._stop.set()

    # --- ownership

    async def adopt(self, stream: str, body: str, epoch: int, whip: bool = False) -> tuple[int, str]:
        """Own `stream` from `epoch` on: clear what its last owner left open (reason "failover"), then open it
        through our own API with the body a client sent (not for WHIP: its publisher must publish again, or
        already does, to us). The API's (status, body)."""
        assert self._app is not None and self._http is not None
        self.fence.own(stream, epoch)
        await self._clear_left_open(stream)
        if whip:
            return 200, json.dumps({"name": stream, "owned": True})
        async with self._http.post(f"{self.url}/streams", data=body, headers={"Content-Type": "application/json"}) as resp:
            answer = await resp.text()
            if resp.status != 201:
                self.fence.release(stream)
            return resp.status, answer

    async def drop(self, stream: str) -> bool:
        """Stop `stream` (its final events go out while we still own it) and give it up; False if we did not run it."""
        assert self._app is not None
        held = stream in self._app.pipeline.workers
        if held:
            await self._app.server.control.remove(stream)
            await self._app.sink.flush(5.0)
        self.fence.release(stream)
        return held

    def streams(self) -> dict[str, int]:
        """The streams we own, with their epochs."""
        return dict(self.fence.epochs)

    def fenced(self) -> int:
        return self.fence.fenced

    def pid(self) -> int:
        return os.getpid()

    async def _clear_left_open(self, stream: str) -> None:
        """Publish a clear (reason "failover") for each alert the previous owner left open; the script removes them."""
        assert self._client is not None and self._app is not None
        left = await self._client.hgetall(self.keys.open_alerts(stream))
        for payload in sorted(left.values(), key=lambda p: json.loads(p).get("seq") or 0):
            last = EventV1.model_validate_json(payload)
            clear = last.model_copy(update={"type": "clear", "reason": "failover", "ts": time.time(), "thumbnails": None,
                                            "epoch": None, "seq": None})
            self._app.sink.publish(clear)
        if left:
            log.info("stream %s: cleared %d alert(s) its previous owner left open (failover)", stream, len(left))

    def _lost(self, stream: str) -> None:
        """Our events for `stream` were refused: another shard owns it now. Stop it here (once)."""
        if stream in self.fence.epochs and stream not in self._dropping:
            log.warning("shard %s: stream %s is owned elsewhere now (fenced); stopping it here", self.name, stream)
            task = asyncio.create_task(self.drop(stream), name=f"drop-{stream}")
            self._dropping[stream] = task
            task.add_done_callback(lambda _t, s=stream: self._dropping.pop(s, None))

    async def _heartbeat(self) -> None:
        """Renew our lease (lease_s, renewed 4 times in it); drop the streams Redis says another epoch owns."""
        assert self._client is not None
        lease_ms = int(self.cfg.cluster.lease_s * 1000)
        while True:
            try:
                await self._client.set(self.keys.lease(self.name), self.node, px=lease_ms)
                held = list(self.fence.epochs.items())
                if held:
                    current = await self._client.hmget(self.keys.epochs, [s for s, _ in held])
                    for (stream, epoch), now in zip(held, current, strict=True):
                        if now is None or int(now) != epoch:
                            self._lost(stream)
            except Exception as err:  # noqa: BLE001 - Redis away: the lease lapses and the director moves our streams
                log.warning("shard %s: lease renewal failed: %s", self.name, err)
            await asyncio.sleep(self.cfg.cluster.lease_s / 4)
