"""RedisSink against a real redis-server: delivery, order, outage and overflow."""

import asyncio

import redis.asyncio as aioredis

from streamguard.events import parse_event
from streamguard.redis.sink import RedisSink
from streamguard.config import RedisConfig
from tests.support.events import event, stream_tracks



async def test_events_reach_channel_and_stream_in_order(fresh_redis):
    cfg = RedisConfig(url=fresh_redis.url)
    listener = aioredis.Redis.from_url(fresh_redis.url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(cfg.channel)
    await pubsub.get_message(timeout=1.0)  # subscribe confirmation
    sink = RedisSink(cfg, fresh_redis.url)
    await sink.start()
    for i in range(20):
        sink.publish(event(i))
    assert await sink.flush(timeout=10)
    received = []
    while len(received) < 20:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
        assert msg is not None, f"only {len(received)} of 20 events arrived on the channel"
        received.append(parse_event(msg["data"]).track)
    await sink.close()
    await pubsub.aclose()
    await listener.aclose()
    assert received == list(range(20))
    assert await stream_tracks(fresh_redis.url, cfg.stream_key) == list(range(20))
    assert sink.published == 20 and sink.dropped == 0


async def test_outage_buffers_in_order_then_delivers(fresh_redis):
    cfg = RedisConfig(url=fresh_redis.url, buffer_size=100)
    sink = RedisSink(cfg, fresh_redis.url)
    await sink.start()
    sink.publish(event(0))
    assert await sink.flush(timeout=10)
    fresh_redis.stop()
    for i in range(1, 31):
        sink.publish(event(i))
    assert not await sink.flush(timeout=1.0)  # nowhere to deliver: still buffered
    assert sink.pending == 30 and sink.dropped == 0
    fresh_redis.start()  # same port, empty server
    assert await sink.flush(timeout=20)
    await sink.close()
    assert await stream_tracks(fresh_redis.url, cfg.stream_key) == list(range(1, 31))
    assert sink.dropped == 0


async def test_overflow_drops_oldest_and_counts(fresh_redis):
    cfg = RedisConfig(url=fresh_redis.url, buffer_size=5)
    fresh_redis.stop()
    sink = RedisSink(cfg, fresh_redis.url)
    await sink.start()
    for i in range(8):
        sink.publish(event(i))
    assert sink.dropped == 3 and sink.pending == 5
    fresh_redis.start()
    assert await sink.flush(timeout=20)
    await sink.close()
    assert await stream_tracks(fresh_redis.url, cfg.stream_key) == [3, 4, 5, 6, 7]


async def test_close_counts_undeliverable_events(fresh_redis):
    fresh_redis.stop()
    sink = RedisSink(RedisConfig(url=fresh_redis.url), fresh_redis.url)
    await sink.start()
    sink.publish(event(1))
    await asyncio.wait_for(sink.close(timeout=0.5), timeout=10)
    assert sink.dropped == 1 and sink.pending == 0
