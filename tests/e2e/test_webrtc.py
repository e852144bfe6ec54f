"""WebRTC ingest with real peers on loopback: an aiortc publisher over WHIP (H.264, VP8)
and a WHEP pull from an aiortc server, through the real pipeline, Redis and HTTP server."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import aioice.ice
import pytest
from aiortc import RTCSessionDescription

from streamguard.config import IngestConfig, StreamConfig, WebRTCConfig
from streamguard.ingest import LatestQueue, ice
from streamguard.ingest.webrtc import OfferError, WhipSession, WhipSource, check_offer
from tests.support.harness import LOOPBACK_WEBRTC, live_config, live_pipeline, wait_until
from tests.support.whep_server import SampleTrack, WhepServer
from tests.support.webrtc import SDP, make_offer, whip_publish


@pytest.fixture(autouse=True)
def loopback_ice():
    """ICE addresses are process-wide: every peer in these tests (ours and theirs) uses 127.0.0.1 only."""
    ice.configure(WebRTCConfig(**LOOPBACK_WEBRTC))



async def poll_status(http: aiohttp.ClientSession, url: str, check, timeout: float) -> dict:
    """GET a stream's status until `check(status)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        async with http.get(url) as resp:
            status = await resp.json()
        if check(status):
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"status never matched within {timeout} s: {status}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("codec", ["video/H264", "video/VP8"])
async def test_whip_publisher_is_analysed_and_delete_ends_it(codec, redis_server):
    async with live_pipeline(redis_server.url, live_config(serve=True)) as live, aiohttp.ClientSession() as http:
        base = live.server.url
        pc = await make_offer(codec)
        try:
            location, answer = await whip_publish(http, base, "call", pc)
            assert re.fullmatch(r"/whip/call/[\w-]+", location)
            rtpmaps = re.findall(r"a=rtpmap:\d+ (\w+)/90000", answer)
            assert codec.split("/")[1] in rtpmaps and {"H264", "VP8"} - {codec.split("/")[1]} - set(rtpmaps)
            assert "a=candidate:" in answer and " 127.0.0.1 " in answer  # no trickle: candidates in the answer

            alert = await live.events.wait_for(
                lambda e: e.type == "alert" and e.stream == "call", 30, what="an alert for the WHIP stream"
            )
            assert alert.model.trained is False
            status = await poll_status(http, f"{base}/streams/call", lambda s: s["fps"] > 5, 5)
            assert status["state"] == "live" and status["resolution"] == "1280x720"
            assert status["url"] == "whip://127.0.0.1/call" and status["last_frame_age_s"] < 1

            async with http.delete(base + location) as resp:
                assert resp.status == 200
            assert "call" not in live.pipeline.workers
            await live.events.wait_for(
                lambda e: e.type == "stream" and e.stream == "call" and e.state == "ended", 5, what="the end of the stream"
            )
            await wait_until(lambda: pc.connectionState == "closed", 10, "closed for the publisher")
            async with http.delete(base + location) as resp:
                assert resp.status == 404 and "no stream named call" in (await resp.json())["error"]
        finally:
            await pc.close()
    assert live.events.states("call")[:2] == ["connecting", "live"]
    clears = [e for e in live.events.events if e.type == "clear" and e.stream == "call"]
    assert {e.id for e in clears} >= {alert.id}


async def test_whep_pull_is_analysed_and_reconnects_when_the_server_ends_it(redis_server):
    server = WhepServer()
    await server.start()
    try:
        cfg = live_config(streams={"remote": server.url("room")}, ingest={"backoff_initial_s": 0.2, "backoff_max_s": 1.0})
        async with live_pipeline(redis_server.url, cfg) as live:
            await live.events.wait_for(lambda e: e.type == "alert" and e.stream == "remote", 30, what="an alert")
            mark = len(live.events.events)
            await server.end_sessions()  # the media server restarts
            await live.events.wait_for(
                lambda e: e.type == "stream" and e.state == "reconnecting", 10, after=mark, what="reconnecting"
            )
            await live.events.wait_for(lambda e: e.type == "stream" and e.state == "live", 10, after=mark, what="live")
            assert server.offers == 2 and server.deleted == ["s1"]  # the dead session was ended politely
            frames = live.pipeline.workers["remote"].frames_analysed
            await wait_until(lambda: live.pipeline.workers["remote"].frames_analysed > frames + 3, 10, "analysing again")
            await live.pipeline.remove_stream("remote")
            assert server.deleted == ["s1", "s2"]
    finally:
        await server.close()


async def test_whip_publisher_that_stops_sending_is_stalled():
    track = SampleTrack()
    pc = await make_offer("video/VP8", track)
    session = await WhipSession.accept(pc.localDescription.sdp, WebRTCConfig(**LOOPBACK_WEBRTC))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=session.answer, type="answer"))
    queue = LatestQueue(1)
    states: list[str] = []
    source = WhipSource(
        StreamConfig(name="frozen", url="whip://127.0.0.1/frozen"), IngestConfig(stall_timeout_s=0.5), queue,
        session, on_state=lambda _n, s, _d: states.append(s),
    )
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(queue.get(), 10)
        track.freeze()
        await wait_until(lambda: "stalled" in states, 5, "stalled")
        assert source.state == "stalled" and not task.done()  # a publisher may come back: keep waiting
        await pc.close()  # it leaves
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pc.close()
    assert states == ["connecting", "live", "stalled", "ended"]


async def test_whip_bad_requests_get_4xx_and_a_new_publisher_replaces_the_old(redis_server):
    cfg = live_config(serve=True, streams={"cam": "rtsp://127.0.0.1:9/none"})
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession() as http:
        base = live.server.url

        async def refused(status: int, path: str, body: str, headers=SDP, needle: str = "") -> None:
            async with http.post(base + path, data=body, headers=headers) as resp:
                assert resp.status == status, await resp.text()
                assert needle in (await resp.json())["error"]

        pc = await make_offer()
        offer = pc.localDescription.sdp
        await pc.close()
        await refused(400, "/whip/a", "v=0\r\nthis is not sdp\r\n", needle="SDP offer")
        await refused(400, "/whip/a", offer.replace("m=video", "m=audio"), needle="no video")
        await refused(400, "/whip/bad name", offer, needle="bad stream name")
        await refused(415, "/whip/a", offer, headers={"Content-Type": "text/plain"}, needle="application/sdp")
        await refused(409, "/whip/cam", offer, needle="not a WHIP stream")
        async with http.delete(f"{base}/whip/a/nosuchsession") as resp:
            assert resp.status == 404
        async with http.patch(f"{base}/whip/a/x", data="a=candidate:1", headers=SDP) as resp:
            assert resp.status == 405  # no trickle ICE
        assert set(live.pipeline.workers) == {"cam"} and not live.server.control.whip

        first, second = await make_offer(), await make_offer()
        try:
            old, _ = await whip_publish(http, base, "dup", first)
            await wait_until(lambda: live.pipeline.workers["dup"].source.state == "live", 10, "live")
            new, _ = await whip_publish(http, base, "dup", second)
            assert old != new and live.server.control.whip["dup"].id == new.rsplit("/", 1)[1]
            await wait_until(lambda: first.connectionState == "closed", 10, "closed for the replaced publisher")
            async with http.delete(base + old) as resp:
                assert resp.status == 404
        finally:
            await first.close()
            await second.close()


# --- offers and candidate addresses -----------------------------------------------


async def test_check_offer_explains_what_is_wrong():
    pc = await make_offer(codec=None)
    offer = pc.localDescription.sdp
    await pc.close()
    check_offer(offer)
    for bad, why in [
        ("", "no video"),
        (offer.replace("a=sendonly", "a=recvonly"), "does not send video"),
        (re.sub(r"(a=rtpmap:\d+ )(VP8|H264)/", r"\1AV1/", offer), "(AV1, rtx) include neither H.264 nor VP8"),
        ("m=video notaport\r\n", "malformed SDP offer"),
    ]:
        with pytest.raises(OfferError, match=re.escape(why)):
            check_offer(bad)


def test_additional_hosts_are_gathered_or_mapped():
    hosts = ice.configure(WebRTCConfig(host_interfaces=False, additional_hosts=["127.0.0.1", "203.0.113.7"]))
    assert hosts.local == ("127.0.0.1",) and hosts.mapped == ("203.0.113.7",)
    interfaces = ice._aioice_addresses(True, True)
    gathered = aioice.ice.get_host_addresses(True, True)
    assert "127.0.0.1" in gathered and set(interfaces) <= set(gathered)  # a mapped address needs their ports
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(False, True)


def test_advertise_offers_interface_candidates_under_the_mapped_address():
    interface = next(iter(ice._aioice_addresses(True, False)), None)
    if interface is None:
        pytest.skip("this machine has no non-loopback IPv4 interface")
    sdp = (
        f"v=0\r\nm=video 50000 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 {interface}\r\n"
        f"a=candidate:abc 1 udp 2130706431 {interface} 50000 typ host\r\n"
        "a=candidate:def 1 udp 2130706431 127.0.0.1 50001 typ host\r\n"
    )
    both = ice.advertise(sdp, ice.IceHosts(interfaces=True, local=("127.0.0.1",), mapped=("203.0.113.7",)))
    only = ice.advertise(sdp, ice.IceHosts(interfaces=False, local=("127.0.0.1",), mapped=("203.0.113.7",)))
    mapped = re.compile(r"a=candidate:\w+ 1 udp 2130706431 203\.0\.113\.7 50000 typ host")
    assert mapped.search(both) and mapped.search(only)
    assert f"{interface} 50000 typ host" in both and f"{interface} 50000 typ host" not in only
    assert "127.0.0.1 50001 typ host" in only  # an address of this machine is never rewritten
    assert "c=IN IP4 203.0.113.7" in only and f"c=IN IP4 {interface}" in both
    assert ice.advertise(sdp, ice.IceHosts(interfaces=True, local=(), mapped=())) == sdp
