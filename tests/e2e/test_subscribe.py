"""`streamguard subscribe` as a user runs it, against a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from streamguard.events import parse_event
from streamguard.redis.sink import RedisSink
from streamguard.config import RedisConfig
from tests.support.events import event

STREAMGUARD = str(Path(sys.executable).parent / "streamguard")


async def publish(url: str, events) -> None:
    sink = RedisSink(RedisConfig(url=url), url)
    await sink.start()
    for e in events:
        sink.publish(e)
    assert await sink.flush(timeout=10)
    await sink.close()


def subscribe(url: str, *args: str) -> list[str]:
    proc = subprocess.run([STREAMGUARD, "subscribe", "--redis-url", url, *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


async def test_group_consumer_gets_what_it_missed_exactly_once(fresh_redis):
    await publish(fresh_redis.url, [event(i) for i in range(5)])
    first = subscribe(fresh_redis.url, "--group", "ops", "--consumer", "c1", "--json", "--count", "3")
    assert [parse_event(line).track for line in first] == [0, 1, 2]
    # offline while more events arrive; on return it gets the rest, acknowledged ones not again
    await publish(fresh_redis.url, [event(i) for i in range(5, 7)])
    rest = subscribe(fresh_redis.url, "--group", "ops", "--consumer", "c1", "--json", "--count", "4")
    assert [parse_event(line).track for line in rest] == [3, 4, 5, 6]
    # another group starts from the beginning of the Stream
    other = subscribe(fresh_redis.url, "--group", "audit", "--json", "--count", "7")
    assert [parse_event(line).track for line in other] == list(range(7))


async def test_stream_filter_and_readable_lines(fresh_redis):
    a, b = event(1), event(2).model_copy(update={"stream": "lobby"})
    await publish(fresh_redis.url, [a, b])
    lines = subscribe(fresh_redis.url, "--from-start", "--stream", "lobby", "--count", "1")
    assert len(lines) == 1 and lines[0].startswith("ALERT") and "stream=lobby" in lines[0]


async def test_stream_events_readable_and_unknown_entries_as_json(fresh_redis):
    import redis.asyncio as aioredis

    state = {"schema": "streamguard.event.v1", "type": "stream", "stream": "cam", "state": "live",
             "detail": "1280x720", "ts": 1.0, "url": "rtsp://***@h/x"}
    client = aioredis.Redis.from_url(fresh_redis.url)
    await client.xadd("streamguard:events", {"event": json.dumps(state)})
    await client.xadd("streamguard:events", {"event": json.dumps({"type": "future", "stream": "cam"})})
    await client.aclose()
    lines = subscribe(fresh_redis.url, "--from-start", "--count", "2")
    assert lines[0] == "STREAM stream=cam state=live 1280x720"
    assert json.loads(lines[1]) == {"type": "future", "stream": "cam"}


def test_unreachable_redis_is_one_clear_error():
    from streamguard.redis.embedded import free_port

    proc = subprocess.run([STREAMGUARD, "subscribe", "--redis-url", f"redis://127.0.0.1:{free_port()}/0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "cannot read events from Redis" in proc.stderr
