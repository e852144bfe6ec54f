"""numpy's OpenBLAS runs on one thread in streamguard processes.

The tracker's Kalman filters and the re-id distances call numpy's BLAS many times per
frame on tiny matrices. OpenBLAS wakes its thread pool for them, and the idle pool
threads then busy-wait for more work: measured on the 2-core CPU, one 1080p stream's
decode + detection + tracking took 0.64 of a core with the default pool and 0.13
with one thread, the difference being one spinning `blas_thread_server` thread that
also took CPU from the model (docs/benchmarks.md, "Whole pipeline"). Only numpy's own
copy is limited: torch and onnxruntime size their thread pools themselves.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def limit_numpy_blas_threads() -> None:
    """Set numpy's BLAS to one thread, process-wide (idempotent)."""
    import numpy  # noqa: F401  (load its BLAS so the controller finds it)
    from threadpoolctl import ThreadpoolController

    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api == "blas" and "numpy" in lib.filepath and lib.num_threads != 1:
            lib.set_num_threads(1)
            log.debug("numpy BLAS (%s) limited to one thread", lib.filepath)
