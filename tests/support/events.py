"""Events as tests make and read them: a numbered alert, and the tracks a Redis Stream holds in order."""

from __future__ import annotations

import redis.asyncio as aioredis

from streamguard.events import EventV1, ModelInfo, parse_event

def event(i: int) -> EventV1:
    return EventV1(type="alert", id=f"id{i}", stream="s", track=i, score=0.9, threshold=0.5, window_s=4.0,
                   samples=5, ts=1.0 + i, pts=float(i), box=(0.1, 0.1, 0.2, 0.2),
                   model=ModelInfo(name="m", digest="d", trained=True), reason="threshold")


async def stream_tracks(url: str, key: str) -> list[int]:
    client = aioredis.Redis.from_url(url)
    try:
        entries = await client.xrange(key)
        return [parse_event(fields[b"event"]).track for _, fields in entries]
    finally:
        await client.aclose()
