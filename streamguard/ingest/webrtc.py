"""WebRTC in: WHIP (a publisher pushes to our HTTP server) and WHEP (we pull from a
media server that offers it).

aiortc does ICE, DTLS-SRTP, the jitter buffer and decoding (H.264, VP8) in its own
thread; these sources read the decoded frames of the remote video track on the event
loop, sample them by timestamp and hand them to the newest-wins queue like any other
source. There is no trickle ICE: every candidate is gathered before the answer (WHIP)
or the offer (WHEP) is sent, which every WHIP/WHEP peer accepts. Which addresses are
offered is `webrtc.*` (see ice.py). No STUN server is configured: the default one is
public and often unreachable where streamguard runs.

- `WhipSession`: one publisher's peer connection, made from its SDP offer. The HTTP
  server owns it (it closes it on DELETE, replacement and shutdown).
- `WhipSource`: reads a WhipSession's video. A publisher cannot be reconnected from
  here, so a stall is reported (`stalled`, then `live` again when frames resume) and
  the source ends when the publisher leaves (DELETE, or its connection closes).
- `WhepSource`: pulls `whep+https://host/path`: POSTs an offer, reads, and reconnects
  with back-off like an RTSP source when the session ends or stalls; DELETEs its
  session resource when it stops. User info in the URL is sent as HTTP basic auth.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import OperationError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription
from yarl import URL

from streamguard.config import IngestConfig, StreamConfig, WebRTCConfig
from streamguard.errors import SourceError
from streamguard.ingest import ice
from streamguard.ingest.latest import LatestQueue
from streamguard.ingest.pacing import FpsSampler
from streamguard.ingest.source_base import SourceBase, StateCallback
from streamguard.ingest.urls import whep_endpoint
from streamguard.types import Frame

log = logging.getLogger(__name__)

VIDEO_CODECS = ("video/H264", "video/VP8")
DELETE_TIMEOUT_S = 2.0  # ending a WHEP session is a courtesy: never wait long for it
MAX_MEDIA = 16  # m= sections an offer may have: a browser sends 2-3; thousands make aiortc set up thousands of transceivers


class OfferError(ValueError):
    """A WHIP offer that cannot be answered (malformed, no video, no H.264/VP8); the server answers 400."""


def new_peer_connection(webrtc: WebRTCConfig) -> tuple[RTCPeerConnection, ice.IceHosts]:
    """A peer connection gathering on the configured addresses, without STUN."""
    hosts = ice.configure(webrtc)
    return RTCPeerConnection(RTCConfiguration(iceServers=[])), hosts


def check_offer(sdp: str) -> None:
    """Refuse an offer that cannot give us video: OfferError with one line saying why."""
    media = sum(1 for line in sdp.splitlines() if line.startswith("m="))
    if media > MAX_MEDIA:
        raise OfferError(f"the SDP offer has {media} media sections; at most {MAX_MEDIA} are accepted")
    try:
        description = SessionDescription.parse(sdp)
    except Exception as err:  # aiortc's parser fails in many ways on arbitrary text; all mean "malformed"
        raise OfferError(f"malformed SDP offer: {type(err).__name__}") from None
    videos = [m for m in description.media if m.kind == "video"]
    if not videos:
        raise OfferError("the SDP offer has no video")
    codecs = {c.mimeType for m in videos for c in m.rtp.codecs}
    if not {c.lower() for c in codecs} & {c.lower() for c in VIDEO_CODECS}:
        offered = ", ".join(sorted(c.split("/")[-1] for c in codecs)) or "none"
        raise OfferError(f"the SDP offer's video codecs ({offered}) include neither H.264 nor VP8")
    if not any(m.direction in ("sendonly", "sendrecv") for m in videos):
        raise OfferError("the SDP offer does not send video")


class WhipSession:
    """One WHIP publisher: a peer connection answering its offer, receiving its first video track."""

    def __init__(self, pc: RTCPeerConnection, video: MediaStreamTrack, answer: str) -> None:
        self.id = secrets.token_urlsafe(12)
        self.pc = pc
        self.video = video
        self.answer = answer

    @classmethod
    async def accept(cls, offer: str, webrtc: WebRTCConfig) -> WhipSession:
        """Answer `offer` (candidates included); OfferError if it cannot give us video."""
        check_offer(offer)
        pc, hosts = new_peer_connection(webrtc)
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            except (ValueError, OperationError) as err:
                raise OfferError(f"unusable SDP offer: {err}") from None
            except Exception as err:  # aiortc fails in other ways on offers its parser let through; still the offer's fault
                raise OfferError(f"unusable SDP offer: {type(err).__name__}: {err}") from None
            video: MediaStreamTrack | None = None
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video" and video is None and transceiver.receiver.track is not None:
                    video = transceiver.receiver.track
                else:  # audio and extra videos: not received, so nothing queues up unread
                    transceiver.direction = "inactive"
            if video is None:
                raise OfferError("the SDP offer does not send video")
            await pc.setLocalDescription(await pc.createAnswer())
            return cls(pc, video, ice.advertise(pc.localDescription.sdp, hosts))
        except BaseException:
            await pc.close()
            raise

    async def close(self) -> None:
        """End the session (idempotent)."""
        await self.pc.close()


class TrackSource(SourceBase):
    """Reads decoded frames of a remote WebRTC video track into the queue."""

    async def _pump(self, track: MediaStreamTrack, sampler: FpsSampler, first_timeout: float) -> str | None:
        """Deliver frames until the track ends or the owner stops listening (None), or until no
        frame comes for `first_timeout` s (then `cfg.stall_timeout_s` after each frame): why."""
        timeout = first_timeout
        while True:
            try:
                frame = await asyncio.wait_for(track.recv(), timeout)
            except TimeoutError:
                return f"no frame for {timeout:g} s"
            except MediaStreamError:
                return None
            timeout = self.cfg.stall_timeout_s
            wall = self._frame_arrived(frame.width, frame.height)
            t = float(frame.time or 0.0)  # aiortc's RTP timeline starts at 0 and unwraps
            if sampler.keep(t):
                self._sampled()
                if not self._put_latest(Frame.decoded(self.stream.name, t, wall, frame)):
                    return None


class WhipSource(TrackSource):
    """The stream of one WHIP publisher; closes its session when it ends."""

    def __init__(
        self,
        stream: StreamConfig,
        cfg: IngestConfig,
        queue: LatestQueue[Frame],
        session: WhipSession,
        on_state: StateCallback | None = None,
    ) -> None:
        super().__init__(stream, cfg, queue, on_state)
        self.session = session

    async def run(self) -> None:
        """Until the publisher leaves; SourceError if no video comes within `open_timeout_s`."""
        self._loop = asyncio.get_running_loop()
        self._set_state("connecting", "waiting for the publisher's video")
        sampler = FpsSampler(self.cfg.analysis_fps)
        try:
            timeout = self.cfg.open_timeout_s
            while (stall := await self._pump(self.session.video, sampler, timeout)) is not None:
                if not self._ever_live:
                    raise SourceError(f"stream {self.stream.name}: no video from the WHIP publisher within {timeout:g} s")
                if self.state != "stalled":  # the publisher may come back: keep waiting
                    self._stalled(stall)
                timeout = self.cfg.stall_timeout_s
            self._set_state("ended", "the publisher left")
        except SourceError as err:
            self._set_state("failed", str(err))
            raise
        except asyncio.CancelledError:
            self._set_state("ended", "stopped")
            raise
        finally:
            await self.session.close()


class WhepSource(TrackSource):
    """Pulls a stream from a WHEP endpoint, reconnecting like any live source."""

    def __init__(
        self,
        stream: StreamConfig,
        cfg: IngestConfig,
        queue: LatestQueue[Frame],
        webrtc: WebRTCConfig,
        on_state: StateCallback | None = None,
    ) -> None:
        super().__init__(stream, cfg, queue, on_state)
        endpoint = whep_endpoint(stream.url)
        if endpoint is None:
            raise ValueError(f"not a whep+http(s):// URL: {self._where}")
        self.endpoint = URL(endpoint)
        self.webrtc = webrtc

    async def run(self) -> None:
        """Until stopped, or until the session ends when reconnecting is off; SourceError on failure."""
        self._loop = asyncio.get_running_loop()
        self._set_state("connecting", self._where)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.open_timeout_s)) as http:
                while True:
                    try:
                        error, stalled = await self._session(http)
                    except SourceError as err:  # could not start a session
                        if not self._retries():
                            raise
                        reason = str(err)
                    else:
                        ended = "the server ended the session"
                        after = self._after_session(error, stalled, ended, "cannot open", ended)
                        if after is None:
                            return
                        reason = after
                    log.warning("stream %s: %s: %s; reconnecting", self.stream.name, self._where, reason)
                    await asyncio.sleep(self._next_delay(reason))
        except SourceError as err:
            self._set_state("failed", str(err))
            raise
        except asyncio.CancelledError:
            self._set_state("ended", "stopped")
            raise

    async def _session(self, http: aiohttp.ClientSession) -> tuple[str | None, bool]:
        """One WHEP session until it ends: (why it ended, or None if the server ended it; whether it stalled)."""
        pc, hosts = new_peer_connection(self.webrtc)
        resource: URL | None = None
        try:
            transceiver = pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            resource, answer = await self._post_offer(http, ice.advertise(pc.localDescription.sdp, hosts))
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            except Exception as err:  # aiortc's parser fails in many ways on arbitrary text
                raise SourceError(f"stream {self.stream.name}: cannot open {self._where}: unusable SDP answer ({err})") from None
            decoded = self.frames_decoded
            sampler = FpsSampler(self.cfg.analysis_fps)  # each session starts its own RTP timeline
            why = await self._pump(transceiver.receiver.track, sampler, self.cfg.open_timeout_s)
            went_live = self.frames_decoded > decoded
            if why is not None and not went_live:
                return f"no video within {self.cfg.open_timeout_s:g} s", False
            return why, why is not None
        finally:
            if resource is not None:
                await self._delete(http, resource)
            await pc.close()

    async def _post_offer(self, http: aiohttp.ClientSession, offer: str) -> tuple[URL, str]:
        """POST the offer: (the session resource URL, the SDP answer); SourceError if refused."""
        fail = f"stream {self.stream.name}: cannot open {self._where}"
        try:
            async with http.post(self.endpoint, data=offer, headers={"Content-Type": "application/sdp"}) as resp:
                answer = await resp.text()
                if resp.status not in (200, 201):
                    raise SourceError(f"{fail}: the server answered {resp.status} {resp.reason}")
                location = resp.headers.get("Location")
                if not location:
                    raise SourceError(f"{fail}: the server's answer has no Location")
                return resp.url.join(URL(location)), answer
        except TimeoutError:
            raise SourceError(f"{fail}: no answer within {self.cfg.open_timeout_s:g} s") from None
        except aiohttp.ClientError as err:
            raise SourceError(f"{fail}: {_describe(err)}") from None

    async def _delete(self, http: aiohttp.ClientSession, resource: URL) -> None:
        try:
            async with http.delete(resource, timeout=aiohttp.ClientTimeout(total=DELETE_TIMEOUT_S)):
                pass
        except (aiohttp.ClientError, TimeoutError) as err:
            log.info("stream %s: could not end the WHEP session: %s", self.stream.name, _describe(err))


def _describe(err: BaseException) -> str:
    """An aiohttp error in words, without the URL (it may hold credentials)."""
    if isinstance(err, aiohttp.ClientConnectorError):
        return err.os_error.strerror or type(err.os_error).__name__
    return type(err).__name__
