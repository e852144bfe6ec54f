"""The source policy (streamguard/ingest/policy.py) and FFmpeg's protocol whitelist (protocols.py).

What may be opened, from where: every refused URL form with the rule that refused it;
local files from the API only inside `sources.api_file_dirs`, with one answer for a
missing and a forbidden path; nested protocols inside real HLS playlists and an SDP
file, served over real HTTP on loopback and read from disk, stopped by FFmpeg's
whitelist; the API (one process, and `run --processes 2` behind its front door)
answering 403/400 naming the rule with nothing opened. Refusals of non-loopback
addresses through the API and the command line run in a network namespace of their
own (`unshare --net`, only a loopback inside), so a bug cannot send a packet out.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import av
import av.logging
import numpy as np
import pytest
from aiohttp import web

from streamguard.config import IngestConfig, SourcesConfig, StreamConfig, build_config
from streamguard.errors import ConfigError, SourceError
from streamguard.ingest import LatestQueue, StreamSource
from streamguard.ingest.policy import SourcePolicy, SourceRefused, resolve
from streamguard.ingest.protocols import ffmpeg_protocols, protocol_whitelist, url_scheme
from streamguard.redis.embedded import free_port
from tests.support.harness import live_config, live_pipeline
from tests.support import REPO

ROOT = REPO


def no_dns(host: str) -> list:
    pytest.fail(f"the policy resolved {host!r}: only API-added host names may be resolved")


def refusal(url: str, origin: str = "api", cfg: SourcesConfig | None = None, resolver=no_dns) -> SourceRefused:
    with pytest.raises(SourceRefused) as err:
        SourcePolicy(cfg or SourcesConfig(), resolver=resolver).check(url, origin)  # type: ignore[arg-type]
    return err.value


# --- the policy, URL by URL -----------------------------------------------------------

REFUSED = [
    # (url, origin, rule, status)
    ("/etc/passwd", "api", "sources.api_file_dirs", 403),
    ("/proc/self/environ", "api", "sources.api_file_dirs", 403),
    ("/dev/zero", "api", "sources.api_file_dirs", 403),
    ("relative/video.mp4", "api", "sources.api_file_dirs", 403),
    ("file:///etc/passwd", "api", "sources.api_file_dirs", 403),
    ("file:/etc/passwd", "api", "sources.api_file_dirs", 403),
    ("/dev/zero", "cli", "regular-files-only", 403),
    ("file:/dev/zero", "cli", "regular-files-only", 403),
    ("/proc/self", "cli", "regular-files-only", 403),
    ("concat:/etc/passwd|/etc/hosts", "cli", "sources.schemes", 403),
    ("concat:/etc/passwd|/etc/hosts", "api", "sources.schemes", 403),
    ("subfile,,start,0,end,100,,:/etc/passwd", "api", "sources.schemes", 403),
    ("pipe:0", "api", "sources.schemes", 403),
    ("data:video/mp2t;base64,AAAA", "api", "sources.schemes", 403),
    ("unix:///run/docker.sock", "api", "sources.schemes", 403),
    ("tcp://127.0.0.1:6379", "api", "sources.schemes", 403),
    ("udp://127.0.0.1:1234", "cli", "sources.schemes", 403),
    ("ftp://127.0.0.1/x.mp4", "api", "sources.schemes", 403),
    ("crypto+file:///etc/passwd", "api", "sources.schemes", 403),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "api", "sources.schemes", 403),
    ("http://169.254.169.254/latest/meta-data/", "api", "sources.deny_networks", 403),
    ("http://169.254.169.254/latest/meta-data/", "cli", "sources.deny_networks", 403),
    ("http://2852039166/latest/meta-data/", "api", "sources.deny_networks", 403),  # 169.254.169.254 as one number
    ("http://0xa9.0xfe.0xa9.0xfe/", "api", "sources.deny_networks", 403),
    ("http://0251.0376.0251.0376/", "api", "sources.deny_networks", 403),
    ("http://169.254.43518/", "api", "sources.deny_networks", 403),
    ("http://[::ffff:169.254.169.254]/", "api", "sources.deny_networks", 403),
    ("http://[fe80::1]/", "api", "sources.deny_networks", 403),
    ("rtsp://[fe80::1%25eth0]:554/cam", "cli", "sources.deny_networks", 403),
    ("http://[fd00:ec2::254]/latest/meta-data/", "api", "sources.deny_networks", 403),
    ("http://100.100.100.200/latest/meta-data/", "api", "sources.deny_networks", 403),
    ("whep+http://169.254.169.254/whep", "api", "sources.deny_networks", 403),
    ("rtsp://user:pw@169.254.1.1/cam", "cli", "sources.deny_networks", 403),
    ("http://metadata.google.internal/computeMetadata/v1/", "api", "sources.metadata_hosts", 403),
    ("http://metadata.google.internal./computeMetadata/v1/", "cli", "sources.metadata_hosts", 403),
    ("http://METADATA/computeMetadata/v1/", "api", "sources.metadata_hosts", 403),
    ("http://instance-data/latest/", "cli", "sources.metadata_hosts", 403),
    ("http:///no-host", "api", "malformed-url", 400),
    ("rtsp://127.0.0.1:99999/cam", "api", "malformed-url", 400),
    ("rtsp://127.0.0.1/cam\n", "api", "malformed-url", 400),
    ("http://127.0.0.1/a b", "cli", "malformed-url", 400),
]


@pytest.mark.parametrize(("url", "origin", "rule", "status"), REFUSED)
def test_each_refused_url_form_names_its_rule(url, origin, rule, status):
    err = refusal(url, origin)
    assert (err.rule, err.status) == (rule, status)
    assert f"refused by the source policy ({rule})" in str(err) and "\n" not in str(err)


def test_credentials_never_show_in_a_refusal():
    err = refusal("rtsp://admin:hunter2@169.254.10.10/cam?passphrase=s3cret", "cli")
    assert "hunter2" not in str(err) and "s3cret" not in str(err) and "***" in str(err)


@pytest.mark.parametrize("url", [
    "rtsp://127.0.0.1:8554/cam", "rtsps://admin:pw@127.0.0.1:8322/cam", "rtmp://127.0.0.1/live/cam",
    "rtmps://127.0.0.1/live/cam", "http://127.0.0.1:8080/cam.m3u8", "https://[::1]:8443/cam.flv",
    "whep+http://127.0.0.1:8889/cam/whep", "whep+https://127.0.0.1:8889/cam/whep", "HTTP://127.0.0.1/x.m3u8",
])
@pytest.mark.parametrize("origin", ["cli", "api"])
def test_the_default_schemes_are_allowed(url, origin):
    SourcePolicy(SourcesConfig(), resolver=no_dns).check(url, origin)


def test_operator_host_names_are_not_resolved_but_api_ones_are_and_every_address_counts():
    SourcePolicy(SourcesConfig(), resolver=no_dns).check("rtsp://camera.lan:554/x", "cli")  # the operator's: not resolved
    asked: list[str] = []

    def rebinding(host: str) -> list:  # a name with one harmless address and one metadata address
        asked.append(host)
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("169.254.169.254")]

    assert refusal("rtsp://localhost:554/x", "api", resolver=rebinding).rule == "sources.deny_networks" and asked == ["localhost"]

    def unresolvable(host: str) -> list:
        raise OSError(-2, "Name or service not known")

    err = refusal("rtsp://localhost:554/x", "api", resolver=unresolvable)
    assert (err.rule, err.status) == ("host-resolves", 400)
    # The real resolver, on localhost only.
    SourcePolicy(SourcesConfig(api_networks_allow=["127.0.0.0/8", "::1/128"])).check("http://localhost:8080/x", "api")
    assert refusal("http://localhost:8080/x", "api", SourcesConfig(api_networks_deny=["127.0.0.0/8", "::1/128"]),
                   resolver=resolve).rule == "sources.api_networks_deny"


def test_api_network_lists_apply_to_the_api_only():
    lists = SourcesConfig(api_networks_allow=["10.1.0.0/16"], api_networks_deny=["10.1.2.0/24"])
    assert refusal("rtsp://10.1.2.3/cam", "api", lists).rule == "sources.api_networks_deny"
    assert refusal("rtsp://10.2.0.1/cam", "api", lists).rule == "sources.api_networks_allow"
    assert refusal("rtsp://[::ffff:10.2.0.1]/cam", "api", lists).rule == "sources.api_networks_allow"
    SourcePolicy(lists, resolver=no_dns).check("rtsp://10.1.9.9/cam", "api")
    SourcePolicy(lists, resolver=no_dns).check("rtsp://10.2.0.1/cam", "cli")  # the operator's streams: not the API's lists
    assert refusal("rtsp://10.2.0.1/cam", "cli", SourcesConfig(deny_networks=["10.0.0.0/8"])).rule == "sources.deny_networks"


def test_api_local_files_only_regular_files_inside_the_named_directories(tmp_path):
    allowed, outside = tmp_path / "videos", tmp_path / "private"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "cam.mp4").write_bytes(b"x")
    (outside / "secret.mp4").write_bytes(b"x")
    (allowed / "escape.mp4").symlink_to(outside / "secret.mp4")
    (allowed / "inside-link.mp4").symlink_to(allowed / "cam.mp4")
    os.mkfifo(allowed / "fifo.mp4")
    (allowed / "sub").mkdir()
    policy = SourcePolicy(SourcesConfig(api_file_dirs=[allowed]), resolver=no_dns)
    for ok in (allowed / "cam.mp4", f"file:{allowed / 'cam.mp4'}", f"file://{allowed / 'cam.mp4'}", allowed / "inside-link.mp4"):
        policy.check(str(ok), "api")
    forbidden = [
        allowed / "missing.mp4", outside / "secret.mp4", outside / "missing.mp4", allowed / "escape.mp4",
        f"{allowed}/../private/secret.mp4", allowed / "fifo.mp4", allowed / "sub", "/etc/passwd", "/nonexistent/x.mp4",
        "videos/cam.mp4", f"file:{outside / 'secret.mp4'}",
    ]
    answers = set()
    for path in forbidden:
        with pytest.raises(SourceRefused) as err:
            policy.check(str(path), "api")
        answers.add((err.value.rule, err.value.status, err.value.reason))
    assert answers == {("sources.api_file_dirs", 403, "local files added through the API must be regular files inside "
                        "sources.api_file_dirs")}  # one answer: existing or not, inside or not


def test_non_regular_files_are_refused_from_the_command_line_too(tmp_path):
    os.mkfifo(tmp_path / "fifo.mp4")
    policy = SourcePolicy(SourcesConfig(), resolver=no_dns)
    for path in (tmp_path / "fifo.mp4", tmp_path, Path("/dev/zero"), Path("/dev/urandom")):
        with pytest.raises(SourceRefused) as err:
            policy.check(str(path), "cli")
        assert err.value.rule == "regular-files-only"
    (tmp_path / "clip.mp4").write_bytes(b"x")
    policy.check(str(tmp_path / "clip.mp4"), "cli")
    policy.check(str(tmp_path / "missing.mp4"), "config")  # FFmpeg's own error names a missing file of the operator's
    (tmp_path / "two faces\n.mp4").write_bytes(b"x")
    policy.check(str(tmp_path / "two faces\n.mp4"), "cli")  # any character a file name may have


def test_srt_says_this_build_has_no_srt():
    if "srt" in (ffmpeg_protocols() or {"srt"}):
        pytest.skip("this FFmpeg has SRT")
    err = refusal("srt://127.0.0.1:9000?mode=caller", "cli")
    assert (err.rule, err.status) == ("ffmpeg-protocols", 400) and "no srt protocol" in str(err) and "libsrt" in str(err)
    # With an FFmpeg that has it, srt is checked like any network URL.
    with_srt = SourcePolicy(SourcesConfig(), resolver=no_dns, protocols=lambda: frozenset({"srt"}))
    with_srt.check("srt://127.0.0.1:9000", "api")
    with pytest.raises(SourceRefused, match="deny_networks"):
        with_srt.check("srt://169.254.169.254:9000", "api")


def test_added_schemes_are_allowed_once_listed_and_checked_against_this_ffmpeg():
    tcp = SourcesConfig(schemes=["rtsp", "tcp"])
    SourcePolicy(tcp, resolver=no_dns).check("tcp://127.0.0.1:9000", "cli")
    assert refusal("http://127.0.0.1/x", "cli", tcp).rule == "sources.schemes"
    assert refusal("rist://127.0.0.1:9000", "cli", SourcesConfig(schemes=["rist"])).rule == "ffmpeg-protocols"


def test_sources_config_is_validated():
    with pytest.raises(ConfigError, match=r"'sources.schemes'.*not a URL scheme"):
        build_config({"sources": {"schemes": ["rtsp://"]}})
    with pytest.raises(ConfigError, match=r"'sources.api_networks_deny.0'"):
        build_config({"sources": {"api_networks_deny": ["10.0.0.0/33"]}})
    cfg = build_config({"sources": {"schemes": ["RTSP", "tcp"], "api_networks_allow": ["192.168.0.0/16"]}})
    assert cfg.sources.schemes == ["rtsp", "tcp"] and str(cfg.sources.api_networks_allow[0]) == "192.168.0.0/16"


@pytest.mark.parametrize(("url", "scheme", "whitelist"), [
    ("/videos/cam.mp4", "", "file,crypto,data"),
    ("file:/videos/cam.mp4", "file", "file,crypto,data"),
    ("concat:/a|/b", "concat", "concat"),
    ("subfile,,start,0,end,9,,:/etc/passwd", "subfile", "subfile"),
    ("rtsp://127.0.0.1/cam", "rtsp", "rtsp,rtp,srtp,udp,tcp"),
    ("rtsps://127.0.0.1/cam", "rtsps", "rtsps,rtp,srtp,udp,tcp,tls"),
    ("rtmp://127.0.0.1/live", "rtmp", "rtmp,tcp"),
    ("https://127.0.0.1/x.m3u8", "https", "http,https,tcp,tls,crypto,httpproxy"),
    ("tcp://127.0.0.1:9000", "tcp", "tcp"),
    ("crypto+http://127.0.0.1/x", "crypto+http", "crypto,http,https,tcp,tls,httpproxy"),
])
def test_each_kind_of_source_gets_the_protocols_it_needs(url, scheme, whitelist):
    assert url_scheme(url) == scheme and protocol_whitelist(url) == whitelist
    assert "udp" not in protocol_whitelist("http://h/x.sdp") and "file" not in protocol_whitelist("http://h/x.m3u8")


# --- nested protocols, through real FFmpeg ---------------------------------------------


def write_clip(path: Path, frames: int = 20) -> Path:
    """A small H.264 MPEG-TS segment (160x120, 10 fps)."""
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), i * 10, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def playlist(*segments: str) -> str:
    return "#EXTM3U\n#EXT-X-TARGETDURATION:2\n" + "".join(f"#EXTINF:2,\n{s}\n" for s in segments) + "#EXT-X-ENDLIST\n"


@asynccontextmanager
async def http_files(files: dict[str, bytes]) -> AsyncIterator[tuple[str, list[str]]]:
    """Serve `files` on a loopback port: (base URL, the paths requested)."""
    requested: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        requested.append(request.path)
        body = files.get(request.path.lstrip("/"))
        return web.Response(body=body) if body is not None else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{path:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", requested
    finally:
        await runner.cleanup()


@asynccontextmanager
async def tcp_listener(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[tuple[int, list[str]]]:
    """A TCP port that notes every connection made to it: (port, peers)."""
    peers: list[str] = []

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(str(writer.get_extra_info("peername")))
        writer.close()

    server = await asyncio.start_server(accepted, host, port)
    try:
        yield server.sockets[0].getsockname()[1], peers
    finally:
        server.close()
        await server.wait_closed()


async def read_source(url: str) -> tuple[int, str | None]:
    """Run a StreamSource (as `run` and the API do) to its end: (frames decoded, its error)."""
    queue: LatestQueue = LatestQueue(64)
    source = StreamSource(StreamConfig(name="nested", url=url), IngestConfig(reconnect=False, realtime=False,
                          open_timeout_s=5, stall_timeout_s=5, hwaccel="none"), queue)
    try:
        await asyncio.wait_for(source.run(), 30)
    except SourceError as err:
        return source.frames_decoded, str(err)
    return source.frames_decoded, None


async def test_hls_over_http_plays_but_its_nested_local_protocols_do_not(tmp_path):
    secret = write_clip(tmp_path / "secret.ts")  # a local file a remote playlist must not reach
    segment = write_clip(tmp_path / "seg0.ts").read_bytes()
    files = {
        "ok.m3u8": playlist("seg0.ts").encode(), "seg0.ts": segment,
        "file.m3u8": playlist(f"file://{secret}").encode(),
        "path.m3u8": playlist(str(secret)).encode(),
        "concat.m3u8": playlist(f"concat:{secret}|{secret}").encode(),
        "subfile.m3u8": playlist(f"subfile,,start,0,end,0,,:{secret}").encode(),
        "data.m3u8": playlist("data:video/mp2t;base64," + base64.b64encode(secret.read_bytes()).decode()).encode(),
    }
    async with http_files(files) as (base, requested):
        frames, error = await read_source(f"{base}/ok.m3u8")
        assert error is None and frames == 20  # HLS over HTTP needs nothing the whitelist leaves out
        for name in ("file", "path", "concat", "subfile", "data"):
            frames, error = await read_source(f"{base}/{name}.m3u8")
            assert frames == 0 and error is not None and error.endswith("is not a video: Invalid data found when processing input"), \
                (name, error)
        assert requested.count("/seg0.ts") == 1


async def test_a_local_playlist_cannot_reach_the_network(tmp_path):
    write_clip(tmp_path / "seg0.ts")
    (tmp_path / "ok.m3u8").write_text(playlist("seg0.ts"))
    frames, error = await read_source(str(tmp_path / "ok.m3u8"))
    assert error is None and frames == 20
    async with tcp_listener() as (port, peers):
        (tmp_path / "net.m3u8").write_text(playlist(f"http://127.0.0.1:{port}/seg0.ts"))
        (tmp_path / "tcp.m3u8").write_text(playlist(f"tcp://127.0.0.1:{port}"))
        for name in ("net.m3u8", "tcp.m3u8"):
            frames, error = await read_source(str(tmp_path / name))
            assert frames == 0 and error is not None, error
        assert peers == []


async def test_an_sdp_file_served_over_http_cannot_open_udp_sockets(tmp_path):
    """FFmpeg's own whitelist for http allows rtp and udp: an SDP file served over HTTP opens UDP
    sockets for any address it names. Ours for http(s) sources leaves them out."""
    port = free_port()
    sdp = (f"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=video {port} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n")
    async with http_files({"cam.sdp": sdp.encode()}) as (base, _):
        url = f"{base}/cam.sdp"
        escaped = await asyncio.to_thread(av.open, url, timeout=5)  # without a whitelist: RTP over UDP, opened
        try:
            assert escaped.format.name == "sdp"
        finally:
            escaped.close()
        level = av.logging.get_level()
        av.logging.set_level(av.logging.ERROR)  # so that FFmpeg's reason comes with the error
        try:
            with pytest.raises(av.FFmpegError, match="Protocol 'rtp' not on whitelist 'http,https,tcp,tls,crypto,httpproxy'"):
                await asyncio.to_thread(av.open, url, options={"protocol_whitelist": protocol_whitelist(url)}, timeout=5)
        finally:
            av.logging.set_level(level)
        frames, error = await read_source(url)
        assert frames == 0 and error is not None and "is not a video" in error


# --- the API, one process ---------------------------------------------------------------

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def post_stream(http: aiohttp.ClientSession, base: str, url: str, name: str = "cam") -> tuple[int, str]:
    async with http.post(f"{base}/streams", json={"name": name, "url": url}) as resp:
        body = await resp.json()
        return resp.status, body.get("error", "")


LOOPBACK_REFUSED = [  # (url, status, rule): forms that a bug could only send to loopback or the local disk
    ("/etc/passwd", 403, "sources.api_file_dirs"),
    ("file:///etc/passwd", 403, "sources.api_file_dirs"),
    ("/dev/zero", 403, "sources.api_file_dirs"),
    ("concat:/etc/passwd|/etc/hosts", 403, "sources.schemes"),
    ("subfile,,start,0,end,0,,:/etc/passwd", 403, "sources.schemes"),
    ("pipe:0", 403, "sources.schemes"),
    ("data:video/mp2t;base64,AAAA", 403, "sources.schemes"),
    ("unix:///run/streamguard.sock", 403, "sources.schemes"),
    ("rtsp://127.0.0.1:99999/x", 400, "malformed-url"),
]


async def test_the_api_refuses_with_the_rule_and_opens_nothing(redis_server, tmp_path):
    allowed = tmp_path / "videos"
    allowed.mkdir()
    write_clip(allowed / "cam.ts", frames=50)
    cfg = live_config(serve=True, token=TOKEN, sources={"api_file_dirs": [str(allowed)], "api_networks_allow": ["127.0.0.1/32"]},
                      ingest={"realtime": True})
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession(headers=AUTH) as http, \
            tcp_listener() as (port, peers):
        base = live.server.url
        refused = [*LOOPBACK_REFUSED,
                   (f"tcp://127.0.0.1:{port}", 403, "sources.schemes"),
                   (f"ftp://127.0.0.1:{port}/x.mp4", 403, "sources.schemes"),
                   (f"gopher://127.0.0.1:{port}/_x", 403, "sources.schemes"),
                   (f"http://127.0.0.2:{port}/x.m3u8", 403, "sources.api_networks_allow"),
                   (str(allowed / ".." / "private.mp4"), 403, "sources.api_file_dirs")]
        for url, status, rule in refused:
            got, error = await post_stream(http, base, url)
            assert got == status and f"({rule})" in error, (url, got, error)
        # A missing path and an existing one outside the directories get the same answer.
        answers = {(s, e.replace(p, "PATH")) for p in ("/etc/passwd", "/etc/no-such-file", str(allowed / "missing.ts"))
                   for s, e in [await post_stream(http, base, p)]}
        assert len(answers) == 1, answers
        async with http.get(f"{base}/streams") as resp:
            assert (await resp.json()) == {"streams": []}
        assert peers == [] and live.pipeline.workers == {}
        # What the policy allows is opened: a file in the named directory, a loopback URL in the allowed network.
        assert (await post_stream(http, base, str(allowed / "cam.ts"), "file"))[0] == 201
        assert (await post_stream(http, base, f"rtsp://127.0.0.1:{port}/cam", "cam"))[0] == 201
        deadline = time.monotonic() + 20
        while not peers or live.pipeline.workers["file"].source.frames_decoded == 0:
            assert time.monotonic() < deadline, "the allowed streams were not opened"
            await asyncio.sleep(0.05)


# --- the command line ----------------------------------------------------------------------

def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "streamguard.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


@pytest.mark.parametrize(("url", "rule"), [
    ("/dev/zero", "regular-files-only"), ("concat:/etc/passwd|/etc/hosts", "sources.schemes"), ("pipe:0", "sources.schemes"),
])
def test_run_refuses_at_start_with_one_line(url, rule):
    proc = run_cli("run", "--stream", f"cam={url}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"streamguard: error: stream cam: {url}: refused by the source policy ({rule})")


def test_run_and_analyze_refuse_a_fifo(tmp_path):
    fifo = tmp_path / "cam.ts"
    os.mkfifo(fifo)
    for args in (("run", "--stream", f"cam={fifo}"), ("analyze", str(fifo), "--out", str(tmp_path / "out"))):
        proc = run_cli(*args, timeout=30)  # a FIFO opened would hang here: the timeout fails the test
        assert proc.returncode == 2 and "(regular-files-only)" in proc.stderr, proc.stderr


# --- non-loopback addresses, in a network namespace of their own ------------------------------

NETNS_SETUP = "ip link set lo up && ip addr add 169.254.169.254/32 dev lo && ip addr add 10.9.8.7/32 dev lo"


def unshare_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "--net", "sh", "-c", NETNS_SETUP], capture_output=True).returncode == 0


async def _netns_checks(out: str) -> None:
    """Run inside the namespace: the API and the command line on metadata, link-local and denied
    private addresses, each of which listens here (on lo), so a connection would be seen."""
    cfg = Path(out).with_suffix(".yaml")
    cfg.write_text(json.dumps({"sources": {"api_networks_deny": ["10.0.0.0/8"]}}))
    results: dict = {"cli": [], "api": []}
    async with tcp_listener("169.254.169.254", 80) as (_, metadata), tcp_listener("10.9.8.7", 554) as (_, private), \
            tcp_listener() as (control_port, control):
        for url in ("http://169.254.169.254/latest/meta-data/", "http://2852039166/latest/meta-data/"):
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "streamguard.cli", "run", "--stream", f"cam={url}",
                                                        stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            results["cli"].append([url, proc.returncode, err.decode()])
        port = free_port()
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamguard.cli", "run", "--http", f"127.0.0.1:{port}", "--arch", "tiny", "--config", str(cfg),
            stderr=asyncio.subprocess.DEVNULL)
        try:
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 180
                while True:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    if time.monotonic() > deadline or server.returncode is not None:
                        raise RuntimeError("streamguard run --http did not come up")
                    await asyncio.sleep(0.2)
                base = f"http://127.0.0.1:{port}"
                for url in ("http://169.254.169.254/latest/meta-data/", "http://2852039166/", "http://[::ffff:169.254.169.254]/",
                            "whep+http://169.254.169.254/whep", "rtsp://169.254.169.254:80/cam", "http://[fe80::1]/",
                            "http://metadata.google.internal/computeMetadata/v1/", "rtsp://10.9.8.7:554/cam"):
                    results["api"].append([url, *await post_stream(http, base, url)])
                results["control"] = await post_stream(http, base, f"rtsp://127.0.0.1:{control_port}/cam")
                deadline = time.monotonic() + 30
                while not control and time.monotonic() < deadline:  # the control stream is opened: a listener sees it
                    await asyncio.sleep(0.05)
                async with http.get(f"{base}/streams") as resp:
                    results["streams"] = [s["name"] for s in (await resp.json())["streams"]]
        finally:
            server.send_signal(signal.SIGTERM)
            await asyncio.wait_for(server.wait(), 60)
        results["connections"] = {"metadata": list(metadata), "private": list(private), "control": len(control)}
    Path(out).write_text(json.dumps(results))


@pytest.mark.slow
def test_non_loopback_refusals_inside_a_network_namespace(tmp_path):
    if not unshare_works():
        pytest.skip("unshare --net (a network namespace) is not permitted here")
    out = tmp_path / "netns.json"
    code = f"import asyncio, tests.e2e.test_source_policy as t; asyncio.run(t._netns_checks({str(out)!r}))"
    proc = subprocess.run(["unshare", "--net", "sh", "-c", f'{NETNS_SETUP} && exec "$0" -c "$1"', sys.executable, code],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    for url, code_, stderr in results["cli"]:
        assert code_ == 2 and "(sources.deny_networks)" in stderr.strip().splitlines()[-1], (url, stderr)
    rules = {url: (status, error) for url, status, error in results["api"]}
    for url, (status, error) in rules.items():
        want = "sources.metadata_hosts" if "metadata.google" in url else \
            "sources.api_networks_deny" if "10.9.8.7" in url else "sources.deny_networks"
        assert status == 403 and f"({want})" in error, (url, status, error)
    assert results["control"][0] == 201 and results["connections"]["control"] >= 1  # an allowed URL is opened and seen
    assert results["streams"] == ["cam"]
    assert results["connections"]["metadata"] == [] and results["connections"]["private"] == []


# --- the front door of run --processes 2 -------------------------------------------------------

@pytest.mark.slow
async def test_the_front_door_answers_the_same_refusals(redis_server, tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"redis": {"channel": "test:policy:alerts", "stream_key": "test:policy:events"}}))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamguard.cli", "run", "--processes", "2", "--http", f"127.0.0.1:{port}",
        "--redis-url", redis_server.url, "--config", str(config), "--arch", "tiny",
        stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "STREAMGUARD_HTTP_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(headers=AUTH) as http, tcp_listener() as (listen, peers):
            deadline = time.monotonic() + 240
            while True:
                try:
                    async with http.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline and proc.returncode is None, "the front door did not come up"
                await asyncio.sleep(0.2)
            for url, status, rule in [*LOOPBACK_REFUSED, (f"tcp://127.0.0.1:{listen}", 403, "sources.schemes")]:
                got, error = await post_stream(http, base, url)
                assert got == status and f"({rule})" in error, (url, got, error)
            async with http.get(f"{base}/streams") as resp:
                assert (await resp.json()) == {"streams": []}
            assert peers == []
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
