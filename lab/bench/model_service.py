"""`streamguard bench model-service`: the crops/s a shared model deployment receives from several
callers, against the same engine alone, side by side in one run; and raw against JPEG crops.

A Ray cluster of one head node (carrying the model: the service replica, and in its turn the
engine alone, with the same CPUs and threads) and `--nodes` worker nodes carrying `--callers`
caller actors, each a `RemoteEngine` sending requests of `--per-request` crops back to back, as
a shard with that many faces per tick would. Each round runs every case once, the engine alone
(one process calling `infer` on ready batches of the size the service's batches reach at most)
and the service with each transport, in an order reversed every other round, so that the drift
of a shared machine's speed falls on all cases alike; a case's ratio to the engine alone is
taken within its round, and the medians over `--rounds` are reported with the range. On a small
CPU host the callers, Ray and the engine share the same cores, so the ratio counts that
contention along with the transport; on a cluster the callers run on other nodes.

With `--address` the bench joins a running cluster (a GPU worker group: `--num-gpus 1
--device cuda`) instead of starting one here. Then the model node is the one with a GPU and
the callers go wherever Ray places them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamguard.config import BatcherConfig, ModelConfig, ModelServiceConfig
from streamguard.errors import ConfigError

GCS_PORT = 6392  # outside Ray's worker port range (10002-19999), not Redis's 6379
START_LEAD_S = 3.0  # every caller starts its window this long after the round was sent (after its warm call)


@dataclass(frozen=True)
class ServiceBenchOptions:
    arch: str = "tiny"
    device: str = "cpu"
    img_size: int = 224
    callers: int = 4
    per_request: int = 8
    seconds: float = 6.0
    rounds: int = 6
    nodes: int = 1  # worker nodes started here for the callers (without --address)
    service_cpus: float = 1.0
    num_gpus: float = 0.0
    threads: int | None = 1
    max_batch: int = 64
    jpeg_quality: int = 90
    transports: tuple[str, ...] = ("raw", "jpeg")
    address: str | None = None
    checkpoint: Path | None = None


class EngineAlone:
    """The engine, opened as a replica opens it, called on ready batches: what the model does alone."""

    def __init__(self, model: ModelConfig, size: int, crops: np.ndarray):
        from streamguard.inference.registry import open_engine

        self.engine = open_engine(model, img_size=size)
        self.crops = np.array(crops)  # writable, as a batcher's concatenation is

    def ready(self) -> bool:
        return True

    def run(self, start_at: float, stop_at: float) -> dict[str, Any]:
        n = calls = 0
        self.engine.infer(self.crops)  # warm at this batch size, before the window
        while time.time() < start_at:
            time.sleep(0.005)
        began = time.time()
        while True:  # at least one call, even when the warm call ran past the window
            self.engine.infer(self.crops)
            last = time.time()
            n, calls = n + len(self.crops), calls + 1
            if last >= stop_at:
                break
        return {"crops": n, "calls": calls, "crops_per_s": n / (last - began)}


class Caller:
    """A shard's share of the load: one RemoteEngine sending requests back to back."""

    def __init__(self, replicas: list, svc: ModelServiceConfig, crops: np.ndarray, name: str):
        from streamguard.cluster.remote_engine import RemoteEngine

        self.engine = RemoteEngine(replicas, svc, caller=name)
        self.crops = crops

    def ready(self) -> bool:
        return True

    def run(self, start_at: float, stop_at: float) -> dict[str, Any]:
        crops, latencies, errors = 0, [], 0
        self.engine.infer(self.crops)  # warm, before the window
        while time.time() < start_at:
            time.sleep(0.005)
        began = time.time()  # later than start_at if the warm call ran long
        while True:  # until a request ends past the window, at least one
            t0 = time.time()
            try:
                self.engine.infer(self.crops)
            except Exception:
                errors += 1
            else:
                crops += len(self.crops)
                latencies.append(time.time() - t0)
            last = time.time()
            if last >= stop_at:
                break
        return {"crops": crops, "requests": len(latencies), "errors": errors, "latencies": latencies,
                "crops_per_s": crops / (last - began)}


def _cluster(opts: ServiceBenchOptions) -> Any:
    import ray

    if opts.address is not None:
        ray.init(address=opts.address, log_to_driver=False)
        return None
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        # the engine alone and one replica per transport each reserve service_cpus (they take turns)
        "num_cpus": math.ceil(opts.service_cpus * (1 + len(opts.transports))), "num_gpus": math.ceil(opts.num_gpus),
        "resources": {"model_node": 4}, "node_ip_address": "127.0.0.1",
        "gcs_server_port": GCS_PORT, "include_dashboard": False, "object_store_memory": 300 * 2**20,
    })
    for _ in range(opts.nodes):
        cluster.add_node(num_cpus=1, resources={"caller_node": 1000}, node_ip_address="127.0.0.1",
                         object_store_memory=200 * 2**20)
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster


def _round_case(actors: list, seconds: float) -> list[dict[str, Any]]:
    """Every actor's `run` over the same window of wall-clock time (one host, or NTP-synchronised nodes)."""
    import ray

    start_at = time.time() + START_LEAD_S
    return ray.get([a.run.remote(start_at, start_at + seconds) for a in actors], timeout=seconds + 600)


def run_bench(opts: ServiceBenchOptions) -> dict[str, Any]:
    import ray

    from lab.bench.model import face_crops, machine
    from streamguard.cluster.model_service import deploy_model_service

    load_before = os.getloadavg()[0]
    model = ModelConfig(arch=None if opts.checkpoint else opts.arch, checkpoint=opts.checkpoint, device=opts.device,
                        precision="fp32" if opts.device == "cpu" else "auto", threads=opts.threads)
    crops = face_crops(opts.per_request, opts.img_size)
    batch = min(opts.max_batch, opts.callers * opts.per_request)  # what the service's batches reach at most
    alone_crops = face_crops(batch, opts.img_size, seed=1)
    cluster = _cluster(opts)
    on_model_node = {"model_node": 1} if cluster is not None else {}
    on_caller_node = {"caller_node": 1} if cluster is not None else {}
    gpus = opts.num_gpus / (1 + len(opts.transports))  # the cases take turns on one GPU
    try:
        alone = ray.remote(EngineAlone).options(num_cpus=opts.service_cpus, num_gpus=gpus,
                                                resources=on_model_node).remote(model, opts.img_size, alone_crops)
        services, callers = {}, {}
        for transport in opts.transports:
            svc = ModelServiceConfig(
                name=f"bench-{transport}", crop_transport=transport, jpeg_quality=opts.jpeg_quality,
                num_cpus=opts.service_cpus, num_gpus=gpus,
                timeout_s=60, batcher=BatcherConfig(max_batch=opts.max_batch, max_wait_ms=5.0, queue_size=4096),
            )
            replicas = deploy_model_service(model, opts.img_size, svc, resources=on_model_node or None)
            services[transport] = replicas
            caller = ray.remote(Caller).options(num_cpus=0, resources=on_caller_node)
            callers[transport] = [caller.remote(replicas, svc, crops, f"caller{i}") for i in range(opts.callers)]
        # every caller constructed (imports, its RemoteEngine's warm-up) before any case is timed
        ray.get([c.ready.remote() for cs in callers.values() for c in cs] + [alone.ready.remote()], timeout=600)
        rows: dict[str, list[dict[str, Any]]] = {"alone": [], **{t: [] for t in opts.transports}}
        cases = ["alone", *opts.transports]
        for round_ in range(opts.rounds):
            # every case once per round, the order reversed every other round: drift in the machine's
            # speed (other jobs) falls on all cases alike, and each ratio is taken within its round
            for transport in cases if round_ % 2 == 0 else cases[::-1]:
                if transport == "alone":
                    rows["alone"].append({"crops_per_s": _round_case([alone], opts.seconds)[0]["crops_per_s"],
                                          "round": round_})
                    continue
                before = ray.get(services[transport][0].stats.remote())
                results = _round_case(callers[transport], opts.seconds)
                after = ray.get(services[transport][0].stats.remote())
                latencies = sorted(x for r in results for x in r["latencies"])
                calls = after["engine_calls"] - before["engine_calls"]
                rows[transport].append({
                    "round": round_,
                    "crops_per_s": sum(r["crops_per_s"] for r in results),
                    "requests": sum(r["requests"] for r in results),
                    "errors": sum(r["errors"] for r in results),
                    "crops_per_engine_call": (after["crops"] - before["crops"]) / calls if calls else 0.0,
                    "bytes_per_crop": (after["crop_bytes"] - before["crop_bytes"]) / max(1, after["crops"] - before["crops"]),
                    "latency_p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
                    "latency_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
                    "refused": after["refused"] - before["refused"],
                    "shed": after["shed"] - before["shed"],
                })
        alone_by_round = {r["round"]: r["crops_per_s"] for r in rows["alone"]}
        alone_rate = statistics.median(alone_by_round.values())
        summary: dict[str, Any] = {"alone": {"crops_per_s": round(alone_rate, 2), "batch": batch}}
        for transport in opts.transports:
            rs = rows[transport]
            for r in rs:
                r["ratio_to_alone"] = r["crops_per_s"] / alone_by_round[r["round"]] if alone_by_round[r["round"]] else None
            ratios = [r["ratio_to_alone"] for r in rs if r["ratio_to_alone"] is not None]
            summary[transport] = {
                "crops_per_s": round(statistics.median(r["crops_per_s"] for r in rs), 2),
                "ratio_to_alone": round(statistics.median(ratios), 3) if ratios else None,  # median of per-round ratios
                "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)] if ratios else None,
                **{k: _median(r[k] for r in rs) for k in ("crops_per_engine_call", "bytes_per_crop", "latency_p50_ms",
                                                          "latency_p99_ms")},
                **{k: sum(r[k] for r in rs) for k in ("requests", "errors", "refused", "shed")},
            }
        return {
            "bench": "model-service",
            "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after: other jobs on the host
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
            "machine": machine(opts.device),
            "ray": ray.__version__,
            "nodes": len([n for n in ray.nodes() if n["Alive"]]),
            "summary": summary,
            "rounds": rows,
        }
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def _median(values: Any) -> float | None:
    vs = [v for v in values if v is not None]
    return round(statistics.median(vs), 2) if vs else None


def table(result: dict[str, Any]) -> str:
    o, s = result["options"], result["summary"]
    lines = [
        f"model service: {o['arch']} on {o['device']} at {o['img_size']} px, {o['callers']} callers x {o['per_request']} "
        f"crops per request, {result['nodes']} Ray nodes, {o['rounds']} rounds of {o['seconds']:g} s; "
        f"{result['machine']['cpu']} ({result['machine']['cores']} cores), load average {result['loadavg_1m'][0]:g} -> "
        f"{result['loadavg_1m'][1]:g}",
        f"{'case':<14} {'crops/s':>8} {'vs alone':>8} {'range':>11} {'crops/call':>10} {'bytes/crop':>10} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'refused':>7} {'shed':>5}",
        f"{'engine alone':<14} {s['alone']['crops_per_s']:>8.1f} {1.0:>8.3f} {'':>11} {s['alone']['batch']:>10}",
    ]
    for t in o["transports"]:
        r = s[t]
        name = "service raw" if t == "raw" else f"service jpeg{o['jpeg_quality']}"
        lines.append(
            f"{name:<14} {r['crops_per_s']:>8.1f} {r['ratio_to_alone']:>8.3f} "
            f"{r['ratio_range'][0]:>5.2f}-{r['ratio_range'][1]:<5.2f} {r['crops_per_engine_call'] or 0:>10.1f} "
            f"{r['bytes_per_crop'] or 0:>10.0f} {r['latency_p50_ms'] or 0:>7.1f} {r['latency_p99_ms'] or 0:>7.1f} "
            f"{r['refused']:>7} {r['shed']:>5}"
        )
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------


def cmd(args: argparse.Namespace) -> int:
    from lab.bench.crop_transport import open_reference_engine, transport_table, transport_text
    from lab.bench.model import face_crops
    from lab.bench.commands import _words

    for flag in ("callers", "per_request", "rounds", "transport_crops"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not args.seconds > 0:
        raise ConfigError(f"--seconds must be > 0, got {args.seconds}")
    opts = ServiceBenchOptions(
        arch=args.arch, device=args.device, img_size=args.img_size, callers=args.callers, per_request=args.per_request,
        seconds=args.seconds, rounds=args.rounds, nodes=args.nodes, service_cpus=args.service_cpus,
        num_gpus=args.num_gpus, threads=args.threads, max_batch=args.max_batch, jpeg_quality=args.jpeg_quality,
        transports=_words(args.transports, ["raw", "jpeg"], "--transports") or ("raw", "jpeg"),
        address=args.address, checkpoint=args.checkpoint,
    )
    reference = open_reference_engine(args.arch, args.checkpoint, args.img_size)
    try:
        transport = transport_table(reference, face_crops(args.transport_crops, args.img_size))
    finally:
        reference.close()
    print(transport_text(transport), flush=True)
    result = run_bench(opts) if args.service_seconds else {}
    result["transport"] = transport
    if args.service_seconds:
        print(table(result))
    print(json.dumps(result))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_model_service_{opts.arch}_{opts.device}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


def add_parser(bench_sub: argparse._SubParsersAction) -> None:
    from lab.bench.commands import ARCHS, RESULTS

    p = bench_sub.add_parser("model-service", help="a shared model deployment fed by several callers vs the engine alone; "
                             "raw vs JPEG crops (needs the cluster extra: Ray)")
    p.add_argument("--arch", choices=ARCHS, default="tiny")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs (cuda: with --num-gpus 1)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--callers", type=int, default=4, help="caller actors (shards) feeding the service")
    p.add_argument("--per-request", type=int, default=8, help="crops per request (a shard's crops per tick)")
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds per case and round")
    p.add_argument("--rounds", type=int, default=6,
                   help="rounds of every case (the engine alone and each transport); medians of the rates and of each round's ratios")
    p.add_argument("--nodes", type=int, default=1, help="worker nodes started here for the callers (without --address)")
    p.add_argument("--service-cpus", type=float, default=1.0, help="CPUs of the replica and of the engine alone")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs of the replica and the engine alone (they take turns)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the model (the same alone and in the service)")
    p.add_argument("--max-batch", type=int, default=64, help="the service's micro-batch")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--transports", help="comma list of raw, jpeg (default both)")
    p.add_argument("--transport-crops", type=int, default=64, help="real face crops for the raw-vs-JPEG table")
    p.add_argument("--no-service", dest="service_seconds", action="store_false",
                   help="only the raw-vs-JPEG table (no Ray cluster)")
    p.add_argument("--address", help="join this Ray cluster instead of starting one here (head node + --nodes workers)")
    p.add_argument("--checkpoint", type=Path, help="weights to run (default: untrained, seeded)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON (default benchmarks/results)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd)
