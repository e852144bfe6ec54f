"""Waiting for the first of several things without leaving tasks behind.

Why: `asyncio.wait` returns with the others still pending; whoever waits owns those
tasks, so it cancels and awaits them before it goes on (no fire-and-forget).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def first_of(*waits: Awaitable[object], timeout: float | None = None) -> None:
    """Return once one of `waits` is done or `timeout` passes; the rest are cancelled and awaited."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
