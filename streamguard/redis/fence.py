"""Fencing: a shard writes a stream's events only while it still owns the stream.

Why: in cluster mode a stream moves to another shard when its shard is thought gone
(its node died, or it stopped renewing its lease: paused, partitioned). A shard that
was only paused still holds events in its buffer, and would publish them when it
wakes, after the new owner's: out of order, alerts cleared twice. Each assignment of
a stream gets an epoch (a counter in Redis, bumped at every (re)assignment); a shard
stamps each event with the epoch it was given and a sequence number, and the sink
writes through one Lua script that compares that epoch with Redis's before it
PUBLISHes and XADDs. The check and the write are one atomic step, so there is no
moment in which a stale owner's event can slip in after the new owner's first one.
A refused event is counted (`streamguard_events_fenced`, and per stream in Redis)
and dropped; the shard is told, so it stops the stream it no longer owns.

The script also keeps each stream's open alerts (id -> last event) in Redis, so the
next owner can clear what the previous one left open (`reason: "failover"`), and the
(epoch, seq) it last wrote per stream, so that a batch the sink sends again (its
connection failed with nobody knowing what ran) writes nothing twice: in cluster mode
delivery into the Stream is exactly once per event, not at least once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from streamguard import metrics
from streamguard.events import EventV1, StreamEventV1

# KEYS: epochs, owners, event Stream, the stream's open alerts, fenced counts, last written "epoch:seq" per stream.
# ARGV: stream, epoch, channel, payload, maxlen, event type, alert id ("" for stream events), seq.
# Returns 1 written, 0 refused (stale epoch), 2 already written (a batch sent again after a lost connection).
WRITE_IF_OWNER = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  redis.call('HINCRBY', KEYS[5], ARGV[1], 1)
  return 0
end
local last = redis.call('HGET', KEYS[6], ARGV[1])
if last then
  local epoch, seq = string.match(last, '^(%d+):(%d+)$')
  if epoch == ARGV[2] and tonumber(seq) >= tonumber(ARGV[8]) then
    return 2
  end
end
redis.call('HSET', KEYS[6], ARGV[1], ARGV[2] .. ':' .. ARGV[8])
redis.call('PUBLISH', ARGV[3], ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'event', ARGV[4])
if ARGV[6] == 'alert' or ARGV[6] == 'update' then
  redis.call('HSET', KEYS[4], ARGV[7], ARGV[4])
elseif ARGV[6] == 'clear' then
  redis.call('HDEL', KEYS[4], ARGV[7])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """Where the cluster keeps its state in Redis (all under one prefix)."""

    prefix: str

    @property
    def epochs(self) -> str:
        """Hash stream -> its current epoch (HINCRBY at each assignment and release; never deleted)."""
        return self.prefix + "epoch"

    @property
    def owners(self) -> str:
        """Hash stream -> the shard that owns it now."""
        return self.prefix + "owner"

    @property
    def specs(self) -> str:
        """Hash stream -> its StreamConfig JSON (what the next owner opens)."""
        return self.prefix + "spec"

    @property
    def fenced(self) -> str:
        """Hash stream -> events refused for a stale epoch."""
        return self.prefix + "fenced"

    @property
    def written(self) -> str:
        """Hash stream -> "epoch:seq" of its last event written (a resent batch writes nothing twice)."""
        return self.prefix + "written"

    @property
    def shards(self) -> str:
        """Hash slot -> the shard actor that fills it (JSON)."""
        return self.prefix + "shards"

    def open_alerts(self, stream: str) -> str:
        """Hash alert id -> the alert's last event JSON, while it is open."""
        return f"{self.prefix}open:{stream}"

    def lease(self, shard: str) -> str:
        return f"{self.prefix}lease:{shard}"


class Fence:
    """The sink's cluster option: the epochs this shard holds, the stamping of events, the script."""

    def __init__(self, keys: ClusterKeys, on_fenced: Callable[[str], None] | None = None) -> None:
        self.keys = keys
        self.on_fenced = on_fenced  # called with the stream of each refused event
        self.epochs: dict[str, int] = {}
        self._seq: dict[str, int] = {}
        self.sha: str | None = None
        self.fenced = 0

    def own(self, stream: str, epoch: int) -> None:
        """From now on events of `stream` carry `epoch`, numbered from 1."""
        self.epochs[stream] = epoch
        self._seq[stream] = 0

    def release(self, stream: str) -> None:
        self.epochs.pop(stream, None)
        self._seq.pop(stream, None)

    def stamp(self, event: EventV1 | StreamEventV1) -> EventV1 | StreamEventV1 | None:
        """The event with its stream's epoch and next number; None (refused) if we do not own the stream."""
        epoch = self.epochs.get(event.stream)
        if epoch is None:
            self.refused(event.stream)
            return None
        self._seq[event.stream] += 1
        return event.model_copy(update={"epoch": epoch, "seq": self._seq[event.stream]})

    def refused(self, stream: str) -> None:
        self.fenced += 1
        metrics.EVENTS_FENCED.inc()
        if self.on_fenced is not None:
            self.on_fenced(stream)
