"""The shared model deployment: a small pool of Ray actors, each opening the engine once and
scoring the crops of many shards together.

Why an actor pool with the existing `MicroBatcher` inside, not Ray Serve with `@serve.batch`:

- the batching is already written, tested and measured here (`streamguard.inference.batcher`):
  requests of every shard are pooled into engine calls of up to `batcher.max_batch` crops
  within `batcher.max_wait_ms`, a request larger than the room left is split and reassembled,
  a failed engine call fails only its own batch, and the queue is bounded in crops (the
  oldest requests are shed, `CropsDropped`);
- Serve would add fastapi, uvicorn and a gRPC proxy to the image, and a controller and a
  proxy per node that live as long as the cluster: long-running processes whose memory growth
  is a known pitfall, and more processes than this work needs. Serve's `@serve.batch` is the
  same idea as the batcher, without its bounded queue;
- a plain actor is what Ray restarts by itself: `max_restarts=-1` brings a replica killed with
  -9 (or lost with its node) back, and the handles the shards hold reach the new one.

Work in flight is bounded twice, so the object store never fills and latency cannot grow:
each shard keeps at most `concurrency` requests in flight (`RemoteEngine`, which refuses more
at once), and each replica admits at most `max_requests` requests at a time, refusing the rest
at once with `ModelServiceBusy`: never queued (the actor's `max_concurrency` is above that bound,
so a request beyond it is answered, not parked in Ray's queue). Every request holds at most
the shard batcher's `max_batch` crops, so a replica holds at most `max_requests` x that.
Calls that were running when a replica died are not retried (`max_task_retries=0`): a late
score for live video is worth less than the next frame, and the caller's batcher counts the
failure (`EngineFailed`) and goes on.

One request per shard per tick: the shard's own micro-batcher already gathers the crops of
all its streams into one `Engine.infer` call, and `RemoteEngine.infer` sends exactly one
request per call (with `concurrency` 1 the shard's batcher makes one call at a time, so a
tick's crops go together, up to the shard's `batcher.max_batch`; with more, it may split them
over the free calls). tests/test_model_service.py counts the requests a replica receives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from streamguard.cluster.crop_codec import CropPayload, JpegCrops, decode, payload_bytes
from streamguard.config import ModelConfig, ModelServiceConfig
from streamguard.inference.batcher import CropsDropped, EngineFailed, MicroBatcher
from streamguard.inference.contract import Engine
from streamguard.model.checkpoint import ModelMeta

if TYPE_CHECKING:
    from ray.actor import ActorHandle

log = logging.getLogger(__name__)

# Calls beyond max_requests that the actor still accepts (to refuse them, and for describe/stats):
# its max_concurrency is max_requests + this.
CONTROL_SLOTS = 32
READY_TIMEOUT_S = 300.0  # opening an engine on a fresh node: a model load and a warm-up


class ModelServiceError(RuntimeError):
    """A request to the shared model service was not scored."""


class ModelServiceBusy(ModelServiceError):
    """Refused at once: the caller or the replica had its bound of requests in flight, or the
    replica's queue was full and this request was shed. The crops go unscored; nothing waits."""


class ModelServiceUnavailable(ModelServiceError):
    """No answer: the replica died, is restarting, or did not answer within `timeout_s`."""


@dataclass(frozen=True)
class ServiceInfo:
    """What a replica tells a `RemoteEngine` about the engine it runs."""

    meta: ModelMeta
    embed_dim: int
    input_size: int
    warm_seconds_per_crop: float | None
    node: str  # host name and pid of the replica, for logs
    pid: int
    node_id: str  # the Ray node it runs on ("" outside Ray)
    incarnation: int  # how many times this replica's constructor ran (Ray restarts it)


@dataclass
class ServiceStats:
    """A replica's counters since it (re)started."""

    requests: int = 0  # infer requests received
    scored: int = 0  # requests answered with scores
    refused: int = 0  # refused at max_requests
    shed: int = 0  # dropped by the batcher's full queue
    failed: int = 0  # their engine call raised
    crops: int = 0  # crops scored
    crop_bytes: int = 0  # crop bytes received
    engine_calls: int = 0  # batches the engine ran (crops / engine_calls: the batching across shards)
    in_flight: int = 0  # admitted requests not yet answered
    peak_in_flight: int = 0  # the most admitted at once
    callers: dict[str, int] = field(default_factory=dict)  # requests per caller id

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


class _CountedEngine(Engine):
    """The opened engine, counting its calls (the batcher calls it in its worker threads)."""

    def __init__(self, engine: Engine, stats: ServiceStats):
        self._engine, self._stats = engine, stats
        self.meta, self.embed_dim, self.input_size = engine.meta, engine.embed_dim, engine.input_size
        self.concurrency = engine.concurrency
        self.warm_seconds_per_crop = engine.warm_seconds_per_crop

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._stats.engine_calls += 1
        return self._engine.infer(crops)

    def prepare(self, max_batch: int) -> None:
        self._engine.prepare(max_batch)

    def close(self) -> None:
        self._engine.close()



class ModelService:
    """One replica (the body of a Ray actor; `deploy_model_service` makes it one): the engine
    for `model` at `crop_size`, opened once, and a micro-batcher pooling every caller's requests."""

    def __init__(self, model: ModelConfig, crop_size: int, svc: ModelServiceConfig):
        from streamguard.blas import limit_numpy_blas_threads
        from streamguard.inference.registry import open_engine

        limit_numpy_blas_threads()
        self._svc = svc
        self._stats = ServiceStats()
        engine = open_engine(model, img_size=crop_size)
        engine.prepare(svc.batcher.max_batch)  # CUDA graphs before serving, as the pipeline does
        self._engine = _CountedEngine(engine, self._stats)
        self._batcher: MicroBatcher | None = None
        # Ray restarts the actor in a fresh process: its actor table counts the restarts
        self._incarnation = _restart_count() + 1
        log.info("model service replica up: %s (%s, digest %s), incarnation %d",
                 engine.meta.name, engine.meta.source, engine.meta.digest, self._incarnation)

    async def _started(self) -> MicroBatcher:
        if self._batcher is None:
            self._batcher = MicroBatcher(self._engine, self._svc.batcher)
            await self._batcher.start()
        return self._batcher

    async def describe(self) -> ServiceInfo:
        await self._started()
        e = self._engine
        return ServiceInfo(e.meta, e.embed_dim, e.input_size, e.warm_seconds_per_crop,
                           f"{socket.gethostname()}:{os.getpid()}", os.getpid(), _node_id(),
                           self._incarnation)

    async def stats(self) -> dict[str, Any]:
        return self._stats.as_dict()

    async def infer(self, payload: CropPayload, caller: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Score one request's crops: (p_fake float32 [N], embedding float32 [N, D]).

        Refused at once (`ModelServiceBusy`) while `max_requests` requests are admitted."""
        stats = self._stats
        stats.requests += 1
        stats.callers[caller] = stats.callers.get(caller, 0) + 1
        if stats.in_flight >= self._svc.max_requests:
            stats.refused += 1
            raise ModelServiceBusy(
                f"model service replica refused a request: {stats.in_flight} requests in flight, "
                f"its bound (model_service.max_requests) is {self._svc.max_requests}"
            )
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            batcher = await self._started()
            stats.crop_bytes += payload_bytes(payload)
            crops = await asyncio.to_thread(decode, payload) if isinstance(payload, JpegCrops) else decode(payload)
            p_fake, embedding = await batcher.submit(crops)
        except CropsDropped as err:
            stats.shed += 1
            raise ModelServiceBusy(f"model service replica shed a request: {err}") from None
        except EngineFailed as err:
            stats.failed += 1
            raise ModelServiceError(f"model service replica: {err} ({err.__cause__!r})") from None
        finally:
            stats.in_flight -= 1
        stats.scored += 1
        stats.crops += len(p_fake)
        return p_fake, embedding

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
        self._engine.close()


def _restart_count() -> int:
    """How many times Ray restarted this actor (0 outside an actor, or where Ray cannot say)."""
    try:
        import ray
        from ray._private.state import actors

        info = actors(actor_id=ray.get_runtime_context().get_actor_id())
        return int(info["NumRestarts"]) if info else 0
    except Exception:  # outside an actor, or Ray's state API moved
        return 0


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:
        return ""


def replica_name(svc: ModelServiceConfig, index: int) -> str:
    return f"{svc.name}-{index}"


def actor_options(svc: ModelServiceConfig, index: int, *, detached: bool, namespace: str | None) -> dict[str, Any]:
    """The Ray options of replica `index` (see the module docstring for each bound)."""
    options: dict[str, Any] = {
        "name": replica_name(svc, index),
        "get_if_exists": True,  # a second caller (a restarted front door) finds the running replica
        "max_restarts": -1,
        "max_task_retries": 0,
        "max_concurrency": svc.max_requests + CONTROL_SLOTS,
        "num_cpus": svc.num_cpus,
        "num_gpus": svc.num_gpus,
    }
    if namespace is not None:
        options["namespace"] = namespace
    if detached:
        options["lifetime"] = "detached"
    return options


def deploy_model_service(
    model: ModelConfig,
    crop_size: int,
    svc: ModelServiceConfig,
    *,
    detached: bool = False,
    namespace: str | None = None,
    resources: dict[str, float] | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> list[ActorHandle]:
    """Start (or find) the `svc.replicas` replicas and wait until each has opened its engine.

    Needs a connected Ray (`ray.init`). `detached`: the replicas outlive the job that made them
    (a front door that restarts finds them by name); `resources`: custom Ray resources each
    replica needs (to pin it to a node group in tests)."""
    import ray

    actor = ray.remote(ModelService)
    handles = []
    for i in range(svc.replicas):
        options = actor_options(svc, i, detached=detached, namespace=namespace)
        if resources:
            options["resources"] = resources
        handles.append(actor.options(**options).remote(model, crop_size, svc))
    infos = ray.get([h.describe.remote() for h in handles], timeout=ready_timeout_s)
    for i, info in enumerate(infos):
        log.info("model service %s on %s: %s", replica_name(svc, i), info.node, info.meta.name)
    return handles


def find_model_service(svc: ModelServiceConfig, namespace: str | None = None) -> list[ActorHandle]:
    """The running replicas, by name (`ValueError` from Ray when one does not exist)."""
    import ray

    return [ray.get_actor(replica_name(svc, i), namespace=namespace) for i in range(svc.replicas)]
