"""The sink's fence (cluster mode) against a real redis-server: a stale epoch cannot publish.

No Ray here: the director's part is three Redis writes (epoch, owner), done by hand.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from streamguard import metrics
from streamguard.config import RedisConfig
from streamguard.events import EventV1, ModelInfo, parse_any_event
from streamguard.redis.fence import ClusterKeys, Fence
from streamguard.redis.sink import RedisSink

KEYS = ClusterKeys("test:fence:")


def event(kind: str, alert_id: str, stream: str = "s") -> EventV1:
    return EventV1(type=kind, id=alert_id, stream=stream, track=1, score=0.9, threshold=0.5, window_s=4.0, samples=5, ts=1.0,
                   pts=1.0, box=(0.1, 0.1, 0.2, 0.2), model=ModelInfo(name="m", digest="d", trained=True), reason="threshold")


async def assign(client: aioredis.Redis, stream: str, shard: str) -> int:
    """What the director does: bump the epoch, name the owner."""
    epoch = await client.hincrby(KEYS.epochs, stream, 1)
    await client.hset(KEYS.owners, stream, shard)
    return epoch


async def stored(client: aioredis.Redis, key: str) -> list[tuple[str, str, int | None, int | None]]:
    return [(e.type, e.id, e.epoch, e.seq) for e in (parse_any_event(f[b"event"]) for _, f in await client.xrange(key))]


async def test_the_owner_publishes_and_a_stale_owner_is_refused_and_counted(fresh_redis):
    cfg = RedisConfig(url=fresh_redis.url)
    client = aioredis.Redis.from_url(fresh_redis.url)
    lost: list[str] = []
    old, new = Fence(KEYS, on_fenced=lost.append), Fence(KEYS)
    old_sink, new_sink = RedisSink(cfg, fresh_redis.url, old), RedisSink(cfg, fresh_redis.url, new)
    await old_sink.start()
    await new_sink.start()
    fenced_before = metrics.EVENTS_FENCED._value.get()
    try:
        old.own("s", await assign(client, "s", "shard-a"))
        old_sink.publish(event("alert", "x"))
        old_sink.publish(event("update", "x"))
        assert await old_sink.flush(10)
        assert await client.hkeys(KEYS.open_alerts("s")) == [b"x"]  # open, with its last event, for a next owner

        new.own("s", await assign(client, "s", "shard-b"))  # failover: epoch 2
        old_sink.publish(event("clear", "x"))  # the stale owner wakes up: refused
        assert await old_sink.flush(10)
        new_sink.publish(event("clear", "x").model_copy(update={"reason": "failover"}))
        assert await new_sink.flush(10)

        assert await stored(client, cfg.stream_key) == [("alert", "x", 1, 1), ("update", "x", 1, 2), ("clear", "x", 2, 1)]
        assert old.fenced == 1 and lost == ["s"] and new.fenced == 0
        assert old_sink.published == 2 and new_sink.published == 1  # a refused event is not counted as published
        assert int(await client.hget(KEYS.fenced, "s")) == 1
        assert metrics.EVENTS_FENCED._value.get() == fenced_before + 1
        assert await client.hlen(KEYS.open_alerts("s")) == 0  # cleared once, by the new owner
    finally:
        await old_sink.close()
        await new_sink.close()
        await client.aclose()


async def test_a_stream_not_owned_here_is_refused_before_redis(fresh_redis):
    cfg = RedisConfig(url=fresh_redis.url)
    fence = Fence(KEYS)
    sink = RedisSink(cfg, fresh_redis.url, fence)
    await sink.start()
    try:
        sink.publish(event("alert", "y", stream="other"))
        assert sink.pending == 0 and fence.fenced == 1
    finally:
        await sink.close()


async def test_a_redis_that_forgot_the_script_gets_it_again(fresh_redis):
    cfg = RedisConfig(url=fresh_redis.url)
    client = aioredis.Redis.from_url(fresh_redis.url)
    fence = Fence(KEYS)
    sink = RedisSink(cfg, fresh_redis.url, fence)
    await sink.start()
    try:
        fence.own("s", await assign(client, "s", "shard-a"))
        await client.script_flush()  # as after a Redis restart: NOSCRIPT on the next EVALSHA
        sink.publish(event("alert", "z"))
        assert await sink.flush(10)
        assert await stored(client, cfg.stream_key) == [("alert", "z", 1, 1)]
    finally:
        await sink.close()
        await client.aclose()


async def test_without_a_fence_events_carry_no_epoch(fresh_redis):
    cfg = RedisConfig(url=fresh_redis.url)
    client = aioredis.Redis.from_url(fresh_redis.url)
    sink = RedisSink(cfg, fresh_redis.url)
    await sink.start()
    try:
        sink.publish(event("alert", "w"))
        assert await sink.flush(10)
        assert await stored(client, cfg.stream_key) == [("alert", "w", None, None)]
        assert not await client.exists(KEYS.open_alerts("s"))  # one host: nothing of the cluster's
    finally:
        await sink.close()
        await client.aclose()


async def test_an_event_sent_again_is_written_once(fresh_redis):
    # A lost connection mid-batch makes the sink send the batch again (nobody knows what ran): the script
    # remembers the (epoch, seq) it wrote last per stream and writes nothing twice.
    cfg = RedisConfig(url=fresh_redis.url)
    client = aioredis.Redis.from_url(fresh_redis.url)
    fence = Fence(KEYS)
    sink = RedisSink(cfg, fresh_redis.url, fence)
    await sink.start()
    try:
        fence.own("s", await assign(client, "s", "shard-a"))
        sink.publish(event("alert", "v"))
        assert await sink.flush(10)
        payload = (await client.xrange(cfg.stream_key))[0][1][b"event"]
        again = await client.evalsha(fence.sha, 6, KEYS.epochs, KEYS.owners, cfg.stream_key, KEYS.open_alerts("s"), KEYS.fenced,
                                     KEYS.written, "s", 1, cfg.channel, payload, cfg.maxlen, "alert", "v", 1)
        assert again == 2 and await client.xlen(cfg.stream_key) == 1
        sink.publish(event("update", "v"))  # the next one goes through
        assert await sink.flush(10)
        assert await stored(client, cfg.stream_key) == [("alert", "v", 1, 1), ("update", "v", 1, 2)]
    finally:
        await sink.close()
        await client.aclose()
