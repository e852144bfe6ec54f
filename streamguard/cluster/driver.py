"""`streamguard run --ray ADDRESS`: the same command, config and HTTP API, on a Ray cluster.

The driver connects to the cluster, starts (or finds again) the director, hands it the
config's streams and serves the front door (server/front_door.py) over the shards'
APIs, with the director as its `Placement`. It keeps the front door's view of the
shards current by asking the director twice a second. Stopping it (SIGINT/SIGTERM,
--duration) stops the shards and the director: like `run`, the streams end with it.
Ray is imported here only: one host never needs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from streamguard.config import Config
from streamguard.errors import ConfigError
from streamguard.server.exposure import is_loopback

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the front door's view of the shards is refreshed
SHARDS_READY_S = 300.0  # at start, how long the config's streams wait for every shard (engines load)


def connect(address: str, namespace: str) -> dict[str, Any] | None:
    """ray.init on `address` ("auto": the cluster on this machine); the runtime env the actors get (our PYTHONPATH)."""
    import ray

    env = {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}} if os.environ.get("PYTHONPATH") else None
    try:
        ray.init(address=address, namespace=namespace, runtime_env=env, log_to_driver=True, configure_logging=False)
    except (ConnectionError, RuntimeError) as err:
        raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster: {err}") from None
    return env


def director_handle(cfg: Config, redis_url: str, runtime_env: dict[str, Any] | None) -> Any:
    """The named, detached director: found if it runs, else started on this node (Ray restarts it if it dies)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from streamguard.cluster.director import DIRECTOR_NAME, Director

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(Director).options(
        name=DIRECTOR_NAME, namespace=cfg.cluster.namespace, lifetime="detached", get_if_exists=True,
        max_restarts=-1, max_task_retries=-1, num_cpus=0, scheduling_strategy=here, max_concurrency=1000,
    ).remote(cfg.model_dump(mode="json"), redis_url, runtime_env)


class DirectorPlacement:
    """The front door's `Placement` on a cluster: adds, removes and WHIP claims through the director."""

    def __init__(self, director: Any) -> None:
        self.director = director

    async def add(self, name: str, body: bytes) -> tuple[int, str]:
        return tuple(await self.director.add_stream.remote(name, body.decode(errors="replace")))  # type: ignore[return-value]

    async def remove(self, name: str) -> tuple[int, str]:
        return tuple(await self.director.remove_stream.remote(name))  # type: ignore[return-value]

    async def claim(self, name: str, worker: int) -> tuple[int, str]:
        return tuple(await self.director.add_stream.remote(name, "", worker, True))  # type: ignore[return-value]

    async def unowned(self) -> list[str]:
        return await self.director.unowned.remote()


def check_cluster_config(cfg: Config, node_ip: str) -> None:
    """One-line errors for what cannot work across nodes, before any actor starts."""
    if cfg.redis.url is None:
        raise ConfigError("--ray needs --redis-url (or redis.url): every node's shards publish to, and the director "
                          "keeps its state in, one Redis they all reach (no embedded redis-server on a cluster)")
    if not is_loopback(node_ip) and cfg.http.token is None and not cfg.http.allow_insecure_bind:
        raise ConfigError(f"--ray: shards serve their API on their node's address ({node_ip}), reachable by the network: "
                          "set http.token (STREAMGUARD_HTTP_TOKEN), or http.allow_insecure_bind: true")


async def follow_shards(director: Any, front: Any, stop: asyncio.Event) -> None:
    """Keep the front door's links to the shards current (up with URL and labels, or down)."""
    seen: dict[int, str | None] = {}
    while not stop.is_set():
        try:
            shards = await director.shards.remote()
        except Exception as err:  # noqa: BLE001 - the director restarting: its calls are retried, keep looking
            log.warning("director did not answer: %s", err)
            shards = []
        for shard in shards:
            url = shard["url"] if shard["live"] else None
            if seen.get(shard["slot"], "") == url:
                continue
            seen[shard["slot"]] = url
            if url is None:
                front.worker_down(shard["slot"])
            else:
                await front.worker_up(shard["slot"], url, {"shard": shard["actor"], "node": shard["node"][:12]})
        try:
            await asyncio.wait_for(stop.wait(), POLL_S)
        except TimeoutError:
            pass


async def wait_for_shards(director: Any, stop: asyncio.Event, timeout: float = SHARDS_READY_S) -> None:
    """Until every shard is live (so the config's streams spread over all of them), or `timeout`: then over those that are."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not stop.is_set():
        shards = await director.shards.remote()
        live = sum(1 for s in shards if s["live"])
        if live == len(shards):
            return
        if asyncio.get_running_loop().time() > deadline:
            log.warning("%d of %d shard(s) live after %.0f s; placing the streams on those", live, len(shards), timeout)
            return
        await asyncio.sleep(POLL_S)


async def run_on_ray(cfg: Config, address: str, duration: float | None) -> int:
    """Run `cfg`'s streams on the cluster at `address` until stopped or `duration` passes; the exit code."""
    import ray

    from streamguard.server.front_door import FrontDoor

    if cfg.redis.url is None:  # before connecting: a config error needs no cluster
        check_cluster_config(cfg, "127.0.0.1")
    runtime_env = connect(address, cfg.cluster.namespace)
    try:
        check_cluster_config(cfg, ray.util.get_node_ip_address())
        assert cfg.redis.url is not None
        if cfg.cluster.model == "service":  # before any shard starts: they connect to it by name
            from streamguard.cluster.model_service import deploy_model_service

            await asyncio.to_thread(deploy_model_service, cfg.model, cfg.crop.size, cfg.cluster.model_service,
                                    detached=True, namespace=cfg.cluster.namespace)
        director = director_handle(cfg, cfg.redis.url, runtime_env)
        placement = DirectorPlacement(director)
        front = FrontDoor(cfg.http, cfg.cluster.shards, placement) if cfg.http.bind is not None else None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        follow: asyncio.Task[None] | None = None
        try:
            if front is not None:
                await front.start()
                follow = asyncio.create_task(follow_shards(director, front, stop), name="follow-shards")
            await wait_for_shards(director, stop)
            for stream in cfg.streams:
                status, text = await placement.add(stream.name, stream.model_dump_json().encode())
                while status == 503 and not stop.is_set():  # no shard is up yet
                    await asyncio.sleep(POLL_S)
                    status, text = await placement.add(stream.name, stream.model_dump_json().encode())
                if status not in (201, 409):  # 409: a director that outlived us already runs it
                    raise ConfigError(f"stream {stream.name}: {text}")
            log.info("on Ray at %s: %d shard(s); %s", address, cfg.cluster.shards,
                     "; ".join(f"{a}: shard {o['shard']} epoch {o['epoch']}" for a, o in (await director.assignments.remote()).items()))
            try:
                await asyncio.wait_for(stop.wait(), duration)
            except TimeoutError:
                pass
        finally:
            stop.set()
            if follow is not None:
                await asyncio.gather(follow, return_exceptions=True)
            if front is not None:
                await front.close()
            await director.shutdown.remote()
            ray.kill(director, no_restart=True)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    finally:
        ray.shutdown()
    return 0
