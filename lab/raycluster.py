"""A Ray cluster of several nodes on this machine (a head and workers), for the cluster tests and `bench cluster`.

Why a helper: both need the same care. The GCS port must lie outside Ray's worker ports
(10002-19999) and off Redis's 6379; the head has no CPUs, so shards land on worker nodes
only (one per node with one CPU each); node death is noticed in about 2 s rather than
Ray's default 30 (health checks every 0.5 s); Ray's files go under a short temporary
folder of our own; and `ray.cluster_utils.Cluster` writes its address into the
machine-wide /tmp/ray/ray_current_cluster, which other people's `ray.init("auto")` on
this machine reads: the previous content is put back as soon as the head is up.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")


def start_cluster(gcs_port: int, workers: int, cpus_per_worker: int = 1) -> tuple[Any, list[Any]]:
    """(the Cluster, its worker nodes); `cluster.shutdown()` ends it."""
    from ray.cluster_utils import Cluster

    before = _address()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "gcs_server_port": gcs_port, "include_dashboard": False,
        "temp_dir": tempfile.mkdtemp(prefix="sgray-"),
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4},
    })
    cluster._streamguard_address_before = before
    try:
        _restore(before)
        nodes = [cluster.add_node(num_cpus=cpus_per_worker) for _ in range(workers)]
    except BaseException:
        cluster.shutdown()
        raise
    return cluster, nodes


def stop_cluster(cluster: Any) -> None:
    """Shut it down, and leave the machine-wide address file as it was before (shutdown removes it)."""
    before = getattr(cluster, "_streamguard_address_before", None)
    try:
        cluster.shutdown()
    finally:
        _restore(before)


def _address() -> str | None:
    try:
        return ADDRESS_FILE.read_text()
    except OSError:
        return None


def _restore(content: str | None) -> None:
    """Put back what the address file held (nothing: remove it)."""
    try:
        if content is None:
            ADDRESS_FILE.unlink(missing_ok=True)
        else:
            ADDRESS_FILE.write_text(content)
    except OSError:
        pass
