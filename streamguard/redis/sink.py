"""Deliver events to Redis without ever blocking the pipeline, and without losing
one silently.

`publish()` only appends to a bounded in-memory buffer; one owned task drains it in
order to the pub/sub channel (live subscribers) and the Stream (durable, replayable,
trimmed to ~MAXLEN). When Redis is unreachable the buffer holds events and the task
retries with back-off; when the buffer is full the oldest event is dropped, counted
in `streamguard_events_dropped` and logged once per burst. Delivery is at least
once: a batch interrupted mid-send is sent again.

An alert may carry attachments (its JPEG thumbnails): they are SET with a TTL in
the same round trip, before the event that names them. Live scores are different:
only the newest snapshot per stream matters, so they sit in a one-per-stream slot,
go to pub/sub only, and never take room from events in the buffer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass
from itertools import islice

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.asyncio.retry import Retry

from streamguard import metrics
from streamguard.events import EventV1, ScoresV1
from streamguard.config import RedisConfig
from streamguard.redact import redact_url

log = logging.getLogger(__name__)

SEND_BATCH = 256
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class _Pending:
    seq: int
    type: str
    payload: str  # the event JSON
    attachments: dict[str, bytes]


class RedisSink:
    """Owns the event buffer, the Redis client and the task that drains one into the other."""

    def __init__(self, cfg: RedisConfig, url: str) -> None:
        self.cfg = cfg
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
        self.published = 0
        self.dropped = 0

    async def start(self) -> None:
        # No client-side retries: this class retries, with the buffer as the queue.
        self._client = aioredis.Redis.from_url(
            self.url, socket_connect_timeout=2.0, socket_timeout=5.0, retry=Retry(NoBackoff(), 0)
        )
        self._task = asyncio.create_task(self._drain_forever(), name="redis-sink")

    def publish(self, event: EventV1, attachments: dict[str, bytes] | None = None) -> None:
        """Queue an event (and blobs to store under the keys it names); never blocks or raises."""
        if len(self._buffer) >= self.cfg.buffer_size:
            self._buffer.popleft()
            self.dropped += 1
            metrics.EVENTS_DROPPED.inc()
            if not self._dropping:
                self._dropping = True
                log.warning("event buffer full (%d): dropping oldest events until Redis catches up", self.cfg.buffer_size)
        self._seq += 1
        self._buffer.append(_Pending(self._seq, event.type, event.to_json(), attachments or {}))
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

    async def _drain_forever(self) -> None:
        backoff = BACKOFF_INITIAL_S
        up: bool | None = None
        while True:
            if not self._buffer and not self._scores:
                self._drained.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = list(islice(self._buffer, SEND_BATCH))
            scores, self._scores = self._scores, {}
            try:
                await self._send(batch, scores)
            except (RedisConnectionError, RedisTimeoutError, OSError) as err:
                if up is not False:
                    log.warning("Redis unavailable at %s (%s); buffering events", redact_url(self.url), err)
                    metrics.REDIS_UP.set(0)
                    up = False
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            if up is not True:
                if up is False:
                    log.info("Redis reachable again at %s; delivering %d buffered events", redact_url(self.url), len(self._buffer))
                metrics.REDIS_UP.set(1)
                up = True
            backoff = BACKOFF_INITIAL_S
            if not batch:
                continue
            self._forget_through(batch[-1].seq)
            for item in batch:
                metrics.EVENTS_PUBLISHED.labels(item.type).inc()
            self.published += len(batch)

    async def _send(self, batch: list[_Pending], scores: dict[str, str]) -> None:
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        for item in batch:
            for key, blob in item.attachments.items():
                pipe.set(key, blob, ex=self.cfg.thumbnail_ttl_s)
            pipe.publish(self.cfg.channel, item.payload)
            pipe.xadd(self.cfg.stream_key, {"event": item.payload}, maxlen=self.cfg.maxlen, approximate=True)
        for stream, payload in scores.items():
            pipe.publish(self.cfg.scores_channel_prefix + stream, payload)
        await pipe.execute()

    def _forget_through(self, seq: int) -> None:
        """Drop delivered events; overflow may have removed some already while sending."""
        while self._buffer and self._buffer[0].seq <= seq:
            self._buffer.popleft()
        metrics.EVENT_BUFFER_DEPTH.set(len(self._buffer))
        if self._dropping and len(self._buffer) < self.cfg.buffer_size:
            self._dropping = False
            log.warning("event buffer has room again; %d events dropped so far", self.dropped)
