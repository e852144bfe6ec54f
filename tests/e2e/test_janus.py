"""The Janus VideoRoom connector against a real Janus (Debian's `janus`) and real WebRTC publishers.

Janus never gathers ICE candidates on loopback, so the whole module runs inside a
network namespace it makes (lab/netns.py: loopback plus a veth pair whose both ends
are in it): the test's event loop thread enters it, and Janus and redis-server are
started from there. Nothing is sent anywhere else. One Janus (with an api_secret, as
a production one has) serves the module; publishers are aiortc peers joining as
VideoRoom publishers and sending the two-face sample (VP8, 640x360, 10 fps), and one
real browser (Debian's chromium, headless, its fake camera playing the same sample).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.netns import PrivateNetwork
from lab.servers.janus import (
    CHROMIUM, JANUS_BINARY, BrowserPublisher, JanusPublisher, JanusServer, LoopTrack, sample_loop, videoroom_request,
)
from streamguard.config import WebRTCConfig
from streamguard.events import EventV1, StreamEventV1
from streamguard.ingest import ice
from streamguard.redis.embedded import EmbeddedRedis, find_redis_server
from tests.support.harness import live_config, live_pipeline, wait_until

pytestmark = pytest.mark.slow

SECRET = "janus-api-secret-x9"
URL_PASSWORD = "url-pw-x9"
WATCHED, OTHER, UNWATCHED = 1234, 4321, 999


@pytest.fixture(scope="module")
def private_net():
    why = PrivateNetwork.available()
    if why is not None:
        pytest.skip(f"the Janus tests {why}")
    if not Path(JANUS_BINARY).exists():
        pytest.fail("janus is not installed (make system-packages installs it)", pytrace=False)
    net = PrivateNetwork().create()
    net.enter()
    ice.configure(WebRTCConfig())  # every peer gathers on the namespace's veth addresses
    try:
        yield net
    finally:
        net.delete()


@pytest.fixture(scope="module")
def janus(private_net, tmp_path_factory):
    server = JanusServer(tmp_path_factory.mktemp("janus"), rooms={WATCHED: {}, OTHER: {}, UNWATCHED: {}},
                         api_secret=SECRET, ice_interface=private_net.interface)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ns_redis(private_net):
    """A redis-server inside the namespace (the session's one is outside it)."""
    server = EmbeddedRedis(binary=find_redis_server(prefer_system=True)).start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def frames():
    return sample_loop()


def connector_config(janus: JanusServer, rooms: list[int]) -> dict:
    url = janus.url.replace("http://", f"http://monitor:{URL_PASSWORD}@")  # user info must never show
    return {"janus": [{"url": url, "rooms": rooms, "api_secret": SECRET, "poll_interval_s": 0.25}]}


def config(janus: JanusServer, rooms: list[int]):
    return live_config(
        connectors=connector_config(janus, rooms),
        webrtc={"host_interfaces": True, "additional_hosts": []},
        ingest={"backoff_initial_s": 0.2, "backoff_max_s": 1.0, "stall_timeout_s": 2.0},
    )


class Room:
    """The publishers a test started, all closed at its end."""

    def __init__(self, janus: JanusServer, frames) -> None:
        self.janus = janus
        self.frames = frames
        self.people: list[JanusPublisher] = []

    async def join(self, display: str, room: int = WATCHED) -> JanusPublisher:
        publisher = JanusPublisher(self.janus.url, room, display, LoopTrack(self.frames), api_secret=SECRET)
        self.people.append(publisher)
        await publisher.publish()
        return publisher

    async def close(self) -> None:
        for publisher in self.people:
            await publisher.close(leave=self.janus.running)


async def expect(events, match, timeout: float, after: int = 0, what: str = ""):
    """`events.wait_for`, failing with the latest stream states and their details (why a subscription failed)."""
    try:
        return await events.wait_for(match, timeout, after=after, what=what)
    except pytest.fail.Exception:
        states = [(e.stream, e.state, e.detail) for e in events.events if isinstance(e, StreamEventV1)][-6:]
        pytest.fail(f"no {what} within {timeout} s; latest stream states: {states}")


def stream_of(publisher: JanusPublisher) -> str:
    return f"janus-{publisher.room}-{publisher.publisher_id}"


def alert_for(display: str):
    return lambda e: isinstance(e, EventV1) and e.type == "alert" and e.participant is not None and e.participant.display == display


def cleared(stream: str, reason: str):
    return lambda e: isinstance(e, EventV1) and e.type == "clear" and e.stream == stream and e.reason == reason


async def test_participants_are_analysed_by_name_as_they_come_and_go(janus, ns_redis, frames):
    room = Room(janus, frames)
    try:
        alice, bob = await room.join("alice"), await room.join("bob")
        carol = await room.join("carol", UNWATCHED)
        async with live_pipeline(ns_redis.url, config(janus, [WATCHED, OTHER])) as live:
            events = live.events
            # Two participants: alerts naming each.
            for who in (alice, bob):
                alert = await expect(events, alert_for(who.display), 30, what=f"an alert naming {who.display}")
                assert alert.stream == stream_of(who)
                assert alert.participant.room == str(WATCHED) and alert.participant.publisher_id == str(who.publisher_id)
                assert alert.participant.connector == "janus" and alert.participant.server == janus.url.replace("http://", "http://***@")
                status = live.pipeline.workers[alert.stream].status()
                assert status["participant"]["display"] == who.display and URL_PASSWORD not in str(status)

            # A third joins mid-run: analysed within 2 s of publishing.
            dave = await room.join("dave")
            joined = time.monotonic()
            await wait_until(lambda: stream_of(dave) in live.pipeline.workers
                             and live.pipeline.workers[stream_of(dave)].frames_analysed > 0, 10, "analysing dave")
            first_analysed_s = time.monotonic() - joined
            print(f"dave: first frame analysed {first_analysed_s:.2f} s after joining")
            assert first_analysed_s < 2.0
            await expect(events, alert_for("dave"), 20, what="an alert naming dave")

            # One leaves: their stream ends and their alert clears, saying so.
            await bob.close()
            clear = await expect(events, cleared(stream_of(bob), "participant_left"), 10, what="bob's alert cleared")
            assert clear.id in {a.id for a in events.alerts(stream_of(bob))} and clear.participant.display == "bob"
            await expect(events, lambda e: isinstance(e, StreamEventV1) and e.stream == stream_of(bob) and e.state == "ended",
                                  5, what="bob's stream ended")
            assert stream_of(bob) not in live.pipeline.workers

            # One unpublishes and publishes again: same stream, same identity.
            name = stream_of(alice)
            await alice.unpublish()
            await expect(events, cleared(name, "participant_unpublished"), 10, what="alice's alert cleared on unpublish")
            mark = len(events.events)
            await alice.republish(LoopTrack(frames))
            assert stream_of(alice) == name
            again = await expect(events, alert_for("alice"), 20, after=mark, what="alice analysed again")
            assert again.stream == name

            # A destroyed room ends its streams.
            eve = await room.join("eve", OTHER)
            await expect(events, alert_for("eve"), 20, what="an alert naming eve")
            await videoroom_request(janus.url, {"request": "destroy", "room": OTHER}, api_secret=SECRET)
            await expect(events, cleared(stream_of(eve), "room_destroyed"), 10, what="eve's alert cleared with the room")

            # The room that is not watched is ignored.
            assert not any(f"-{UNWATCHED}-" in name for name in live.pipeline.workers)
            assert carol.publisher_id is not None
        everything = [e.to_json() for e in live.events.events]
        assert not any(e.participant and e.participant.room == str(UNWATCHED) for e in live.events.events)
        assert not any(SECRET in j or URL_PASSWORD in j for j in everything)  # credentials never leave
    finally:
        await room.close()
        await videoroom_request(janus.url, {"request": "create", "room": OTHER}, api_secret=SECRET)


async def test_janus_killed_and_restarted_is_retried_and_analysis_resumes(janus, ns_redis, frames):
    room = Room(janus, frames)
    try:
        frank = await room.join("frank")
        async with live_pipeline(ns_redis.url, config(janus, [WATCHED])) as live:
            events = live.events
            await expect(events, alert_for("frank"), 30, what="an alert naming frank")
            mark = len(events.events)
            janus.stop(kill=True)
            down = await expect(events, lambda e: isinstance(e, StreamEventV1) and e.connector == "janus"
                                         and e.state == "reconnecting", 10, after=mark, what="the connector reconnecting")
            assert "retry in" in down.detail and URL_PASSWORD not in down.to_json() and "***@" in down.url
            janus.start()
            await expect(events, lambda e: isinstance(e, StreamEventV1) and e.connector == "janus" and e.state == "live",
                                  10, after=mark, what="the connector live again")
            old = stream_of(frank)
            frank_again = await room.join("frank")  # a client reconnects to the restarted SFU
            await expect(events, cleared(old, "participant_left"), 10, after=mark, what="frank's old alert cleared")
            alert = await expect(events, alert_for("frank"), 30, after=mark, what="frank analysed again")
            assert alert.stream == stream_of(frank_again) != old
    finally:
        if not janus.running:
            janus.start()
        await room.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
async def test_a_browser_participant_is_analysed_by_name(janus, ns_redis, frames, tmp_path):
    browser = BrowserPublisher(janus.url, WATCHED, "Ann in a browser", frames, tmp_path, api_secret=SECRET)
    async with live_pipeline(ns_redis.url, config(janus, [WATCHED])) as live:
        await browser.start()
        try:
            alert = await expect(live.events, alert_for("Ann in a browser"), 40, what="an alert naming the browser's user")
            assert alert.stream.startswith(f"janus-{WATCHED}-") and alert.participant.room == str(WATCHED)
            assert live.pipeline.workers[alert.stream].source.size == (640, 360)
        finally:
            await browser.close()


async def test_max_participants_caps_the_streams_a_server_adds(janus, ns_redis, frames):
    room = Room(janus, frames)
    cfg = config(janus, [WATCHED])
    cfg.connectors.janus[0].max_participants = 1
    try:
        first = await room.join("gil")
        async with live_pipeline(ns_redis.url, cfg) as live:
            await expect(live.events, alert_for("gil"), 30, what="an alert naming gil")
            second = await room.join("hal")
            watch = live.watches[0]
            await wait_until(lambda: (str(WATCHED), str(second.publisher_id)) in watch._skipped, 10, "hal turned away")
            assert set(live.pipeline.workers) == {stream_of(first)}
            await first.close()  # room for one more
            await expect(live.events, alert_for("hal"), 30, what="hal analysed once gil left")
    finally:
        await room.close()
