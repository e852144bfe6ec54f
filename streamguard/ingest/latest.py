"""A bounded queue where the newest item wins.

A live camera does not wait for us: when analysis falls behind, the useful frame is
the newest one, and an old frame analysed late only adds latency. So `put_nowait`
never blocks and never fails for lack of room; it drops the oldest item and counts
it. Offline analysis of a file wants the opposite (every frame, at the reader's
pace), which `put` gives: it waits for room instead of dropping.

Use it from the event loop thread only; a producer thread hands items over with
`loop.call_soon_threadsafe(queue.put_nowait, item)` or
`asyncio.run_coroutine_threadsafe(queue.put(item), loop)`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueClosed(Exception):
    """The queue was closed: no more items will come (raised once it is drained)."""


class LatestQueue(Generic[T]):
    """At most `maxsize` items; a put into a full queue drops the oldest item."""

    def __init__(self, maxsize: int = 1, on_drop: Callable[[T], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.dropped = 0
        # Moving average of seconds from one get's return to the next get's call: the consumer's own
        # pace, which waiting inside get() for an item does not stretch (else a consumer kept waiting
        # for keyframes would look as slow as they come, and keep the producer on keyframes).
        self.get_interval: float | None = None
        self._last_get: float | None = None  # when the latest get() returned
        # When (time.monotonic) the consumer has said it will take its next item (announce_get); get() clears it.
        self.next_get_at: float | None = None
        # Moving average of seconds from a get to the next announced one: the pace the consumer asks
        # for, which waiting for an item does not stretch; None while gets come unannounced.
        self.announced_interval: float | None = None
        # The latest get, if it was announced: its announced time, or when it happened if it had to wait.
        self._last_announced: float | None = None
        self._on_drop = on_drop
        self._items: deque[T] = deque()
        self._closed = False
        # Set while a get() could proceed (an item or closed) / a put() could (room or closed).
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, item: T) -> None:
        """Add `item`; if the queue is full, drop the oldest item first and count it."""
        if self._closed:
            raise QueueClosed
        if len(self._items) >= self.maxsize:
            old = self._items.popleft()
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(old)
        self._items.append(item)
        self._update()

    async def put(self, item: T) -> None:
        """Add `item`, waiting for room instead of dropping (raises QueueClosed if closed)."""
        while len(self._items) >= self.maxsize and not self._closed:
            await self._writable.wait()
        self.put_nowait(item)

    async def get(self) -> T:
        """The oldest item, waiting for one; QueueClosed once closed and drained."""
        called = time.monotonic()
        while not self._items:
            if self._closed:
                raise QueueClosed
            await self._readable.wait()
        item = self._items.popleft()
        self._update()
        now = time.monotonic()
        if self._last_get is not None:
            gap = called - self._last_get
            self.get_interval = gap if self.get_interval is None else 0.7 * self.get_interval + 0.3 * gap
        self._last_get = now
        announced, self.next_get_at = self.next_get_at, None
        # A consumer that waited for an item (one keyframe a second, say) is that much late; counting
        # from the announced time would pass the wait on to the pace and keep producers that slow.
        self._last_announced = None if announced is None else max(announced, now)
        if announced is None:
            self.announced_interval = None
        return item

    def announce_get(self, at: float) -> None:
        """The consumer will take its next item at `at` (time.monotonic), so a producer can prepare just that."""
        if self._last_announced is not None and at > self._last_announced:
            gap = at - self._last_announced
            self.announced_interval = gap if self.announced_interval is None else 0.7 * self.announced_interval + 0.3 * gap
        self.next_get_at = at

    def expect_get_after(self, at: float) -> None:
        """The consumer will not take its next item before about `at`: an estimate that, unlike
        `announce_get`, does not count towards its pace (it announces the take itself later)."""
        self.next_get_at = at

    @property
    def pace(self) -> float | None:
        """Seconds between the consumer's gets: announced if it announces them, else as measured; None if unknown."""
        return self.announced_interval if self.announced_interval is not None else self.get_interval

    def close(self) -> None:
        """No more puts; getters drain what is left, then get QueueClosed."""
        self._closed = True
        self._update()

    def _update(self) -> None:
        if self._items or self._closed:
            self._readable.set()
        else:
            self._readable.clear()
        if len(self._items) < self.maxsize or self._closed:
            self._writable.set()
        else:
            self._writable.clear()
