"""A WebRTC publisher on loopback: an aiortc peer with its offer, published over WHIP."""

from __future__ import annotations

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from tests.support.whep_server import SampleTrack

SDP = {"Content-Type": "application/sdp"}


async def make_offer(codec: str | None = "video/H264", track: SampleTrack | None = None) -> RTCPeerConnection:
    """A publisher's peer connection with its offer set (candidates gathered)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver(track or SampleTrack(), direction="sendonly")
    if codec is not None:
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == codec])
    await pc.setLocalDescription(await pc.createOffer())
    return pc


async def whip_publish(http: aiohttp.ClientSession, base: str, name: str, pc: RTCPeerConnection) -> tuple[str, str]:
    """POST the offer, apply the answer: (Location, answer SDP)."""
    async with http.post(f"{base}/whip/{name}", data=pc.localDescription.sdp, headers=SDP) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.content_type == "application/sdp"
        location, answer = resp.headers["Location"], await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return location, answer
