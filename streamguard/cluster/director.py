"""The director: which shard runs which stream, and moving streams off shards that are gone.

Why a detached, named actor that Ray restarts (max_restarts=-1): placement must outlive
the command that started it and its own crashes. It keeps nothing that matters in
memory: every stream's request body, owner and epoch live in Redis (fence.ClusterKeys),
so a restarted director reads them back and carries on with the same assignments. Its
shards are detached and named too (their owner dying must not kill them); it finds
them again by name.

A shard is live while its process runs (the director keeps one long call, `run`, in
flight to it: when that call fails, the process or its node is gone) and its lease in
Redis is fresh (a process that lives but is stopped or cut off stops renewing it). One
loop reconciles: every stream whose owner is not a live shard is given to the live
shard with the fewest streams, with its epoch bumped (HINCRBY) first, so that the old
owner's late events are refused by the fenced write. A dead shard's slot gets a new
actor; a lapsed one that comes back is live again, and will have dropped the streams
it lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from streamguard.config import Config
from streamguard.redis.fence import ClusterKeys

log = logging.getLogger(__name__)

DIRECTOR_NAME = "streamguard-director"
TICK_S = 0.25  # how often the director looks at shards and leases
FOUND_READY_S = 2.0  # after our restart, how long a shard found again may take to say where it listens
CALL_TIMEOUT_S = 60.0  # a shard adopting a stream (opening its source is retried in the background) or dropping one


@dataclass
class Slot:
    """One of `cluster.shards` places for a shard, and the actor filling it now."""

    index: int
    actor: str
    handle: Any
    run_ref: Any  # the long call: completes (with an error) when the shard is gone
    ready_ref: Any
    info: dict[str, Any] = field(default_factory=dict)  # url, node, pid once ready
    dead: bool = False


def whip_body(name: str) -> str:
    return json.dumps({"name": name, "url": "whip://", "whip": True})


class Director:
    """The actor's class (`driver.director()` applies `ray.remote`)."""

    def __init__(self, cfg: dict[str, Any], redis_url: str, runtime_env: dict[str, Any] | None = None) -> None:
        self.cfg = Config.model_validate(cfg)
        self.cfg_json = cfg
        self.redis_url = redis_url
        self.runtime_env = runtime_env
        self.keys = ClusterKeys(self.cfg.cluster.key_prefix)
        self.slots: dict[int, Slot] = {}
        self._client: aioredis.Redis | None = None
        self._started: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self.failovers = 0
        self.last_failover_s: float | None = None

    # --- start and rebuild

    async def _ensure(self) -> None:
        if self._started is None:
            self._started = asyncio.create_task(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        import ray

        self._lock = asyncio.Lock()
        self._client = aioredis.Redis.from_url(self.redis_url, decode_responses=True, socket_connect_timeout=2.0, socket_timeout=5.0)
        known = await self._client.hgetall(self.keys.shards)
        for index in range(self.cfg.cluster.shards):
            actor = json.loads(known[str(index)])["actor"] if str(index) in known else None
            handle = None
            if actor is not None:
                try:
                    handle = ray.get_actor(actor, namespace=self.cfg.cluster.namespace)
                except ValueError:
                    handle = None
            if handle is None:
                await self._create(index)
            else:
                slot = self.slots[index] = Slot(index, actor, handle, handle.run.remote(), handle.ready.remote())
                try:  # a running shard answers at once: the front door keeps its address through our restart
                    slot.info = await asyncio.wait_for(_await(slot.ready_ref), FOUND_READY_S)
                except Exception:  # noqa: BLE001 - stopped, dying or still starting: the watch finds out
                    pass
                log.info("slot %d: found shard %s again", index, actor)
        self._watch = asyncio.create_task(self._watch_forever(), name="director-watch")

    async def _create(self, index: int) -> None:
        import ray

        from streamguard.cluster.shard import Shard

        assert self._client is not None
        incarnation = await self._client.hincrby(self.keys.prefix + "incarnation", str(index), 1)
        actor = f"streamguard-shard-{index}-{incarnation}"
        options: dict[str, Any] = {
            "name": actor, "namespace": self.cfg.cluster.namespace, "lifetime": "detached", "max_restarts": 0,
            "num_cpus": self.cfg.cluster.shard_cpus, "scheduling_strategy": "SPREAD", "max_concurrency": 1000,
        }
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
        handle = ray.remote(Shard).options(**options).remote(actor, self.cfg_json, self.redis_url)
        await self._client.hset(self.keys.shards, str(index), json.dumps({"actor": actor}))
        self.slots[index] = Slot(index, actor, handle, handle.run.remote(), handle.ready.remote())
        log.info("slot %d: started shard %s", index, actor)

    # --- watching

    async def _watch_forever(self) -> None:
        while True:
            try:
                await self._tick()
            except Exception:  # noqa: BLE001 - a bad tick must not end the watch; Redis away, say
                log.exception("director: reconcile failed; trying again")
            await asyncio.sleep(TICK_S)

    async def _tick(self) -> None:
        import ray

        for slot in list(self.slots.values()):
            done, _ = ray.wait([slot.run_ref], timeout=0)
            if done:
                log.warning("shard %s (slot %d) is gone (its process or node died); replacing it", slot.actor, slot.index)
                slot.dead = True
                await self._create(slot.index)
                continue
            if not slot.info:
                ready, _ = ray.wait([slot.ready_ref], timeout=0)
                if ready:
                    try:
                        slot.info = await slot.ready_ref
                    except Exception:  # noqa: BLE001 - it died while starting: the run call says so next tick
                        pass
        async with self._locked():
            await self._reconcile()

    def _locked(self) -> asyncio.Lock:
        assert self._lock is not None
        return self._lock

    async def _live(self) -> dict[str, Slot]:
        """Actor name -> slot, for shards whose process runs, that are ready and whose lease is fresh."""
        assert self._client is not None
        candidates = [s for s in self.slots.values() if not s.dead]  # the lease is set once the shard runs
        if not candidates:
            return {}
        leases = await self._client.mget([self.keys.lease(s.actor) for s in candidates])
        return {s.actor: s for s, lease in zip(candidates, leases, strict=True) if lease is not None}

    async def _reconcile(self) -> None:
        """Give every stream whose owner is not live to the least-loaded live shard."""
        assert self._client is not None
        specs = await self._client.hgetall(self.keys.specs)
        if not specs:
            return
        owners = await self._client.hgetall(self.keys.owners)
        live = await self._live()
        orphans = sorted(name for name in specs if owners.get(name) not in live)
        if not orphans or not live:
            return
        started = time.monotonic()
        load = {actor: 0 for actor in live}
        for name, owner in owners.items():
            if owner in load and name in specs:
                load[owner] += 1
        for name in orphans:
            target = min(load, key=lambda a: (load[a], live[a].index))
            whip = bool(json.loads(specs[name]).get("whip"))
            log.warning("stream %s: owner %s is not live; moving it to %s", name, owners.get(name, "(none)"), target)
            status, _ = await self._assign(name, specs[name], live[target], whip=whip)
            if whip:  # its publisher must publish again (through the front door): the new owner only cleared its alerts
                await self._release(name)
            elif status == 201:
                load[target] += 1
        self.failovers += 1
        self.last_failover_s = time.monotonic() - started

    async def _assign(self, name: str, body: str, slot: Slot, whip: bool = False) -> tuple[int, str]:
        """Bump the stream's epoch, name its owner, then have the shard adopt it: the (status, body) it answered."""
        assert self._client is not None
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hincrby(self.keys.epochs, name, 1)
            pipe.hset(self.keys.owners, name, slot.actor)
            pipe.hset(self.keys.specs, name, body)
            epoch, _, _ = await pipe.execute()
        try:
            return await asyncio.wait_for(_await(slot.handle.adopt.remote(name, body, int(epoch), whip)), CALL_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - the shard died or hung: the next tick moves the stream again
            log.warning("stream %s: shard %s did not adopt it: %s", name, slot.actor, err)
            return 503, f"shard {slot.actor} did not answer: {err}"

    async def _release(self, name: str) -> None:
        """Nobody owns `name` any more: bump its epoch (late events refused) and forget it."""
        assert self._client is not None
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hincrby(self.keys.epochs, name, 1)
            pipe.hdel(self.keys.owners, name)
            pipe.hdel(self.keys.specs, name)
            await pipe.execute()

    # --- what the front door asks

    async def add_stream(self, name: str, body: str, slot_index: int | None = None, whip: bool = False) -> tuple[int, str]:
        """Place a new stream on the least-loaded live shard (or the given one: WHIP); (status, body) as the API answers."""
        await self._ensure()
        assert self._client is not None
        async with self._locked():
            existing = await self._client.hget(self.keys.specs, name)
            if existing is not None and not (whip and json.loads(existing).get("whip")):  # a WHIP publisher may replace one
                owner = await self._client.hget(self.keys.owners, name)
                return 409, f"stream {name} already exists (on shard {owner})"
            live = await self._live()
            if not live:
                return 503, "no shard is running (they are starting or being replaced); try again shortly"
            if slot_index is not None:
                slot = next((s for s in live.values() if s.index == slot_index), None)
                if slot is None:
                    return 503, f"shard {slot_index} is not running; try again shortly"
            else:
                owners = await self._client.hgetall(self.keys.owners)
                load = {actor: sum(1 for o in owners.values() if o == actor) for actor in live}
                slot = live[min(load, key=lambda a: (load[a], live[a].index))]
            status, answer = await self._assign(name, whip_body(name) if whip else body, slot, whip=whip)
            if status not in (200, 201):
                await self._release(name)
            return status, answer

    async def remove_stream(self, name: str) -> tuple[int, str]:
        """Stop a stream wherever it runs and forget it."""
        await self._ensure()
        assert self._client is not None
        async with self._locked():
            owner = await self._client.hget(self.keys.owners, name)
            if not await self._client.hexists(self.keys.specs, name):
                return 404, f"no stream named {name}"
            slot = next((s for s in self.slots.values() if s.actor == owner and not s.dead), None)
            if slot is not None:
                try:
                    await asyncio.wait_for(_await(slot.handle.drop.remote(name)), CALL_TIMEOUT_S)
                except Exception as err:  # noqa: BLE001 - gone: the epoch bump below fences whatever it still sends
                    log.warning("stream %s: shard %s did not drop it: %s", name, owner, err)
            await self._release(name)
            return 200, json.dumps({"removed": {"name": name}})

    async def shards(self) -> list[dict[str, Any]]:
        """Each slot: its actor, whether it is live, its API's URL and node, the streams Redis says it owns."""
        await self._ensure()
        assert self._client is not None
        live = await self._live()
        owners = await self._client.hgetall(self.keys.owners)
        return [{"slot": s.index, "actor": s.actor, "live": s.actor in live, "url": s.info.get("url"), "node": s.info.get("node", ""),
                 "pid": s.info.get("pid"), "streams": sorted(n for n, o in owners.items() if o == s.actor)}
                for s in sorted(self.slots.values(), key=lambda s: s.index)]

    async def assignments(self) -> dict[str, dict[str, Any]]:
        """stream -> {"shard": actor, "epoch": n}, as Redis has them."""
        await self._ensure()
        assert self._client is not None
        owners = await self._client.hgetall(self.keys.owners)
        epochs = await self._client.hgetall(self.keys.epochs)
        return {name: {"shard": owner, "epoch": int(epochs.get(name, 0))} for name, owner in sorted(owners.items())}

    async def unowned(self) -> list[str]:
        """Streams whose owner is not a live shard right now (the front door's /healthz is degraded while any are)."""
        await self._ensure()
        assert self._client is not None
        specs = await self._client.hgetall(self.keys.specs)
        owners = await self._client.hgetall(self.keys.owners)
        live = await self._live()
        return sorted(n for n in specs if owners.get(n) not in live)

    async def stats(self) -> dict[str, Any]:
        await self._ensure()
        return {"failovers": self.failovers, "last_failover_s": self.last_failover_s, "pid": os.getpid()}

    async def shutdown(self) -> None:
        """Stop every shard (their streams' final events go out), forget the streams; epochs stay (fencing)."""
        await self._ensure()
        assert self._client is not None
        import ray

        if self._watch is not None:
            self._watch.cancel()
        stops = [_await(s.handle.stop.remote()) for s in self.slots.values() if not s.dead]
        await asyncio.gather(*(asyncio.wait_for(stop, CALL_TIMEOUT_S) for stop in stops), return_exceptions=True)
        runs = [s.run_ref for s in self.slots.values() if not s.dead]
        if runs:
            await asyncio.get_running_loop().run_in_executor(None, lambda: ray.wait(runs, num_returns=len(runs), timeout=30))
        for slot in self.slots.values():
            ray.kill(slot.handle, no_restart=True)
        await self._client.delete(self.keys.owners, self.keys.specs, self.keys.shards)
        left = await self._client.keys(self.keys.prefix + "open:*")
        if left:
            await self._client.delete(*left)

    def ping(self) -> bool:
        return True


async def _await(ref: Any) -> Any:
    """An ObjectRef awaited in the actor's event loop."""
    return await ref
