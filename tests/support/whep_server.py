"""WebRTC peers for the tests: a track playing the two-face sample, and a WHEP server.

`SampleTrack` renders `streamguard.samples.render_frame` live (the same two faces as
the sample video) at a chosen rate; `freeze()` stops sending without ending the track,
as a publisher whose network died would. `WhepServer` is a minimal WHEP endpoint
built on aiortc and aiohttp (POST an offer -> 201 + Location + answer; DELETE the
Location ends it) that sends a fresh SampleTrack to every viewer; `end_sessions()`
ends them from the server side, as a media server restarting would.
"""

from __future__ import annotations

import asyncio
import fractions
import time

import av
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streamguard.samples import render_frame

CLOCK = 90_000  # RTP video clock


class SampleTrack(MediaStreamTrack):
    """The two-face sample, rendered live at `fps`."""

    kind = "video"

    def __init__(self, fps: float = 15.0) -> None:
        super().__init__()
        self.fps = fps
        self.sent = 0
        self._start: float | None = None
        self._frozen = asyncio.Event()

    def freeze(self) -> None:
        """Stop sending frames; the track stays open (a stalled publisher)."""
        self._frozen.set()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.sent / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        while self._frozen.is_set() and self.readyState == "live":
            await asyncio.sleep(0.1)
        t = self.sent / self.fps
        frame = av.VideoFrame.from_ndarray(render_frame(t), format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = int(t * CLOCK), fractions.Fraction(1, CLOCK)
        self.sent += 1
        return frame


class WhepServer:
    """POST /whep/{name} with an offer -> a viewer session sending a SampleTrack."""

    def __init__(self) -> None:
        self.sessions: dict[str, RTCPeerConnection] = {}
        self.offers = 0
        self.deleted: list[str] = []
        self.port = 0
        app = web.Application()
        app.router.add_post("/whep/{name}", self._offer)
        app.router.add_delete("/whep/{name}/{session}", self._delete)
        self._runner = web.AppRunner(app, access_log=None)

    def url(self, name: str) -> str:
        return f"whep+http://127.0.0.1:{self.port}/whep/{name}"

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def end_sessions(self) -> None:
        for pc in list(self.sessions.values()):
            await pc.close()
        self.sessions.clear()

    async def close(self) -> None:
        await self.end_sessions()
        await self._runner.cleanup()

    async def _offer(self, request: web.Request) -> web.Response:
        self.offers += 1
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(SampleTrack())
        await pc.setRemoteDescription(RTCSessionDescription(sdp=await request.text(), type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        session = f"s{self.offers}"
        self.sessions[session] = pc
        location = f"/whep/{request.match_info['name']}/{session}"
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": location})

    async def _delete(self, request: web.Request) -> web.Response:
        session = request.match_info["session"]
        self.deleted.append(session)
        pc = self.sessions.pop(session, None)
        if pc is None:
            return web.Response(status=404)
        await pc.close()
        return web.Response(status=200)
