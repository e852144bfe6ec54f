"""A live pipeline for tests, and a reader of the events it publishes to Redis.

The pipeline runs an untrained `tiny` model at threshold 0 (every tracked face
alerts, which proves the wiring), publishes through the real RedisSink on keys of
its own, and can serve the HTTP API on a free loopback port. WebRTC is limited to
127.0.0.1 (`webrtc.additional_hosts`), so every test stays on loopback.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from streamguard.events import EventV1, StreamEventV1, parse_any_event
from streamguard.redis.sink import RedisSink
from streamguard.config import Config, build_config
from streamguard.app import running
from streamguard.pipeline import Pipeline
from streamguard.server import HttpServer
from streamguard.types import Sample

Event = EventV1 | StreamEventV1
LOOPBACK_WEBRTC = {"host_interfaces": False, "additional_hosts": ["127.0.0.1"]}


class EventReader:
    """Every event published on a Redis Stream key, read in order (XRANGE, polled)."""

    def __init__(self, url: str, key: str) -> None:
        self._client = aioredis.Redis.from_url(url)
        self._key = key
        self._last: str | None = None
        self.events: list[Event] = []

    async def poll(self) -> None:
        start = "-" if self._last is None else f"({self._last}"
        for entry_id, fields in await self._client.xrange(self._key, min=start):
            self._last = entry_id.decode()
            self.events.append(parse_any_event(fields[b"event"]))

    async def wait_for(self, match: Callable[[Event], bool], timeout: float, after: int = 0, what: str = "") -> Event:
        """The first event from index `after` on that matches; fails the test after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            await self.poll()
            for event in self.events[after:]:
                if match(event):
                    return event
            if time.monotonic() > deadline:
                seen = [(e.type, e.stream, getattr(e, "state", "")) for e in self.events[after:]][-20:]
                pytest.fail(f"no {what or 'matching event'} within {timeout} s; last events: {seen}")
            await asyncio.sleep(0.05)

    def states(self, stream: str) -> list[str]:
        return [e.state for e in self.events if isinstance(e, StreamEventV1) and e.stream == stream]

    def alerts(self, stream: str, since: float = 0.0) -> list[EventV1]:
        return [e for e in self.events if isinstance(e, EventV1) and e.type == "alert" and e.stream == stream and e.ts >= since]

    async def close(self) -> None:
        await self._client.aclose()


@dataclass
class Live:
    cfg: Config
    pipeline: Pipeline
    events: EventReader
    server: HttpServer | None
    samples: list[tuple[Sample, float]] = field(default_factory=list)  # (sample, unix time it was scored)
    watches: list[Any] = field(default_factory=list)  # the connectors' ConnectorWatch es (cfg.connectors)


def live_config(serve: bool = False, token: str | None = None, streams: dict[str, str] | None = None, **sections: Any) -> Config:
    """Test config: tiny model, threshold 0, keys of its own, loopback WebRTC; `sections` override."""
    tag = uuid.uuid4().hex[:8]
    data: dict[str, Any] = {
        "model": {"arch": "tiny"},
        "scoring": {"threshold": 0.0, "scores_interval_s": 0},
        "redis": {"channel": f"test:{tag}:alerts", "stream_key": f"test:{tag}:events", "thumbnails": False},
        "webrtc": LOOPBACK_WEBRTC,
        "http": {"bind": "127.0.0.1:0", "token": token} if serve else {},
        "streams": [{"name": n, "url": u} for n, u in (streams or {}).items()],
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return build_config(data)


@asynccontextmanager
async def live_pipeline(redis_url: str, cfg: Config) -> AsyncIterator[Live]:
    """The app as `run` composes it (`streamguard.app.running`), with an event reader on its Stream."""
    events = EventReader(redis_url, cfg.redis.stream_key)
    samples: list[tuple[Sample, float]] = []
    try:
        async with running(cfg, RedisSink(cfg.redis, redis_url), on_sample=lambda s: samples.append((s, time.time())),
                           flush_timeout=5.0) as app:
            yield Live(cfg, app.pipeline, events, app.server, samples, app.watches)
        await events.poll()  # the events of the shutdown too
    finally:
        await events.close()


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for a condition only observable by looking (a counter, a state), failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout} s")
        await asyncio.sleep(0.02)
