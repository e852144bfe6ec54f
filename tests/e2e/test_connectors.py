"""Connector pieces that need no call server: the event schema's participant fields, stream
names, the config section, `run --janus`, and a Janus that is not there."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from streamguard.cli import build_parser, with_janus_args
from streamguard.config import STREAM_NAME, JanusConfig, WebRTCConfig, build_config
from streamguard.connectors.base import Participant, ServerUnavailable, describe, stream_name
from streamguard.connectors.janus import JanusVideoRoom
from streamguard.errors import ConfigError
from streamguard.events import ParticipantV1, parse_any_event, parse_event

OLD_V1_ALERT = {
    "schema": "streamguard.event.v1", "type": "alert", "id": "a1", "stream": "cam", "track": 1, "score": 0.9,
    "threshold": 0.5, "window_s": 4.0, "samples": 5, "ts": 1.0, "pts": 1.0, "box": [0.1, 0.1, 0.2, 0.2],
    "model": {"name": "fsfm", "digest": "abc", "trained": True}, "reason": "threshold",
}
OLD_V1_STATE = {"schema": "streamguard.event.v1", "type": "stream", "stream": "cam", "state": "live",
                "detail": "1280x720", "ts": 1.0, "url": "rtsp://***@cam/s"}


def test_v1_events_without_participant_still_parse_and_new_ones_carry_it():
    old = parse_event(json.dumps(OLD_V1_ALERT))
    assert old.participant is None
    assert parse_any_event(json.dumps(OLD_V1_STATE)).participant is None
    who = ParticipantV1(connector="janus", server="http://sfu/janus", room="1234", publisher_id="77", display="Ann")
    new = old.model_copy(update={"participant": who})
    again = parse_event(new.to_json())
    assert again.participant == who and again.schema_ == "streamguard.event.v1"
    state = parse_any_event(json.dumps({**OLD_V1_STATE, "connector": "janus"}))
    assert state.connector == "janus"
    with pytest.raises(ValueError):  # the participant is checked like the rest
        parse_event(json.dumps({**OLD_V1_ALERT, "participant": {"room": "1"}}))


@pytest.mark.parametrize("room, publisher", [("1234", "8509074347955428"), ("sales call/#2", "ab cd"), ("r" * 80, "p" * 80)])
def test_stream_names_pass_the_stream_name_rule_and_stay_distinct(room, publisher):
    name = stream_name("janus", Participant(room, publisher))
    assert STREAM_NAME.match(name)
    other = stream_name("janus", Participant(room, publisher + "x"))
    assert STREAM_NAME.match(other) and other != name
    if len(room) < 20:
        assert name.startswith("janus-") and name == stream_name("janus", Participant(room, publisher, "a new display name"))


def test_janus_config_keeps_secrets_out_of_dumps_and_reprs():
    cfg = build_config({"connectors": {"janus": [{
        "url": "http://user:urlpw@sfu:8088/janus", "rooms": [1234, "x"], "pins": {"1234": "roompin"},
        "api_secret": "apisec", "token": "tok", "admin_key": "adm",
    }]}})
    janus = cfg.connectors.janus[0]
    assert janus.rooms == ["1234", "x"]
    shown = repr(cfg) + cfg.model_dump_json()
    assert not any(s in shown for s in ("roompin", "apisec", "tok\"", "adm\""))
    connector = JanusVideoRoom(janus, WebRTCConfig())
    assert connector.server == "http://***@sfu:8088/janus"
    assert describe(connector, Participant("1234", "9", "Ann")).server == connector.server
    with pytest.raises(ConfigError, match="own name"):
        build_config({"connectors": {"janus": [{"url": "http://a/janus"}, {"url": "http://b/janus"}]}})


def test_run_janus_option_adds_servers_watching_all_rooms():
    args = build_parser(["run"]).parse_args(["run", "--janus", "http://a:8088/janus", "--janus", "http://b:8088/janus"])
    base = build_config({"connectors": {"janus": [{"url": "http://a:8088/janus", "rooms": ["1"]}]}})
    cfg = with_janus_args(base, args.janus)
    assert [(j.name, j.url, j.rooms) for j in cfg.connectors.janus] == [
        ("janus", "http://a:8088/janus", ["1"]),  # already configured: its rooms are kept
        ("janus2", "http://b:8088/janus", "all"),
    ]
    with pytest.raises(ConfigError, match="--janus"):
        with_janus_args(build_config({}), [""])


async def test_an_unreachable_janus_is_server_unavailable_without_credentials():
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = JanusConfig(url=f"http://u:secretpw@127.0.0.1:{port}/janus", api_secret="apisec")
    connector = JanusVideoRoom(cfg, WebRTCConfig(), timeout=2.0)
    try:
        with pytest.raises(ServerUnavailable) as caught:
            await asyncio.wait_for(connector.discover(), 5)
        assert "secretpw" not in str(caught.value) and "apisec" not in str(caught.value)
        assert "***@127.0.0.1" in str(caught.value)
    finally:
        await connector.close()


async def test_run_with_only_a_connector_keeps_running_and_reports_an_unreachable_server(redis_server):
    from streamguard.cli import serve
    from tests.support.harness import EventReader, live_config

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = live_config(connectors={"janus": [{"url": f"http://u:pw-x7@127.0.0.1:{port}/janus"}]},
                      ingest={"backoff_initial_s": 0.1, "backoff_max_s": 0.2}, redis={"url": redis_server.url})
    started = time.monotonic()
    assert await serve(cfg, duration=2.0) == 0
    assert time.monotonic() - started >= 2.0  # no streams, no --http: a connector keeps `run` going
    events = EventReader(redis_server.url, cfg.redis.stream_key)
    try:
        await events.poll()
    finally:
        await events.close()
    states = [(e.stream, e.state) for e in events.events if getattr(e, "connector", None) == "janus"]
    assert states[0] == ("janus", "connecting") and ("janus", "reconnecting") in states and states[-1] == ("janus", "ended")
    assert not any("pw-x7" in e.to_json() for e in events.events)


def test_janus_with_several_processes_is_refused():
    from streamguard.cli import main
    from streamguard.commandline import EXIT_BAD_INPUT

    assert main(["run", "--janus", "http://127.0.0.1:9/janus", "--processes", "2"]) == EXIT_BAD_INPUT
