"""Fan-out of events to the console pages connected to the feed.

Why bounded per viewer: the pipeline publishes from its event loop and must never
wait for a browser. Each viewer has its own queue; when a viewer reads too slowly
its oldest event goes (counted in streamguard_console_feed_dropped), so one slow
page neither blocks the pipeline nor grows memory, and the others are not affected.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from streamguard import metrics

Item = dict[str, Any]


class FeedFull(Exception):
    """Too many viewers are connected (answered 503)."""


class Viewer:
    """One page's queue; `get` waits for the next event."""

    def __init__(self, size: int) -> None:
        self._items: deque[Item] = deque(maxlen=size)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def put(self, item: Item) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
            metrics.CONSOLE_FEED_DROPPED.inc()
        else:
            metrics.CONSOLE_FEED_QUEUE_DEPTH.inc()
        self._items.append(item)
        self._ready.set()

    async def get(self, timeout: float) -> Item | None:
        """The oldest waiting event, or None after `timeout` seconds without one (time for a keep-alive)."""
        if not self._items:
            if self._closed:
                return None
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
            if not self._items:  # woken by Feed.close
                return None
        metrics.CONSOLE_FEED_QUEUE_DEPTH.dec()
        return self._items.popleft()

    def close(self) -> None:
        """Wake `get` for good: it returns None from now on once the queue is empty."""
        self._closed = True
        self._ready.set()

    def discard(self) -> None:
        metrics.CONSOLE_FEED_QUEUE_DEPTH.dec(len(self._items))
        self._items.clear()


class Feed:
    """The viewers connected now; `publish` is called on the event loop and never waits."""

    def __init__(self, queue_size: int, max_viewers: int) -> None:
        self.queue_size = queue_size
        self.max_viewers = max_viewers
        self._viewers: set[Viewer] = set()
        self.closed = False

    def close(self) -> None:
        """End every viewer's feed (the server is stopping)."""
        self.closed = True
        for viewer in self._viewers:
            viewer.close()

    def join(self) -> Viewer:
        if len(self._viewers) >= self.max_viewers:
            raise FeedFull(f"{self.max_viewers} console viewers are connected already (console.max_viewers)")
        viewer = Viewer(self.queue_size)
        self._viewers.add(viewer)
        metrics.CONSOLE_VIEWERS.set(len(self._viewers))
        return viewer

    def leave(self, viewer: Viewer) -> None:
        if viewer in self._viewers:
            self._viewers.discard(viewer)
            viewer.discard()
            metrics.CONSOLE_VIEWERS.set(len(self._viewers))

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def publish(self, item: Item) -> None:
        for viewer in self._viewers:
            viewer.put(item)
