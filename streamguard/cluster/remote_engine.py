"""`RemoteEngine`: the `Engine` a shard runs when its crops are scored by the shared model service.

A shard's pipeline is unchanged: its `MicroBatcher` gathers the crops of all its streams into
one `Engine.infer` call, from one of its worker threads, and this engine sends that call as one
request to a replica of the service (`streamguard.cluster.model_service`), encoded by
`cluster.crop_codec` (raw uint8 or JPEG), and blocks on the answer. `meta`, `embed_dim` and
`input_size` are the service's, so events name the model the service runs.

Bounds: at most `concurrency` requests in flight from this engine (a call beyond it is refused
at once with `ModelServiceBusy`; the shard's batcher never makes more, since `concurrency` is
also what it reads to size its workers), and none waits longer than `timeout_s` (then it is
cancelled on the service and fails with `ModelServiceUnavailable`). Every failure is an
exception from `infer`, which the shard's batcher turns into `EngineFailed` for that batch's
streams and counts (`streamguard_engine_failures`); here each request is also counted by
outcome (`streamguard_model_service_requests`).

Constructing one blocks (it asks a replica what it runs and times two one-crop calls, as
`registry.warm_up` does for a local engine): from async code, build it in a thread
(`asyncio.to_thread(RemoteEngine, replicas, svc)`), then hand it to `running(cfg, sink, engine=...)`.

Replicas are used in turn. One that did not answer (dead, restarting after a kill, its node
lost) is skipped for `SKIP_DOWN_S` when another is up; Ray restarts it (`max_restarts=-1`) and
the handle held here reaches the new process, so calls succeed again without reconnecting.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from streamguard.cluster.crop_codec import encode, payload_bytes
from streamguard.cluster.model_service import (
    ModelServiceBusy,
    ModelServiceError,
    ModelServiceUnavailable,
    ServiceInfo,
    find_model_service,
)
from streamguard.config import ModelServiceConfig
from streamguard.inference.contract import Engine, check_crops
from streamguard.metrics import MODEL_SERVICE_BYTES, MODEL_SERVICE_REQUESTS, MODEL_SERVICE_SECONDS

if TYPE_CHECKING:
    from ray.actor import ActorHandle

log = logging.getLogger(__name__)

SKIP_DOWN_S = 2.0  # a replica that did not answer is passed over this long while another is up


class RemoteEngine(Engine):
    """Scores crops on the shared model service's replicas; see the module docstring."""

    def __init__(self, replicas: Sequence[ActorHandle], svc: ModelServiceConfig, *, caller: str | None = None,
                 warm_up: bool = True):
        import ray

        if not replicas:
            raise ValueError("RemoteEngine needs at least one model service replica")
        self._ray = ray
        self._replicas = list(replicas)
        self._svc = svc
        self._caller = caller or f"{socket.gethostname()}:{os.getpid()}"
        self._slots = threading.BoundedSemaphore(svc.concurrency)
        self._turn = itertools.count()
        self._down_until = [0.0] * len(self._replicas)
        self._lock = threading.Lock()
        self._closed = False
        self.concurrency = svc.concurrency
        info = self.describe()
        self.meta = info.meta
        self.embed_dim = info.embed_dim
        self.input_size = info.input_size
        self.warm_seconds_per_crop = info.warm_seconds_per_crop
        if warm_up:
            self._warm_up()

    @classmethod
    def connect(cls, svc: ModelServiceConfig, namespace: str | None = None, **kwargs: object) -> RemoteEngine:
        """The engine for the replicas running under `svc.name` (`deploy_model_service` started them)."""
        return cls(find_model_service(svc, namespace), svc, **kwargs)  # type: ignore[arg-type]

    def describe(self) -> ServiceInfo:
        """The engine the service runs (asked of the first replica that answers)."""
        last: Exception | None = None
        for replica in self._replicas:
            try:
                return self._ray.get(replica.describe.remote(), timeout=self._svc.timeout_s)
            except Exception as err:  # dead, restarting, slow: try the next
                last = err
        raise ModelServiceUnavailable(f"no model service replica answered: {last!r}") from last

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """crops uint8 [N, S, S, 3] RGB -> (p_fake float32 [N], embedding float32 [N, D]), in one request."""
        check_crops(crops, self.input_size)
        if self._closed:
            raise RuntimeError("RemoteEngine is closed")
        if len(crops) == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.embed_dim), np.float32)
        if not self._slots.acquire(blocking=False):
            MODEL_SERVICE_REQUESTS.labels("busy").inc()
            raise ModelServiceBusy(
                f"{self.concurrency} requests already in flight to the model service from this shard "
                "(model_service.concurrency)"
            )
        try:
            return self._request(crops)
        finally:
            self._slots.release()

    def prepare(self, max_batch: int) -> None:
        """Nothing to do here: each replica prepared its engine (CUDA graphs) before it served."""
        return None

    def close(self) -> None:
        """Stops calls from this engine; the service is shared and stays up."""
        self._closed = True

    # --- one request ----------------------------------------------------------------------

    def _pick(self) -> int:
        now = time.monotonic()
        with self._lock:
            start = next(self._turn)
            n = len(self._replicas)
            for k in range(n):
                i = (start + k) % n
                if self._down_until[i] <= now:
                    return i
            return start % n  # all down: try in turn anyway (one may be back)

    def _mark_down(self, i: int) -> None:
        with self._lock:
            self._down_until[i] = time.monotonic() + SKIP_DOWN_S

    def _request(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ray = self._ray
        started = time.perf_counter()
        payload = encode(crops, self._svc.crop_transport, self._svc.jpeg_quality)
        MODEL_SERVICE_BYTES.inc(payload_bytes(payload))
        i = self._pick()
        ref = self._replicas[i].infer.remote(payload, self._caller)
        try:
            p_fake, embedding = ray.get(ref, timeout=self._svc.timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref)  # do not let it run late on the replica
            self._mark_down(i)
            MODEL_SERVICE_REQUESTS.labels("timeout").inc()
            raise ModelServiceUnavailable(
                f"model service replica {i} did not answer within {self._svc.timeout_s:g} s (model_service.timeout_s)"
            ) from None
        except ray.exceptions.RayActorError as err:  # died, restarting, its node lost
            self._mark_down(i)
            MODEL_SERVICE_REQUESTS.labels("unavailable").inc()
            raise ModelServiceUnavailable(
                f"model service replica {i} is unavailable (dead or restarting): {type(err).__name__}"
            ) from err
        except ModelServiceBusy as err:  # raised on the replica: refused or shed
            MODEL_SERVICE_REQUESTS.labels("busy").inc()
            raise ModelServiceBusy(_first_line(err)) from None
        except ModelServiceError as err:
            MODEL_SERVICE_REQUESTS.labels("failed").inc()
            raise ModelServiceError(_first_line(err)) from None
        MODEL_SERVICE_REQUESTS.labels("ok").inc()
        MODEL_SERVICE_SECONDS.observe(time.perf_counter() - started)
        # Results from Ray's object store can be read-only views: the caller may write them.
        return np.array(p_fake, np.float32, copy=True), np.array(embedding, np.float32, copy=True)

    def _warm_up(self) -> None:
        """One crop twice, the second call timed: the shard batcher's first forecast includes the round trip."""
        crop = np.zeros((1, self.input_size, self.input_size, 3), np.uint8)
        self.infer(crop)
        started = time.perf_counter()
        self.infer(crop)
        self.warm_seconds_per_crop = time.perf_counter() - started


def _first_line(err: BaseException) -> str:
    """A Ray task error's message without the remote traceback Ray prepends."""
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
