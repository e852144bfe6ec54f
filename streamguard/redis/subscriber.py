"""Read events back from Redis: the live channel, for `demo` and `subscribe`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from pydantic import ValidationError

from streamguard.events import EventV1, StreamEventV1, parse_any_event

log = logging.getLogger(__name__)


def format_event(event: EventV1 | StreamEventV1) -> str:
    """One human-readable line per event."""
    if isinstance(event, StreamEventV1):
        return f"{'STREAM':6s} stream={event.stream} state={event.state} {event.detail}".rstrip()
    x0, y0, x1, y1 = event.box
    trained = "" if event.model.trained else "  [untrained model]"
    return (
        f"{event.type.upper():6s} stream={event.stream} track={event.track} score={event.score:.3f} "
        f"threshold={event.threshold:.2f} samples={event.samples} pts={event.pts:.1f}s "
        f"box=({x0:.2f},{y0:.2f},{x1:.2f},{y1:.2f}) reason={event.reason} id={event.id[:8]}{trained}"
    )


class ChannelSubscriber:
    """Subscribes to the event channel and calls `on_event` for each event; owns its task."""

    def __init__(self, url: str, channel: str, on_event: Callable[[EventV1 | StreamEventV1], None]) -> None:
        self.url = url
        self.channel = channel
        self.on_event = on_event
        self._client: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._received = asyncio.Event()
        self.received = 0

    async def start(self) -> None:
        self._client = aioredis.Redis.from_url(self.url)
        pubsub = self._client.pubsub()
        await pubsub.subscribe(self.channel)
        self._task = asyncio.create_task(self._listen(pubsub), name="subscriber")

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                self.received += 1
                self._received.set()
                try:
                    self.on_event(parse_any_event(message["data"]))
                except ValidationError as err:
                    log.warning("ignoring a message that is not a valid event: %s", err.errors()[0]["msg"])
        finally:
            await pubsub.aclose()

    async def drain(self, expected: int, timeout: float) -> bool:
        """Wait until `expected` messages have arrived (e.g. all that were published); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.received < expected:
            self._received.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._received.wait(), remaining)
            except TimeoutError:
                return False
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
