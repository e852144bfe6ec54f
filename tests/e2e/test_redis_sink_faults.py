"""RedisSink against real redis-server faults: every one is an outage that is counted,
logged and survived, never the silent end of delivery.

Each fault test delivers one event, breaks Redis, publishes more, waits until the sink
has failed at least twice for the expected reason (so a retry happened during the
fault), checks nothing was delivered or dropped meanwhile, fixes Redis, and then
expects every event in the Stream, in order, exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from streamguard import metrics
from streamguard.config import RedisConfig
from streamguard.errors import ConfigError
from streamguard.events import ScoresV1, parse_event
from streamguard.redis.embedded import EmbeddedRedis
from streamguard.redis.faults import FaultLog, RedisFault
from streamguard.redis.sink import RedisSink
from tests.support.events import event, stream_tracks
from tests.support.harness import wait_until

N = 30  # events published during each fault (within one send batch and the buffer)
USER = "sink"
PASSWORD = "s3cret-pw"
SINK_ACL = ["~streamguard:*", "&streamguard:*", "+multi", "+exec", "+xadd", "+publish", "+set"]


def errors(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("streamguard_redis_errors_total", {"reason": reason}) or 0.0


def redis_up() -> float | None:
    return metrics.REGISTRY.get_sample_value("streamguard_redis_up")


async def outage_then_recovery(
    sink: RedisSink, reason: str, break_redis: Callable[[], Awaitable[object]], fix_redis: Callable[[], Awaitable[object]],
    caplog: pytest.LogCaptureFixture, logged: str, attachments: bool = False,
) -> None:
    """Event 0 before the fault, events 1..N during it; returns once all are delivered.

    `logged` is what the fault's (single, rate-limited) warning must say: command, key, reason.
    """
    caplog.set_level(logging.INFO, logger="streamguard.redis.sink")
    caplog.clear()
    sink.publish(event(0))
    assert await sink.flush(timeout=10)
    assert redis_up() == 1
    before = errors(reason)
    await break_redis()
    for i in range(1, N + 1):
        sink.publish(event(i), {f"streamguard:thumb:id{i}:face": b"jpeg%d" % i} if attachments else None)
    await wait_until(lambda: redis_up() == 0 and errors(reason) >= before + 2, 20, f"two '{reason}' errors and redis_up 0")
    assert sink.pending == N and sink.dropped == 0 and sink.published == 1
    await fix_redis()
    assert await sink.flush(timeout=20), f"{sink.pending} events still buffered after the fix"
    assert redis_up() == 1
    assert sink.published == N + 1 and sink.dropped == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and logged in warnings[0], warnings
    assert '"schema"' not in warnings[0] and PASSWORD not in warnings[0]  # no payload, no password
    assert any("accepts events again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


@pytest.fixture
async def admin(fresh_redis: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(fresh_redis.url)
    yield client
    await client.aclose()


async def become_replica(server: aioredis.Redis, primary_port: int) -> None:
    """REPLICAOF the primary, and wait until the first sync is done (no LOADING replies after it)."""
    await server.replicaof("127.0.0.1", primary_port)
    deadline = time.monotonic() + 20
    while (await server.info("replication")).get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica never linked to its primary"
        await asyncio.sleep(0.05)


async def acl(admin: aioredis.Redis, *rules: str) -> None:
    """ACL SETUSER the sink's user: rules are added to what it has (redis-py's acl_setuser would disable it)."""
    await admin.execute_command("ACL", "SETUSER", USER, *rules)


def user_url(server: EmbeddedRedis, password: str = PASSWORD) -> str:
    return f"redis://{USER}:{password}@127.0.0.1:{server.port}/0"


async def test_wrongtype_events_key(fresh_redis, admin, caplog):
    cfg = RedisConfig(url=fresh_redis.url)
    listener = admin.pubsub()
    await listener.subscribe(cfg.channel)
    await listener.get_message(timeout=1.0)  # subscribe confirmation
    sink = RedisSink(cfg, fresh_redis.url)
    await sink.start()
    try:
        await outage_then_recovery(
            sink, "wrongtype",
            lambda: admin.set(cfg.stream_key, "not a stream"),  # replaces the Stream (and event 0)
            lambda: admin.delete(cfg.stream_key),
            caplog, "XADD 'streamguard:events' failed (wrongtype): WRONGTYPE Operation against a key",
        )
    finally:
        await sink.close()
    assert await stream_tracks(fresh_redis.url, cfg.stream_key) == list(range(1, N + 1))
    # The channel got every event once: retries sent only the XADDs that had failed.
    received = []
    while (msg := await listener.get_message(ignore_subscribe_messages=True, timeout=1.0)) is not None:
        received.append(parse_event(msg["data"]).track)
    await listener.aclose()
    assert received == list(range(N + 1))


async def test_readonly_replica_then_promoted(fresh_redis, second_redis, caplog):
    """The sink writes to a server that becomes a replica (as after a failover), then is promoted."""
    cfg = RedisConfig(url=second_redis.url)
    replica = aioredis.Redis.from_url(second_redis.url)
    sink = RedisSink(cfg, second_redis.url)
    await sink.start()
    try:
        await outage_then_recovery(sink, "readonly", lambda: become_replica(replica, fresh_redis.port),
                                   lambda: replica.replicaof("NO", "ONE"),
                                   caplog, "failed (readonly): READONLY You can't write against a read only replica")
    finally:
        await sink.close()
        await replica.aclose()
    # Becoming a replica replaced its data with the primary's (empty): event 0 went with it.
    assert await stream_tracks(second_redis.url, cfg.stream_key) == list(range(1, N + 1))


async def test_out_of_memory_then_limit_raised(fresh_redis, admin, caplog):
    cfg = RedisConfig(url=fresh_redis.url)

    async def fill() -> None:
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.set("filler", b"x" * 2_000_000)
        await admin.config_set("maxmemory", "1mb")

    sink = RedisSink(cfg, fresh_redis.url)
    await sink.start()
    try:
        await outage_then_recovery(sink, "oom", fill, lambda: admin.config_set("maxmemory", "0"), caplog,
                                   "SET 'streamguard:thumb:id1:face' failed (oom): OOM command not allowed", attachments=True)
    finally:
        await sink.close()
    assert await stream_tracks(fresh_redis.url, cfg.stream_key) == list(range(N + 1))
    assert await admin.get(f"streamguard:thumb:id{N}:face") == b"jpeg%d" % N  # thumbnails waited too


async def test_permission_removed_then_granted(fresh_redis, admin, caplog):
    await acl(admin, "on", f">{PASSWORD}", *SINK_ACL)
    url = user_url(fresh_redis)
    sink = RedisSink(RedisConfig(url=url), url)
    await sink.start()
    try:
        await outage_then_recovery(
            sink, "noperm",
            lambda: acl(admin, "-xadd"),
            lambda: acl(admin, "+xadd"),
            caplog, "XADD 'streamguard:events' failed (noperm): NOPERM this user has no permissions to run the 'xadd'",
        )
    finally:
        await sink.close()
    assert await stream_tracks(fresh_redis.url, "streamguard:events") == list(range(N + 1))


async def test_multi_refused_delivers_each_event_once(fresh_redis, admin, caplog):
    """Without MULTI the commands run one by one; their own replies say which ran, so none is repeated."""
    await acl(admin, "on", f">{PASSWORD}", *SINK_ACL)
    url = user_url(fresh_redis)
    sink = RedisSink(RedisConfig(url=url), url)
    await sink.start()
    before = errors("noperm")
    caplog.set_level(logging.WARNING, logger="streamguard.redis.sink")
    try:
        await acl(admin, "-multi")
        for i in range(N):
            sink.publish(event(i))
        assert await sink.flush(timeout=20)
        assert redis_up() == 0 and errors("noperm") >= before + 1
        assert any("MULTI failed (noperm): NOPERM" in r.getMessage() for r in caplog.records)
        await acl(admin, "+multi")
        sink.publish(event(N))
        assert await sink.flush(timeout=20)
        await wait_until(lambda: redis_up() == 1, 10, "redis_up 1 once MULTI is granted again")
    finally:
        await sink.close()
    assert await stream_tracks(fresh_redis.url, "streamguard:events") == list(range(N + 1))
    assert sink.published == N + 1 and sink.dropped == 0


async def test_refused_scores_channel_never_holds_events_back(fresh_redis, admin, caplog):
    await acl(admin, "on", f">{PASSWORD}", *SINK_ACL)
    url = user_url(fresh_redis)
    sink = RedisSink(RedisConfig(url=url), url)
    await sink.start()
    before = errors("noperm")
    caplog.set_level(logging.WARNING, logger="streamguard.redis.sink")
    try:
        await acl(admin, "resetchannels", "&streamguard:alerts")  # live scores may no longer be published
        for i in range(N):
            sink.publish_scores(ScoresV1(stream="s", ts=float(i), threshold=0.5, identities=[]))
            sink.publish(event(i))
        assert await sink.flush(timeout=20)
        await wait_until(lambda: errors("noperm") >= before + 1, 10, "a 'noperm' error for the scores channel")
    finally:
        await sink.close()
    assert redis_up() == 1
    assert any("PUBLISH 'streamguard:scores:s' failed (noperm)" in r.getMessage() for r in caplog.records)
    assert await stream_tracks(fresh_redis.url, "streamguard:events") == list(range(N))


async def test_start_on_a_replica_waits_for_its_promotion(fresh_redis, second_redis):
    """A read-only Redis at start may be a failover in progress: reported and waited for, not refused."""
    replica = aioredis.Redis.from_url(second_redis.url)
    await become_replica(replica, fresh_redis.port)
    before = errors("readonly")
    sink = RedisSink(RedisConfig(url=second_redis.url), second_redis.url)
    try:
        await sink.start()
        assert redis_up() == 0 and errors("readonly") == before + 1
        sink.publish(event(1))
        await wait_until(lambda: errors("readonly") >= before + 2, 10, "a failed delivery to the replica")
        await replica.replicaof("NO", "ONE")
        assert await sink.flush(timeout=20)
        assert redis_up() == 1
    finally:
        await sink.close()
        await replica.aclose()
    assert await stream_tracks(second_redis.url, "streamguard:events") == [1]


async def test_kill9_then_restart(fresh_redis, caplog):
    cfg = RedisConfig(url=fresh_redis.url)

    async def kill() -> None:
        fresh_redis.kill()

    async def restart() -> None:
        fresh_redis.start()  # same port, empty

    sink = RedisSink(cfg, fresh_redis.url)
    await sink.start()
    try:
        await outage_then_recovery(sink, "connection", kill, restart, caplog, f"MULTI/EXEC of {N} events failed (connection)")
    finally:
        await sink.close()
    assert await stream_tracks(fresh_redis.url, cfg.stream_key) == list(range(1, N + 1))


# --- at start: what retrying can never fix is refused ----------------------------


async def test_start_refuses_user_without_xadd(fresh_redis, admin):
    await acl(admin, "on", f">{PASSWORD}", *(rule for rule in SINK_ACL if rule != "+xadd"))
    url = user_url(fresh_redis)
    sink = RedisSink(RedisConfig(url=url), url)
    with pytest.raises(ConfigError, match=r"may not run .*XADD 'streamguard:events' \(NOPERM") as caught:
        await sink.start()
    assert PASSWORD not in str(caught.value)
    assert await admin.exists("streamguard:events", "streamguard:thumb:probe") == 0  # the check wrote nothing
    await sink.close()


async def test_start_refuses_user_who_may_not_select_the_database(fresh_redis, admin):
    await acl(admin, "on", f">{PASSWORD}", *SINK_ACL)  # no +select
    url = user_url(fresh_redis).replace("/0", "/3")
    sink = RedisSink(RedisConfig(url=url), url)
    with pytest.raises(ConfigError, match=r"may not run .*connect \(NOPERM .*'select'"):
        await sink.start()
    await sink.close()


async def test_start_refuses_wrong_password(fresh_redis, admin):
    await acl(admin, "on", f">{PASSWORD}", *SINK_ACL)
    url = user_url(fresh_redis, password="wrong-pw")
    sink = RedisSink(RedisConfig(url=url), url)
    with pytest.raises(ConfigError, match="refused the login: WRONGPASS") as caught:
        await sink.start()
    assert "wrong-pw" not in str(caught.value)
    await sink.close()


async def test_start_refuses_missing_password(fresh_redis, admin):
    await admin.config_set("requirepass", PASSWORD)
    sink = RedisSink(RedisConfig(url=fresh_redis.url), fresh_redis.url)
    with pytest.raises(ConfigError, match="refused the login: NOAUTH"):
        await sink.start()
    await sink.close()


async def test_start_on_unreachable_redis_buffers(fresh_redis):
    """Redis coming up after us is normal: start() reports it and the sink delivers later."""
    fresh_redis.stop()
    before = errors("connection")
    sink = RedisSink(RedisConfig(url=fresh_redis.url), fresh_redis.url)
    await sink.start()
    try:
        assert redis_up() == 0 and errors("connection") == before + 1
        sink.publish(event(1))
        fresh_redis.start()
        assert await sink.flush(timeout=20)
        assert redis_up() == 1
    finally:
        await sink.close()
    assert await stream_tracks(fresh_redis.url, "streamguard:events") == [1]


# --- the log's rate limit --------------------------------------------------------


def test_fault_log_first_then_once_per_interval_with_count(caplog):
    now = [0.0]
    faults = FaultLog(logging.getLogger("test.faults"), every_s=30.0, clock=lambda: now[0])
    wrongtype = RedisFault("wrongtype", "XADD", "k", "WRONGTYPE Operation against a key holding the wrong kind of value")
    oom = RedisFault("oom", "XADD", "k", "OOM command not allowed")
    with caplog.at_level(logging.WARNING, logger="test.faults"):
        assert faults.report(wrongtype, "redis://h", 3)
        now[0] = 10.0
        assert not faults.report(wrongtype, "redis://h", 4)
        assert not faults.report(wrongtype, "redis://h", 5)
        assert faults.report(oom, "redis://h", 5)  # another reason is not held back
        now[0] = 30.5
        assert faults.report(wrongtype, "redis://h", 6)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "XADD 'k' failed (wrongtype)" in lines[0] and "3 events buffered" in lines[0]
    assert "(2 more since the last report)" in lines[2]
    assert faults.reset() == 0
