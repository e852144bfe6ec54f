"""A source under test: made with a state log, its frames collected for a while, its task stopped within a bound."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from streamguard.config import IngestConfig, StreamConfig
from streamguard.ingest import LatestQueue, StreamSource
from streamguard.metrics import REGISTRY
from streamguard.samples import render_frame
from streamguard.types import Frame

def make_source(
    url: str, name: str, queue_size: int = 1, **ingest
) -> tuple[StreamSource, LatestQueue[Frame], list[tuple[str, str]]]:
    """A source with a state log; `ingest` overrides IngestConfig fields."""
    queue: LatestQueue[Frame] = LatestQueue(queue_size)
    states: list[tuple[str, str]] = []
    source = StreamSource(
        StreamConfig(name=name, url=url), IngestConfig(**ingest), queue, on_state=lambda _n, s, d: states.append((s, d))
    )
    return source, queue, states


async def wait_for_state(states: list[tuple[str, str]], state: str, timeout: float, after: int = 0) -> None:
    """Wait until `state` appears in `states[after:]` (on_state runs on the loop)."""
    deadline = time.monotonic() + timeout
    while not any(s == state for s, _ in states[after:]):
        if time.monotonic() > deadline:
            pytest.fail(f"no {state!r} within {timeout} s; states: {states}")
        await asyncio.sleep(0.01)


async def collect(queue: LatestQueue[Frame], seconds: float) -> list[Frame]:
    """Frames that arrive within `seconds` from now."""
    frames: list[Frame] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frames.append(await asyncio.wait_for(queue.get(), left))
        except TimeoutError:
            break
    return frames


async def stop(task: asyncio.Task, within: float = 2.0) -> None:
    """Cancel `task` and check it finished within `within` seconds."""
    task.cancel()
    start = time.monotonic()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), within)
    assert time.monotonic() - start < within


def looks_like_sample_at(frame: Frame) -> bool:
    """The frame shows the sample video at its pts (compression error only)."""
    diff = np.abs(frame.rgb.astype(np.int16) - render_frame(frame.pts)).mean()
    return bool(diff < 5.0)  # ~1.6 at the right time, ~20 one second off


def metric(name: str, stream: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"stream": stream})
