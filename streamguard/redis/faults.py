"""What went wrong with a Redis command, as a metric label and one log line.

The sink retries every failure, so the operator's only view of an outage is the
`streamguard_redis_errors{reason}` counter, `streamguard_redis_up` and the log. A
reason must therefore say what to fix (a key of the wrong type, a replica, memory, a
permission), not merely "Redis error". The log is rate-limited per reason, because a
fault that lasts an hour is retried a thousand times; and it never carries an event
payload (redis-py quotes the failing command, arguments included, in pipeline
errors: only the server's own reply is kept).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ConnectionError as RedisConnectionError,
    RedisError,
    TimeoutError as RedisTimeoutError,
)

REASONS = ("connection", "timeout", "auth", "noperm", "readonly", "oom", "wrongtype", "loading", "other")
"""Every `reason` label value, so each series exists (at 0) before its first fault."""

UNREACHABLE = frozenset({"connection", "timeout", "auth", "loading"})
"""Reasons that concern Redis as a whole rather than one command."""

_BY_CODE = {
    "WRONGTYPE": "wrongtype",
    "READONLY": "readonly",
    "OOM": "oom",
    "NOPERM": "noperm",
    "NOAUTH": "auth",
    "WRONGPASS": "auth",
    "LOADING": "loading",
}
_PIPELINE_PREFIX = re.compile(r"^Command # \d+ \(.*\) of pipeline caused error: ", re.DOTALL)
DETAIL_MAX = 160


def classify(err: BaseException) -> str:
    """The `reason` label of a failure: from redis-py's class or the reply's first word."""
    if isinstance(err, (RedisTimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(err, (AuthenticationError, AuthorizationError)):
        return "auth"
    if isinstance(err, BusyLoadingError):
        return "loading"
    if isinstance(err, (RedisConnectionError, OSError)):
        return "connection"
    if isinstance(err, RedisError):
        code = getattr(err, "status_code", None) or server_reply(err).split(" ", 1)[0]
        return _BY_CODE.get(code, "other")
    return "other"


def server_reply(err: BaseException) -> str:
    """The server's reply (or the client's message) without redis-py's quote of the command."""
    text = str(err.args[0]) if err.args else type(err).__name__
    text = _PIPELINE_PREFIX.sub("", text, count=1)
    code = getattr(err, "status_code", None)
    if code and not text.startswith(code):
        text = f"{code} {text}"  # redis-py strips the code of the classes it maps (OOM, NOPERM, ...)
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."


@dataclass(frozen=True, slots=True)
class RedisFault:
    """One failed attempt: the command and key it concerned, and why."""

    reason: str
    command: str  # XADD, PUBLISH, SET, MULTI, EXEC (the whole batch)...
    key: str  # the key or channel, "" when the attempt failed as a whole
    detail: str  # the server's reply, never a payload

    def describe(self) -> str:
        where = f"{self.command} {self.key!r}" if self.key else self.command
        return f"{where} failed ({self.reason}): {self.detail}"


class FaultLog:
    """Log the first fault of each reason, then at most one line per `every_s` seconds per
    reason, saying how many were not logged in between."""

    def __init__(self, logger: logging.Logger, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}  # reason -> when it was last logged
        self._suppressed: dict[str, int] = {}

    def report(self, fault: RedisFault, where: str, pending: int) -> bool:
        """Log the fault unless its reason was logged less than `every_s` ago; True if logged."""
        now = self._clock()
        last = self._last.get(fault.reason)
        if last is not None and now - last < self._every_s:
            self._suppressed[fault.reason] = self._suppressed.get(fault.reason, 0) + 1
            return False
        self._last[fault.reason] = now
        skipped = self._suppressed.pop(fault.reason, 0)
        more = f" ({skipped} more since the last report)" if skipped else ""
        self._log.warning("Redis at %s: %s; %d events buffered, retrying%s", where, fault.describe(), pending, more)
        return True

    def reset(self) -> int:
        """Forget the reasons seen (Redis is back); how many faults went unlogged."""
        skipped = sum(self._suppressed.values())
        self._last.clear()
        self._suppressed.clear()
        return skipped
