"""The shared model service on a real Ray cluster: a head node carrying the service and a worker
node carrying two shard-like callers (each a `MicroBatcher` over a `RemoteEngine`, as a shard
runs it), inside a network namespace this module makes (tests/support/netns.py).

What must hold: scores equal the local engine's (raw exactly, JPEG within 0.01 on real face
crops); one request per call; the bounds on work in flight refuse or shed a burst, counted,
instead of queueing it; a replica killed with -9 comes back, the call it was serving fails
with a clear error that the caller's batcher counts, and later calls succeed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import numpy as np
import pytest

from tests.support import netns

OUTER_TIMEOUT_S = 420


if not netns.inside():

    @pytest.mark.slow
    def test_model_service_in_a_network_namespace() -> None:
        reason = netns.why_not()
        if reason is not None:
            pytest.skip(reason)
        code, output, counts = netns.rerun_inside(__file__, timeout=OUTER_TIMEOUT_S)
        print(output[-6000:])
        assert code == 0, output[-6000:]
        assert counts.get("passed", 0) >= 6 and not counts.get("failed") and not counts.get("skipped"), counts

else:
    import ray
    from ray.cluster_utils import Cluster

    from lab.bench.model import face_crops
    from streamguard.cluster.model_service import ModelServiceBusy, ModelServiceUnavailable, deploy_model_service
    from streamguard.cluster.remote_engine import RemoteEngine
    from streamguard.config import BatcherConfig, ModelConfig, ModelServiceConfig
    from streamguard.inference.batcher import MicroBatcher
    from streamguard.inference.registry import open_engine

    SIZE = 224
    MODEL = ModelConfig(arch="tiny", device="cpu", precision="fp32", threads=1, seed=0)
    GCS_PORT = 6391  # outside Ray's worker port range; not Redis's 6379

    # The callers' batcher: one engine call per submit (max_wait 0, room for any request here).
    SHARD_BATCHER = BatcherConfig(max_batch=256, max_wait_ms=0.0, queue_size=1024)

    class ShardLike:
        """What a shard does with its crops: its micro-batcher, over a RemoteEngine."""

        def __init__(self, replicas: list, svc: ModelServiceConfig, name: str):
            self.replicas, self.svc, self.name = replicas, svc, name
            self.batcher: MicroBatcher | None = None

        async def start(self) -> str:
            engine = await asyncio.to_thread(RemoteEngine, self.replicas, self.svc, caller=self.name)
            self.batcher = MicroBatcher(engine, SHARD_BATCHER)
            await self.batcher.start()
            return ray.get_runtime_context().get_node_id()

        async def infer(self, crops: np.ndarray) -> tuple:
            assert self.batcher is not None
            try:
                p_fake, embedding = await self.batcher.submit(crops)
            except Exception as err:
                return "failed", type(err).__name__, type(err.__cause__).__name__, str(err)
            return "ok", p_fake, embedding

        def engine_failures(self) -> float:
            from streamguard.metrics import REGISTRY

            return REGISTRY.get_sample_value("streamguard_engine_failures_total") or 0.0

    @pytest.fixture(scope="module")
    def cluster():
        c = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 2, "resources": {"model_node": 4}, "node_ip_address": "127.0.0.1",
                            "gcs_server_port": GCS_PORT, "include_dashboard": False, "object_store_memory": 200 * 2**20},
        )
        c.add_node(num_cpus=2, resources={"shard_node": 16}, node_ip_address="127.0.0.1", object_store_memory=200 * 2**20)
        ray.init(address=c.address, log_to_driver=False)
        try:
            yield c
        finally:
            ray.shutdown()
            c.shutdown()

    @pytest.fixture(scope="module")
    def local():
        engine = open_engine(MODEL, img_size=SIZE)
        yield engine
        engine.close()

    @pytest.fixture(scope="module")
    def crops() -> np.ndarray:
        return face_crops(24, SIZE, seed=3)

    def _deploy(svc: ModelServiceConfig) -> list:
        return deploy_model_service(MODEL, SIZE, svc, resources={"model_node": 1}, ready_timeout_s=180)

    @pytest.fixture(scope="module")
    def raw_service(cluster):
        svc = ModelServiceConfig(name="raw", crop_transport="raw", num_cpus=1, timeout_s=20,
                                 batcher=BatcherConfig(max_batch=64, max_wait_ms=20.0, queue_size=1024))
        return svc, _deploy(svc)

    def _shards(svc: ModelServiceConfig, replicas: list, n: int = 2) -> list:
        actor = ray.remote(num_cpus=0, resources={"shard_node": 1}, max_concurrency=8)(ShardLike)
        shards = [actor.remote(replicas, svc, f"{svc.name}-shard{i}") for i in range(n)]
        nodes = ray.get([s.start.remote() for s in shards], timeout=120)
        service_node = ray.get(replicas[0].describe.remote(), timeout=30).node_id
        assert service_node not in nodes and len(set(nodes)) == 1  # the service on one node, the callers on the other
        return shards

    def _stats(replica) -> dict:
        return ray.get(replica.stats.remote(), timeout=30)

    def test_raw_scores_equal_the_local_engine_one_request_per_call(raw_service, local, crops) -> None:
        svc, replicas = raw_service
        shards = _shards(svc, replicas)
        before = _stats(replicas[0])
        parts = {0: crops[:5], 1: crops[5:12]}
        for round_ in range(3):  # one caller at a time: each engine call holds one request's crops
            for i, shard in enumerate(shards):
                status, p_fake, embedding = ray.get(shard.infer.remote(parts[i]), timeout=60)
                assert status == "ok"
                ref_p, ref_e = local.infer(parts[i])
                assert np.array_equal(p_fake, ref_p) and np.array_equal(embedding, ref_e), round_
        after = _stats(replicas[0])
        assert after["requests"] - before["requests"] == 6  # one request per infer call, never one per crop
        assert {k: after["callers"][k] - before["callers"].get(k, 0) for k in after["callers"]} == {
            "raw-shard0": 3, "raw-shard1": 3}
        assert after["crops"] - before["crops"] == 3 * (5 + 7)

    def test_two_shards_at_once_batched_together(raw_service, local, crops) -> None:
        """Three submits per caller at once: each gets its own rows back. A shard's batcher pools the
        submits that wait behind its one call in flight into its next request (never more requests
        than submits), and the replica pools both shards' requests into engine calls; rows then share
        a call of another batch size, so the scores agree within float tolerance, not bit for bit."""
        svc, replicas = raw_service
        shards = _shards(svc, replicas)
        before = _stats(replicas[0])
        parts = [crops[i * 4:(i + 1) * 4] for i in range(6)]
        refs = [shards[i % 2].infer.remote(part) for i, part in enumerate(parts)]
        for part, result in zip(parts, ray.get(refs, timeout=120)):
            status, p_fake, embedding = result
            assert status == "ok"
            ref_p, ref_e = local.infer(part)
            np.testing.assert_allclose(p_fake, ref_p, atol=1e-5)
            np.testing.assert_allclose(embedding, ref_e, atol=1e-4)
        after = _stats(replicas[0])
        requests = after["requests"] - before["requests"]
        assert 2 <= requests <= 6
        assert after["crops"] - before["crops"] == 24
        assert after["engine_calls"] - before["engine_calls"] <= requests

    def test_jpeg_scores_within_0_01_of_the_local_engine(cluster, local, crops) -> None:
        svc = ModelServiceConfig(name="jpeg", crop_transport="jpeg", jpeg_quality=90, num_cpus=0, timeout_s=20)
        replicas = _deploy(svc)
        shards = _shards(svc, replicas)
        status, p_fake, embedding = ray.get(shards[0].infer.remote(crops), timeout=60)
        assert status == "ok"
        ref_p, ref_e = local.infer(crops)
        assert np.abs(p_fake - ref_p).max() <= 0.01
        cosine = (embedding * ref_e).sum(1) / np.linalg.norm(embedding, axis=1) / np.linalg.norm(ref_e, axis=1)
        assert cosine.min() > 0.99
        stats = _stats(replicas[0])
        assert stats["crop_bytes"] < crops.nbytes / 4  # JPEG crossed, not raw pixels
        ray.kill(replicas[0])

    def test_a_shard_keeps_at_most_concurrency_requests_in_flight(raw_service, crops) -> None:
        svc, replicas = raw_service
        engine = RemoteEngine(replicas, svc, caller="bound-test", warm_up=False)  # concurrency 1
        big = np.concatenate([crops] * 4)  # 96 crops: the replica computes for a while
        done = threading.Event()
        outcome: list = []

        def first() -> None:
            try:
                outcome.append(engine.infer(big))
            finally:
                done.set()

        thread = threading.Thread(target=first)
        thread.start()
        deadline = time.monotonic() + 30
        while _stats(replicas[0])["in_flight"] < 1:  # the first request has reached the replica
            assert time.monotonic() < deadline and not done.is_set()
        with pytest.raises(ModelServiceBusy, match="already in flight"):
            engine.infer(crops[:2])
        assert not done.is_set()  # refused while the first was in flight, not queued behind it
        thread.join(60)
        assert len(outcome) == 1 and len(outcome[0][0]) == len(big)

    # A replica whose batcher holds every request HOLD_S (no batch fills: max_batch is never reached),
    # so that a burst is all delivered while the first requests are still held: what it admits,
    # refuses and sheds is then decided by its bounds alone, not by how fast the engine is.
    HOLD_S = 5.0  # BatcherConfig.max_wait_ms allows up to 5 s

    def _burst(replica, crops: np.ndarray, n: int) -> list[str]:
        """n requests of 16 crops fired at once at `replica`, as a misbehaving caller would (no
        RemoteEngine, no per-shard bound): each one's outcome, in order."""
        refs = [replica.infer.remote(crops[:16], "burst") for _ in range(n)]
        outcomes = []
        for ref in refs:
            try:
                ray.get(ref, timeout=120)
                outcomes.append("ok")
            except ModelServiceBusy as err:
                outcomes.append("refused" if "refused a request" in str(err) else "shed")
        return outcomes

    def test_a_replica_refuses_a_burst_beyond_max_requests_and_sheds_beyond_its_queue(cluster, crops) -> None:
        held = BatcherConfig(max_batch=1024, max_wait_ms=HOLD_S * 1000, queue_size=1024)
        bounded = ModelServiceConfig(name="bounded", crop_transport="raw", num_cpus=0, max_requests=3, timeout_s=60,
                                     batcher=held)
        shedding = ModelServiceConfig(name="shedding", crop_transport="raw", num_cpus=0, max_requests=64, timeout_s=60,
                                      batcher=held.model_copy(update={"queue_size": 32}))
        (refuser,), (shedder,) = _deploy(bounded), _deploy(shedding)
        refused: list[str] = []
        shed: list[str] = []
        bursts = [threading.Thread(target=lambda r=r, o=o: o.extend(_burst(r, crops, 12)))
                  for r, o in ((refuser, refused), (shedder, shed))]
        for thread in bursts:
            thread.start()
        for thread in bursts:
            thread.join(180)
        # max_requests 3: three held, the nine others refused at once, never queued
        stats = _stats(refuser)
        assert refused.count("ok") == stats["scored"] == 3, (refused, stats)
        assert refused.count("refused") == stats["refused"] == 9 and stats["peak_in_flight"] == 3
        assert stats["requests"] == 12 and stats["in_flight"] == 0 and stats["shed"] == 0
        # a queue of 32 crops: every request admitted, each new one shedding the oldest; the last two scored
        stats = _stats(shedder)
        assert shed == ["shed"] * 10 + ["ok"] * 2, (shed, stats)
        assert stats["shed"] == 10 and stats["scored"] == 2 and stats["refused"] == 0 and stats["in_flight"] == 0
        ray.kill(refuser)
        ray.kill(shedder)

    def test_a_killed_replica_comes_back_and_the_shard_recovers(raw_service, local, crops) -> None:
        svc, replicas = raw_service
        shard = _shards(svc, replicas, n=1)[0]
        info = ray.get(replicas[0].describe.remote(), timeout=30)
        failures_before = ray.get(shard.engine_failures.remote(), timeout=30)
        big = np.concatenate([crops] * 4)
        in_flight = shard.infer.remote(big)
        deadline = time.monotonic() + 30
        while _stats(replicas[0])["in_flight"] < 1:
            assert time.monotonic() < deadline
        os.kill(info.pid, signal.SIGKILL)
        status, error, cause, message = ray.get(in_flight, timeout=60)
        # The call the replica was serving fails clearly, and the shard's batcher counts it
        assert (status, error, cause) == ("failed", "EngineFailed", ModelServiceUnavailable.__name__), message
        assert "unavailable" in message
        assert ray.get(shard.engine_failures.remote(), timeout=30) == failures_before + 1
        # Ray restarts the replica (max_restarts=-1); the shard's handle reaches it without reconnecting
        deadline = time.monotonic() + 90
        while True:
            result = ray.get(shard.infer.remote(crops[:3]), timeout=60)
            if result[0] == "ok":
                break
            assert time.monotonic() < deadline, result
        ref_p, _ = local.infer(crops[:3])
        assert np.array_equal(result[1], ref_p)
        back = ray.get(replicas[0].describe.remote(), timeout=30)
        assert back.pid != info.pid and back.incarnation == info.incarnation + 1
