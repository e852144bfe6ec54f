"""Who decides where a stream runs, as the front door sees it.

Why: the front door (front_door.py) serves one API for many workers. Under `run
--processes` the workers are the truth: a new stream goes by HTTP to the worker with
the fewest streams, and that is all (no Placement: the front door forwards). On a Ray
cluster a stream must also be recorded with an owner and an epoch (for failover and
fencing), so adding, removing and WHIP claims go through the director instead
(cluster/driver.py implements this protocol); reading (/streams, /metrics, /healthz,
one stream's status) still goes to the workers' own APIs in both modes.
"""

from __future__ import annotations

from typing import Protocol


class Placement(Protocol):
    async def add(self, name: str, body: bytes) -> tuple[int, str]:
        """Place a new stream (the client's POST /streams body); the (status, body) to answer."""

    async def remove(self, name: str) -> tuple[int, str]:
        """Stop and forget a stream; the (status, body) to answer (404 if there is none)."""

    async def claim(self, name: str, worker: int) -> tuple[int, str]:
        """A WHIP publisher is about to publish `name` to `worker`: record it (200) or say why not."""

    async def unowned(self) -> list[str]:
        """Streams that should run but have no live owner right now."""
