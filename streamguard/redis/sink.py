"""Deliver events to Redis without ever blocking the pipeline, and without losing
one silently.

`publish()` only appends to a bounded in-memory buffer; one owned task drains it in
order to the pub/sub channel (live subscribers) and the Stream (durable, replayable,
trimmed to ~MAXLEN). When the buffer is full the oldest event is dropped, counted in
`streamguard_events_dropped` and logged once per burst.

Any failure, not only a lost connection, is an outage: a key of the wrong type, a
read-only replica after a failover, a Redis out of memory, a permission taken away.
Each failed attempt is counted in `streamguard_redis_errors{reason}` and logged
(rate-limited per reason, with the command, key and the server's reply, never a
payload); `streamguard_redis_up` is 0 until an attempt succeeds; the events wait in
the buffer and the task retries with back-off, so delivery resumes by itself once
the cause is fixed. At start, a login or permission that can never work is refused
with a `ConfigError` instead (see preflight.py).

Each batch is one MULTI/EXEC transaction, so it is all-or-nothing for everything
Redis refuses before running a command (NOPERM, READONLY, OOM: EXECABORT), and no
other client runs between its commands (so a fault cannot clear halfway through a
batch and let a later event into the Stream before an earlier one). What did run is
remembered per event (its thumbnails SET, its PUBLISH, its XADD), from the reply of
each command, so a retry sends only what is missing: a WRONGTYPE on the Stream does
not publish the same events again on the channel, and the Stream gets each event
once, in order. Delivery is at least once: when the connection fails during a batch
nobody knows what ran, and the whole batch is sent again, so its events may appear
twice (as they always could).

An alert may carry attachments (its JPEG thumbnails): they are SET with a TTL in
the same transaction, before the event that names them. Live scores are different:
only the newest snapshot per stream matters, so they sit in a one-per-stream slot,
go to pub/sub only, in a pipeline of their own so that their failure never holds
events back, and never take room from events in the buffer.

In cluster mode (`fence`, fence.py) each event is stamped with its stream's epoch and
its PUBLISH and XADD become one EVALSHA of a script that first checks that epoch in
Redis, inside the same MULTI/EXEC batch: everything above holds, a stale owner's
events are refused (the script returns 0), counted and dropped (not published), and
an event sent again is not written twice (2). On one host there is no fence and
nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from itertools import islice

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streamguard import metrics
from streamguard.config import RedisConfig
from streamguard.events import EventV1, ScoresV1
from streamguard.redact import redact_url
from streamguard.redis.fence import WRITE_IF_OWNER, Fence
from streamguard.redis.faults import REASONS, UNREACHABLE, FaultLog, RedisFault, classify, server_reply
from streamguard.redis.preflight import check_access

log = logging.getLogger(__name__)

SEND_BATCH = 256
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 5.0
FAULT_LOG_EVERY_S = 30.0  # a lasting fault is logged again at most this often (per reason)


@dataclass(slots=True)
class _Pending:
    seq: int
    type: str
    payload: str  # the event JSON
    attachments: dict[str, bytes]
    stream: str = ""
    epoch: int | None = None  # cluster mode: one EVALSHA (announced and stored at once), checked against this epoch
    alert_id: str = ""
    event_seq: int = 0  # cluster mode: the event's seq within its stream and epoch
    refused: bool = False  # cluster mode: the script refused it (a stale epoch): done, but not published
    # What already ran, so that a retry sends only the rest.
    attached: bool = False
    announced: bool = False  # PUBLISH on the channel
    stored: bool = False  # XADD to the Stream

    @property
    def done(self) -> bool:
        return self.attached and self.announced and self.stored


@dataclass(frozen=True, slots=True)
class _Op:
    """One queued command of a batch: which event and which part of it."""

    item: _Pending
    part: str  # "attached", "announced" or "stored"
    command: str
    key: str


class RedisSink:
    """Owns the event buffer, the Redis client and the task that drains one into the other."""

    def __init__(self, cfg: RedisConfig, url: str, fence: Fence | None = None) -> None:
        self.cfg = cfg
        self.fence = fence
        self.url = url
        self._buffer: deque[_Pending] = deque()
        self._scores: dict[str, str] = {}  # stream -> newest snapshot JSON
        self._seq = 0
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._client: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._dropping = False
        self._faults = FaultLog(log, FAULT_LOG_EVERY_S)
        self.published = 0
        self.dropped = 0

    async def start(self) -> None:
        """Check the login and permissions (`ConfigError` if they can never work), then drain."""
        for reason in REASONS:  # every series exists, at 0, before its first fault
            metrics.REDIS_ERRORS.labels(reason)
        fault = await check_access(self.url, self.cfg)
        if fault is not None:
            metrics.REDIS_ERRORS.labels(fault.reason).inc()
            metrics.REDIS_UP.set(0)
            log.warning("Redis at %s is not ready (%s): events will wait in the buffer until it is",
                        redact_url(self.url), fault.describe())
        else:
            metrics.REDIS_UP.set(1)
        # No client-side retries: this class retries, with the buffer as the queue.
        self._client = aioredis.Redis.from_url(
            self.url, socket_connect_timeout=2.0, socket_timeout=5.0, retry=Retry(NoBackoff(), 0)
        )
        if self.fence is not None:
            await self._load_script()
        self._task = asyncio.create_task(self._drain_forever(up=fault is None), name="redis-sink")
        self._task.add_done_callback(self._drain_ended)

    def _drain_ended(self, task: asyncio.Task[None]) -> None:
        """The drain task only ends when close() cancels it; anything else is a bug, said loudly."""
        if not task.cancelled() and task.exception() is not None:
            metrics.REDIS_UP.set(0)
            log.error("Redis sink stopped: events will no longer be delivered", exc_info=task.exception())

    async def _load_script(self) -> None:
        """SCRIPT LOAD the fenced write (again after a Redis restart forgot it); a failure is retried by the drain."""
        assert self._client is not None and self.fence is not None
        try:
            self.fence.sha = await self._client.script_load(WRITE_IF_OWNER)
        except Exception as err:  # noqa: BLE001 - an outage like any other: the drain retries
            log.warning("Redis at %s: SCRIPT LOAD failed (%s); retrying with the events", redact_url(self.url), server_reply(err))

    def publish(self, event: EventV1, attachments: dict[str, bytes] | None = None) -> None:
        """Queue an event (and blobs to store under the keys it names); never blocks or raises."""
        if self.fence is not None:
            stamped = self.fence.stamp(event)
            if stamped is None:
                return
            event = stamped  # type: ignore[assignment]
        if len(self._buffer) >= self.cfg.buffer_size:
            self._buffer.popleft()
            self.dropped += 1
            metrics.EVENTS_DROPPED.inc()
            if not self._dropping:
                self._dropping = True
                log.warning("event buffer full (%d): dropping oldest events until Redis catches up", self.cfg.buffer_size)
        self._seq += 1
        attachments = attachments or {}
        epoch = getattr(event, "epoch", None) if self.fence is not None else None
        alert_id = getattr(event, "id", "") if isinstance(event, EventV1) else ""
        self._buffer.append(_Pending(self._seq, event.type, event.to_json(), attachments, event.stream, epoch, alert_id,
                                     getattr(event, "seq", None) or 0, attached=not attachments, announced=epoch is not None))
        metrics.EVENT_BUFFER_DEPTH.set(len(self._buffer))
        self._drained.clear()
        self._wakeup.set()

    def publish_scores(self, scores: ScoresV1) -> None:
        """Replace the stream's pending live-scores snapshot; pub/sub only, best effort."""
        self._scores[scores.stream] = scores.to_json()
        self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def flush(self, timeout: float) -> bool:
        """Wait until every buffered event is delivered; False on timeout."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 5.0) -> None:
        """Flush for up to `timeout` seconds, then stop; undelivered events are counted as dropped."""
        if self._task is not None:
            await self.flush(timeout)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._buffer:
            lost = len(self._buffer)
            self.dropped += lost
            metrics.EVENTS_DROPPED.inc(lost)
            log.error("%d events not delivered to Redis at shutdown (%s)", lost, redact_url(self.url))
            self._buffer.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _drain_forever(self, up: bool) -> None:
        backoff = BACKOFF_INITIAL_S
        down_since: float | None = None if up else time.monotonic()
        where = redact_url(self.url)
        while True:
            if not self._buffer and not self._scores:
                self._drained.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = list(islice(self._buffer, SEND_BATCH))
            scores, self._scores = self._scores, {}
            fault = await self._send(batch) if batch else None
            if scores and (fault is None or fault.reason not in UNREACHABLE):
                scores_fault = await self._send_scores(scores)
                if scores_fault is not None and not batch and scores_fault.reason in UNREACHABLE:
                    fault = scores_fault  # Redis as a whole is away, and these are our only news of it
                elif scores_fault is not None:  # a scores channel's own problem: never holds events back
                    metrics.REDIS_ERRORS.labels(scores_fault.reason).inc()
                    self._faults.report(scores_fault, where, len(self._buffer))
            if fault is not None:
                metrics.REDIS_ERRORS.labels(fault.reason).inc()
                metrics.REDIS_UP.set(0)
                if down_since is None:
                    down_since = time.monotonic()
                self._faults.report(fault, where, len(self._buffer))
                self._forget_done()
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            metrics.REDIS_UP.set(1)
            if down_since is not None:
                unlogged = self._faults.reset()
                log.info("Redis at %s accepts events again after %.1f s (%d failed attempts not logged); delivering %d buffered events",
                         where, time.monotonic() - down_since, unlogged, len(self._buffer))
                down_since = None
            backoff = BACKOFF_INITIAL_S
            self._forget_done()

    async def _send(self, batch: list[_Pending]) -> RedisFault | None:
        """Send what the batch still lacks in one transaction; mark what ran; the first fault.

        MULTI and EXEC are queued by hand in a plain pipeline, so every reply comes back:
        which command Redis refused to queue (then EXEC aborts and nothing ran), what
        each one returned inside EXEC, and, if MULTI itself was refused, what each
        command returned when it ran on its own.
        """
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        pipe.execute_command("MULTI")
        ops: list[_Op] = []
        for item in batch:
            if not item.attached:
                for key, blob in item.attachments.items():
                    pipe.set(key, blob, ex=self.cfg.thumbnail_ttl_s)
                    ops.append(_Op(item, "attached", "SET", key))
            if not item.announced:
                pipe.publish(self.cfg.channel, item.payload)
                ops.append(_Op(item, "announced", "PUBLISH", self.cfg.channel))
            if not item.stored and item.epoch is not None:
                assert self.fence is not None
                keys = self.fence.keys
                pipe.evalsha(self.fence.sha or "", 6, keys.epochs, keys.owners, self.cfg.stream_key, keys.open_alerts(item.stream),
                             keys.fenced, keys.written, item.stream, item.epoch, self.cfg.channel, item.payload, self.cfg.maxlen,
                             item.type, item.alert_id, item.event_seq)
                ops.append(_Op(item, "stored", "EVALSHA", self.cfg.stream_key))
            elif not item.stored:
                pipe.xadd(self.cfg.stream_key, {"event": item.payload}, maxlen=self.cfg.maxlen, approximate=True)
                ops.append(_Op(item, "stored", "XADD", self.cfg.stream_key))
        if not ops:
            return None
        pipe.execute_command("EXEC")
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as err:  # noqa: BLE001 - any failure is an outage, never the end of delivery
            # The connection failed (or worse): nobody knows what ran, so all of it is sent again.
            return RedisFault(classify(err), f"MULTI/EXEC of {len(batch)} events", "", server_reply(err))
        multi, queued, executed = replies[0], replies[1:-1], replies[-1]
        if isinstance(multi, Exception):  # no transaction: each command ran, or not, by itself
            self._mark(ops, queued)
            return RedisFault(classify(multi), "MULTI", "", server_reply(multi))
        for op, reply in zip(ops, queued, strict=True):
            if isinstance(reply, Exception):  # refused when queued: EXEC aborted, nothing ran
                return RedisFault(classify(reply), op.command, op.key, server_reply(reply))
        if isinstance(executed, Exception):
            return RedisFault(classify(executed), "EXEC", "", server_reply(executed))
        fault = self._mark(ops, executed)
        if self.fence is not None:
            await self._after_fenced_writes(ops, executed, fault)
        return fault

    async def _after_fenced_writes(self, ops: list[_Op], replies: list[object], fault: RedisFault | None) -> None:
        """Count the events the script refused (stale epoch); reload the script if Redis forgot it."""
        assert self.fence is not None
        for op, reply in zip(ops, replies, strict=True):
            if op.command == "EVALSHA" and reply == 0:
                op.item.refused = True
                self.fence.refused(op.item.stream)
        if fault is not None and fault.detail.startswith("NOSCRIPT"):
            await self._load_script()

    @staticmethod
    def _mark(ops: list[_Op], replies: list[object]) -> RedisFault | None:
        """Remember which commands ran; the fault of the first that failed."""
        first: RedisFault | None = None
        failed: set[tuple[int, str]] = set()
        for op, reply in zip(ops, replies, strict=True):
            if isinstance(reply, Exception):
                failed.add((op.item.seq, op.part))
                if first is None:
                    first = RedisFault(classify(reply), op.command, op.key, server_reply(reply))
        for op in ops:
            if (op.item.seq, op.part) not in failed:  # an event's SETs count only if all of them ran
                setattr(op.item, op.part, True)
        return first

    async def _send_scores(self, scores: dict[str, str]) -> RedisFault | None:
        """Best effort, outside the events' transaction: a refused channel must not hold events back."""
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        channels = [self.cfg.scores_channel_prefix + stream for stream in scores]
        for channel, payload in zip(channels, scores.values()):
            pipe.publish(channel, payload)
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as err:  # noqa: BLE001 - as in _send
            return RedisFault(classify(err), "PUBLISH", channels[0], server_reply(err))
        for channel, result in zip(channels, results, strict=True):
            if isinstance(result, Exception):
                return RedisFault(classify(result), "PUBLISH", channel, server_reply(result))
        return None

    def _forget_done(self) -> None:
        """Drop the delivered events at the head of the buffer, in order, and count them."""
        delivered = 0
        while self._buffer and self._buffer[0].done:
            item = self._buffer.popleft()
            if item.refused:
                continue
            metrics.EVENTS_PUBLISHED.labels(item.type).inc()
            delivered += 1
        self.published += delivered
        metrics.EVENT_BUFFER_DEPTH.set(len(self._buffer))
        if self._dropping and len(self._buffer) < self.cfg.buffer_size:
            self._dropping = False
            log.warning("event buffer has room again; %d events dropped so far", self.dropped)
