"""Janus VideoRoom: every publisher with video in the watched rooms becomes a stream.

Discovery lists the rooms (`list`, with the admin key if given so private rooms show)
and each watched room's participants (`listparticipants`) every `poll_interval_s`, on
one control handle; polling needs no presence in the room (joining as a publisher to
get join events would show the monitor in every participant list), and a join is seen
within the interval. Each participant who publishes is subscribed on a handle of its
own, as a browser viewer would: `join` as a subscriber to their feed, Janus offers,
aiortc answers (audio and extra videos inactive), `start`. The handle is detached when
the participant leaves or the stream stops.

Why subscribers and not RTP forwarding: forwarding needs VideoRoom's admin key
(`rtp_forward` is locked to it by default), a UDP port per participant that Janus can
send to, and an FFmpeg reading an SDP per port; a subscriber needs nothing beyond what
a viewer needs, brings its own congestion control, and reaches us through NAT. It was
the one built and measured (README, "Monitor a video call").
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from streamguard.config import JanusConfig, WebRTCConfig
from streamguard.connectors.base import Participant, ServerUnavailable, Subscription
from streamguard.connectors.janus_api import JanusError, JanusSession
from streamguard.errors import SourceError
from streamguard.ingest import ice
from streamguard.redact import redact_url
from streamguard.ingest.webrtc import new_peer_connection

NO_SUCH_ROOM = 426
NO_SUCH_FEED = 428


class JanusVideoRoom:
    """The Connector for one Janus server (see the module docstring)."""

    kind = "janus"

    def __init__(self, cfg: JanusConfig, webrtc: WebRTCConfig, timeout: float = 10.0) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.server = redact_url(cfg.url)
        self.webrtc = webrtc
        self.timeout = timeout
        self._session: JanusSession | None = None
        self._control: str | None = None
        self._room_ids: dict[str, Any] = {}  # room as we name it -> as Janus does (int, or str with string_ids)
        self._in_room: dict[str, set[str]] = {}  # every participant (publishing or not) per room, last discovery
        self._owners: dict[str, JanusSession] = {}  # subscriber handle -> the session it lives in

    async def _ensure(self) -> JanusSession:
        """The live session (a new one after Janus restarted) and its control handle."""
        if self._session is not None and not self._session.dead:
            return self._session
        if self._session is not None:
            await self._session.close()
            self._session = None
        secret = self.cfg.api_secret.get_secret_value() if self.cfg.api_secret else None
        token = self.cfg.token.get_secret_value() if self.cfg.token else None
        session = await JanusSession(self.cfg.url, secret, token, self.timeout).open()
        try:
            self._control = await session.attach()
        except BaseException:
            await session.close()
            raise
        self._session = session
        return session

    async def discover(self) -> list[Participant]:
        """Every publisher in the watched rooms now; ServerUnavailable when Janus cannot be asked."""
        session = await self._ensure()
        assert self._control is not None
        listing: dict[str, Any] = {"request": "list"}
        if self.cfg.admin_key is not None:
            listing["admin_key"] = self.cfg.admin_key.get_secret_value()
        try:
            rooms = (await session.request(self._control, listing)).get("list", [])
        except JanusError as err:
            raise ServerUnavailable(str(err)) from None
        watched = self.cfg.rooms
        self._room_ids = {str(r["room"]): r["room"] for r in rooms if watched == "all" or str(r["room"]) in watched}
        found: list[Participant] = []
        self._in_room = {}
        for room, room_id in self._room_ids.items():
            try:
                data = await session.request(self._control, {"request": "listparticipants", "room": room_id})
            except JanusError as err:
                if err.code == NO_SUCH_ROOM:  # destroyed since `list`
                    continue
                raise ServerUnavailable(str(err)) from None
            people = data.get("participants", [])
            self._in_room[room] = {str(p["id"]) for p in people}
            found += [Participant(room, str(p["id"]), p.get("display")) for p in people if p.get("publisher")]
        return found

    def gone_reason(self, participant: Participant, now: list[Participant]) -> str:
        """Why a participant the last discovery did not find is gone (the reason on their cleared alerts)."""
        if participant.room not in self._in_room:
            return "room_destroyed"
        if participant.publisher_id in self._in_room[participant.room]:
            return "participant_unpublished"
        return "participant_left"

    async def subscribe(self, participant: Participant) -> Subscription:
        """A subscriber session receiving the participant's video; SourceError or ServerUnavailable if not."""
        session = await self._ensure()
        room_id = self._room_ids.get(participant.room)
        if room_id is None:
            raise SourceError(f"room {participant.room} is not watched or no longer exists")
        handle = await session.attach()
        pc, hosts = new_peer_connection(self.webrtc)
        try:
            feed: Any = int(participant.publisher_id) if isinstance(room_id, int) else participant.publisher_id
            join: dict[str, Any] = {"request": "join", "ptype": "subscriber", "room": room_id, "streams": [{"feed": feed}]}
            if (pin := self.cfg.pins.get(participant.room)) is not None:
                join["pin"] = pin.get_secret_value()
            try:
                _, offer = await session.message(handle, join)
            except JanusError as err:
                raise SourceError(f"cannot subscribe to {participant.publisher_id} in room {participant.room}: {err}") from None
            if offer is None or offer.get("type") != "offer":
                raise SourceError(f"janus sent no offer for {participant.publisher_id} in room {participant.room}")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
            video: MediaStreamTrack | None = None
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video" and video is None and transceiver.receiver.track is not None:
                    video = transceiver.receiver.track
                else:  # audio and extra videos: not received
                    transceiver.direction = "inactive"
            if video is None:
                raise SourceError(f"participant {participant.publisher_id} in room {participant.room} sends no video")
            await pc.setLocalDescription(await pc.createAnswer())
            answer = {"type": "answer", "sdp": ice.advertise(pc.localDescription.sdp, hosts)}
            try:
                await session.message(handle, {"request": "start", "room": room_id}, jsep=answer)
            except JanusError as err:
                raise SourceError(f"janus refused our answer for {participant.publisher_id}: {err}") from None
            self._owners[handle] = session
            return Subscription(pc, video, handle)
        except BaseException:
            await pc.close()
            await session.detach(handle)
            raise

    async def leave(self, subscription: Subscription) -> None:
        """End a subscription: detach its handle (Janus forgets the subscriber) and close the connection."""
        session = self._owners.pop(subscription.handle, None)
        if session is not None:  # a session Janus lost (restarted) has nothing to detach
            await session.detach(subscription.handle)
        await subscription.pc.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
