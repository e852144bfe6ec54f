"""A real Janus (Debian's `janus` 1.1.2) for tests and benchmarks, and an aiortc VideoRoom publisher.

`JanusServer` writes a configuration of its own (HTTP transport on a loopback port,
the VideoRoom plugin with the rooms asked for, every other plugin, transport, event
handler and logger disabled so it starts in well under a second, no STUN, ICE on one
interface only: `ice_enforce_list`), starts `janus` as a child process and waits
until its HTTP API answers. It can be killed and started again on the same port,
which is how tests make the SFU restart. Janus never gathers on loopback (it skips
IFF_LOOPBACK interfaces whatever the enforce list says: measured, it offered eth0
with `ice_enforce_list = "lo"`), so tests run it inside a private network namespace
(lab/netns.py) with `ice_interface` its veth end.

`JanusPublisher` joins a room as a publisher the way a browser does with janus.js
(create a session, attach `janus.plugin.videoroom`, `joinandconfigure` with an SDP
offer, the answer from the event long poll) and sends any aiortc video track.
`BrowserPublisher` does the same from a real browser (Debian's chromium, headless, with
a fake camera playing the sample).
"""

from __future__ import annotations

import asyncio
import ctypes
import fractions
import json
import secrets
import signal
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiohttp import web
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from lab.servers.process import stop_process
from streamguard.errors import StreamguardError
from streamguard.samples import render_frame

JANUS_BINARY = "/usr/bin/janus"
LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
START_TIMEOUT_S = 10.0
KEEP_PLUGINS = {"libjanus_videoroom.so"}
KEEP_TRANSPORTS = {"libjanus_http.so"}
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (a killed test run leaves no Janus behind)."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _others(folder: str, keep: set[str]) -> str:
    """The .so files of a Janus module folder other than `keep`, as its `disable` list."""
    return ",".join(sorted(p.name for p in (LIB / folder).glob("*.so") if p.name not in keep))


def _room_block(room: int, settings: dict[str, Any]) -> str:
    body = {"description": f"test room {room}", "publishers": 16, "bitrate": 512_000, "fir_freq": 2, **settings}
    lines = [f"\t{k} = {_value(v)}" for k, v in body.items()]
    return f"room-{room}: {{\n" + "\n".join(lines) + "\n}\n"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return '"' + str(v).replace('"', '\\"') + '"'


class JanusServer:
    """One Janus process with the VideoRoom plugin, on a loopback port of its own."""

    def __init__(
        self,
        workdir: Path,
        rooms: dict[int, dict[str, Any]] | None = None,
        api_secret: str | None = None,
        admin_key: str | None = None,
        port: int | None = None,
        ice_interface: str = "v0",
    ) -> None:
        self.ice_interface = ice_interface
        self.workdir = workdir
        self.rooms = rooms if rooms is not None else {1234: {}}
        self.api_secret = api_secret
        self.admin_key = admin_key
        self.port = port or free_port()
        self.log = workdir / "janus.log"
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/janus"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> Path:
        conf = self.workdir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        secret = f'\tapi_secret = "{self.api_secret}"\n' if self.api_secret else ""
        (conf / "janus.jcfg").write_text(
            "general: {\n"
            f'\tconfigs_folder = "{conf}"\n'
            f'\tplugins_folder = "{LIB}/plugins"\n'
            f'\ttransports_folder = "{LIB}/transports"\n'
            f'\tevents_folder = "{LIB}/events"\n'
            f'\tloggers_folder = "{LIB}/loggers"\n'
            "\tdebug_level = 4\n"
            "\tsession_timeout = 30\n"
            f"{secret}"
            "}\n"
            "media: {\n\trtp_port_range = \"20000-40000\"\n}\n"
            # ICE on loopback only: nothing leaves the machine (no STUN, no other interface).
            f'nat: {{\n\tice_enforce_list = "{self.ice_interface}"\n\tignore_mdns = true\n}}\n'
            f'plugins: {{\n\tdisable = "{_others("plugins", KEEP_PLUGINS)}"\n}}\n'
            f'transports: {{\n\tdisable = "{_others("transports", KEEP_TRANSPORTS)}"\n}}\n'
            'events: {\n\tbroadcast = false\n}\n'
            'loggers: {\n\tdisable = "libjanus_jsonlog.so"\n}\n'
        )
        (conf / "janus.transport.http.jcfg").write_text(
            "general: {\n\tjson = \"plain\"\n\tbase_path = \"/janus\"\n\thttp = true\n"
            f'\tport = {self.port}\n\tip = "127.0.0.1"\n\thttps = false\n}}\n'
            "admin: {\n\tadmin_http = false\n}\n"
        )
        general = f'general: {{\n\tadmin_key = "{self.admin_key}"\n}}\n' if self.admin_key else "general: {\n}\n"
        rooms = "".join(_room_block(room, settings) for room, settings in self.rooms.items())
        (conf / "janus.plugin.videoroom.jcfg").write_text(general + rooms)
        return conf / "janus.jcfg"

    def start(self) -> None:
        """Start Janus; returns once its HTTP API answers."""
        if self.running:
            return
        config = self._write_config()
        with self.log.open("a") as log:
            self._proc = subprocess.Popen(
                [JANUS_BINARY, "-C", str(config), "-F", str(config.parent), "-o"],  # -o: no colours
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if not self.running:
                raise StreamguardError(f"janus exited at start: see {self.log}")
            if time.monotonic() > deadline:
                self.stop()
                raise StreamguardError(f"janus did not answer on port {self.port} within {START_TIMEOUT_S:g} s: see {self.log}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"GET /janus/info HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return b"janus" in sock.recv(4096)
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        """Stop Janus (SIGKILL with `kill`: a crash); its peers see their media stop."""
        if self._proc is None:
            return
        stop_process(self._proc, signal.SIGKILL if kill else signal.SIGTERM)
        self._proc = None


def sample_loop(seconds: float = 2.0, fps: float = 10.0, width: int = 640) -> list[av.VideoFrame]:
    """The two-face sample's first `seconds`, at `fps`, scaled to `width` (yuv420p), to be played
    in a loop: rendering and encoding 720p live cost ~0.4 core per publisher, too much for many."""
    frames = []
    for i in range(int(seconds * fps)):
        frame = av.VideoFrame.from_ndarray(render_frame(i / fps), format="rgb24")
        frames.append(frame.reformat(width=width, height=width * 9 // 16, format="yuv420p"))
    return frames


class LoopTrack(MediaStreamTrack):
    """Plays `frames` in a loop at `fps`, paced by the clock, as a camera would."""

    kind = "video"
    CLOCK = 90_000

    def __init__(self, frames: list[av.VideoFrame], fps: float = 10.0) -> None:
        super().__init__()
        self.frames = frames
        self.fps = fps
        self.sent = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self.sent / self.fps - time.monotonic()))
        source = self.frames[self.sent % len(self.frames)]
        frame = av.VideoFrame.from_ndarray(source.to_ndarray(), format="yuv420p")
        frame.pts, frame.time_base = int(self.sent / self.fps * self.CLOCK), fractions.Fraction(1, self.CLOCK)
        self.sent += 1
        return frame


class JanusPublisher:
    """A VideoRoom publisher sending `track`, through Janus's plain HTTP API (as janus.js does)."""

    def __init__(self, url: str, room: int, display: str, track: MediaStreamTrack,
                 codec: str = "video/VP8", api_secret: str | None = None, pin: str | None = None) -> None:
        self.url = url
        self.room = room
        self.display = display
        self.track = track
        self.codec = codec
        self.api_secret = api_secret
        self.pin = pin
        self.publisher_id: int | None = None
        self.pc: RTCPeerConnection | None = None
        self._http: aiohttp.ClientSession | None = None
        self._session: str | None = None
        self._handle: str | None = None
        self._keepalive: asyncio.Task[None] | None = None

    async def _post(self, path: str, body: dict[str, Any], transaction: str | None = None) -> dict[str, Any]:
        assert self._http is not None
        body = {**body, "transaction": transaction or secrets.token_hex(6)}
        if self.api_secret:
            body["apisecret"] = self.api_secret
        async with self._http.post(self.url + path, json=body) as resp:
            reply = await resp.json(content_type=None)
        if reply.get("janus") == "error":
            raise StreamguardError(f"janus: {reply['error']}")
        return reply

    async def _request(self, body: dict[str, Any], jsep: dict[str, str] | None, timeout: float) -> dict[str, Any]:
        """An asynchronous VideoRoom request: the event answering it (its transaction), from the long poll."""
        transaction = secrets.token_hex(6)
        await self._post(f"/{self._session}/{self._handle}",
                         {"janus": "message", "body": body, **({"jsep": jsep} if jsep else {})}, transaction)
        deadline = time.monotonic() + timeout
        params = {"maxev": "5", **({"apisecret": self.api_secret} if self.api_secret else {})}
        while time.monotonic() < deadline:
            assert self._http is not None
            async with self._http.get(f"{self.url}/{self._session}", params=params) as resp:
                events = await resp.json(content_type=None)
            for event in events if isinstance(events, list) else [events]:
                if event.get("transaction") != transaction or event.get("janus") != "event":
                    continue  # another request's answer, media and webrtcup notices, keepalives
                data = event.get("plugindata", {}).get("data", {})
                if "error" in data:
                    raise StreamguardError(f"janus videoroom: {data['error']}")
                return event
        raise StreamguardError(f"janus did not answer {body.get('request')} within {timeout:g} s")

    async def publish(self, timeout: float = 10.0) -> int:
        """Join and publish; the publisher id Janus gave us."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        self._session = str((await self._post("", {"janus": "create"}))["data"]["id"])
        self._handle = str((await self._post(f"/{self._session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"}))["data"]["id"])
        request = {"request": "joinandconfigure", "ptype": "publisher", "room": self.room, "display": self.display}
        if self.pin:
            request["pin"] = self.pin
        return await self._offer(request, timeout)

    async def republish(self, track: MediaStreamTrack, timeout: float = 10.0) -> int:
        """Publish again after `unpublish`, on the same handle (Janus keeps our publisher id)."""
        self.track = track
        return await self._offer({"request": "publish"}, timeout)

    async def _offer(self, request: dict[str, Any], timeout: float) -> int:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceiver = self.pc.addTransceiver(self.track, direction="sendonly")
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == self.codec])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        event = await self._request(request, {"type": "offer", "sdp": self.pc.localDescription.sdp}, timeout)
        data = event.get("plugindata", {}).get("data", {})
        if data.get("videoroom") == "joined":
            self.publisher_id = int(data["id"])
        if "jsep" not in event or self.publisher_id is None:
            raise StreamguardError(f"janus answered {request['request']} without an SDP answer: {data}")
        await self.pc.setRemoteDescription(RTCSessionDescription(**event["jsep"]))
        if self._keepalive is None:
            self._keepalive = asyncio.create_task(self._keep_alive())
        return self.publisher_id

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(10)
            try:
                await self._post(f"/{self._session}", {"janus": "keepalive"})
            except (aiohttp.ClientError, TimeoutError, StreamguardError):
                pass

    async def unpublish(self, timeout: float = 10.0) -> None:
        """Stop publishing but stay in the room; our PeerConnection closes only once Janus has
        answered (closing it first races Janus into hanging up before it reads the request)."""
        await self._request({"request": "unpublish"}, None, timeout)
        if self.pc is not None:
            await self.pc.close()

    async def close(self, leave: bool = True) -> None:
        """Leave the room (destroying the session); `leave=False` only drops the connection. Idempotent."""
        if self._http is None or self._http.closed:
            return
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.gather(self._keepalive, return_exceptions=True)
        if leave and self._http is not None and self._session is not None:
            try:
                await self._post(f"/{self._session}", {"janus": "destroy"})
            except (aiohttp.ClientError, TimeoutError, StreamguardError):
                pass
        if self.pc is not None:
            await self.pc.close()
        if self._http is not None:
            await self._http.close()


async def videoroom_request(url: str, body: dict[str, Any], api_secret: str | None = None) -> dict[str, Any]:
    """One synchronous VideoRoom request (create, destroy, list...) on a session of its own: the plugin's data."""
    auth = {"apisecret": api_secret} if api_secret else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async def post(path: str, message: dict[str, Any]) -> dict[str, Any]:
            async with http.post(url + path, json={**message, "transaction": secrets.token_hex(6), **auth}) as resp:
                return await resp.json(content_type=None)

        session = (await post("", {"janus": "create"}))["data"]["id"]
        handle = (await post(f"/{session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"}))["data"]["id"]
        reply = await post(f"/{session}/{handle}", {"janus": "message", "body": body})
        await post(f"/{session}", {"janus": "destroy"})
        return reply.get("plugindata", {}).get("data", reply)


CHROMIUM = "/usr/bin/chromium"
PUBLISHER_PAGE = Path(__file__).with_name("janus_publisher.html")


class BrowserPublisher:
    """Debian's chromium, headless, publishing a fake camera that plays `frames` (the two-face
    sample, written as a y4m file) to a VideoRoom from janus_publisher.html (served on loopback:
    getUserMedia needs a secure context, which http://127.0.0.1 is)."""

    def __init__(self, url: str, room: int, display: str, frames: list[av.VideoFrame], workdir: Path,
                 api_secret: str | None = None, fps: int = 10) -> None:
        self.url, self.room, self.display, self.api_secret = url, room, display, api_secret
        self.workdir = workdir
        self.camera = workdir / "camera.y4m"
        with av.open(str(self.camera), "w", format="yuv4mpegpipe") as out:
            stream = out.add_stream("rawvideo", rate=fps)
            stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
            for frame in [*frames, None]:
                for packet in stream.encode(frame):
                    out.mux(packet)
        self._runner: web.AppRunner | None = None
        self._proc: subprocess.Popen | None = None

    async def start(self) -> None:
        """Serve the page and start chromium on it (publishing takes it a few seconds)."""
        page = PUBLISHER_PAGE.read_text()

        async def serve_page(_request: web.Request) -> web.Response:
            return web.Response(text=page, content_type="text/html")

        app = web.Application()
        app.router.add_get("/", serve_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        settings = urllib.parse.quote(json.dumps({"janus": self.url, "secret": self.api_secret, "room": self.room,
                                                  "display": self.display}))
        with (self.workdir / "chromium.log").open("w") as log:
            self._proc = subprocess.Popen([
                CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={self.camera}", f"--user-data-dir={self.workdir / 'profile'}",
                f"http://127.0.0.1:{port}/#{settings}",
            ], stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)

    async def close(self) -> None:
        """Quit the browser and kick its participant: a browser that is killed does not leave, and
        Janus would list it as a publisher (sending nothing) until its session times out."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                await asyncio.to_thread(self._proc.wait)
            self._proc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        listing = await videoroom_request(self.url, {"request": "listparticipants", "room": self.room}, self.api_secret)
        for participant in listing.get("participants", []):
            if participant.get("display") == self.display:
                await videoroom_request(self.url, {"request": "kick", "room": self.room, "id": participant["id"]},
                                        self.api_secret)
