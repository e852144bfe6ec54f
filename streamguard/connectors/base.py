"""What a connector is: something that joins a call server and turns its participants into streams.

The people streamguard is for watch live calls, and a call platform does not push each
participant's camera to a WHIP endpoint: something has to join the call (as Reality
Defender's meeting bot or a LiveKit agent does). A connector is that something for one
kind of server. It does three things, and `ConnectorWatch` (watch.py) does the rest
(adding and removing pipeline streams, back-off, state events) the same for every kind:

- `discover()`: every participant now publishing video in the watched rooms. Called
  every `poll_interval_s`; a participant missing from the answer has left (or the
  room is gone: `gone_reason` says which, for the reason on their cleared alerts).
- `subscribe(participant)`: a WebRTC session receiving that participant's video.
- `leave(subscription)`: end it (the server forgets our subscriber).

Janus VideoRoom is built (janus.py); docs/connectors.md sketches LiveKit and mediasoup.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from streamguard.errors import StreamguardError
from streamguard.events import ParticipantV1

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
MAX_NAME = 64  # config.STREAM_NAME


class ServerUnavailable(StreamguardError):
    """The call server cannot be reached or refused us (retried with back-off)."""


@dataclass(frozen=True)
class Participant:
    """One publisher in one room of one server; `key` is what stays the same across unpublish/republish."""

    room: str
    publisher_id: str
    display: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.room, self.publisher_id)


@dataclass
class Subscription:
    """Our WebRTC session receiving one participant's video; `handle` is the server's name for it."""

    pc: RTCPeerConnection
    track: MediaStreamTrack
    handle: str


class Connector(Protocol):
    """One call server (see the module docstring)."""

    name: str  # stream-name prefix, unique per server
    kind: str  # janus, livekit, ...
    server: str  # its URL, redacted

    async def discover(self) -> list[Participant]: ...

    def gone_reason(self, participant: Participant, now: list[Participant]) -> str: ...

    async def subscribe(self, participant: Participant) -> Subscription: ...

    async def leave(self, subscription: Subscription) -> None: ...

    async def close(self) -> None: ...


def stream_name(prefix: str, participant: Participant) -> str:
    """PREFIX-ROOM-PUBLISHER, made to pass the stream-name rule (characters outside it become
    '_'; a name over 64 characters is cut and ends in a hash of the whole, so it stays unique)."""
    name = _UNSAFE.sub("_", f"{prefix}-{participant.room}-{participant.publisher_id}")
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_NAME - 11]}-{digest}"


def describe(connector: Connector, participant: Participant) -> ParticipantV1:
    """What an event says about the participant."""
    return ParticipantV1(
        connector=connector.kind, server=connector.server, room=participant.room,
        publisher_id=participant.publisher_id, display=participant.display,
    )
