"""`streamguard run` as a user runs it: a real RTSP server, a real Redis, a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from streamguard.redis.embedded import free_port
from tests.support.cli import face_events, keys_config, run_streamguard, user_error


def collect(pubsub: redis.client.PubSub) -> list[dict]:
    """Everything already delivered to the subscriber (the publisher has exited)."""
    out = []
    while (msg := pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)) is not None:
        out.append(msg)
    return out


@pytest.fixture
def subscriber(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    pubsub = client.pubsub()
    yield client, pubsub
    pubsub.close()
    client.close()


def start_listening(pubsub: redis.client.PubSub, channel: str) -> None:
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=5.0)["type"] == "subscribe"


@pytest.mark.slow
def test_rtsp_stream_to_redis_alerts(rtsp_server, redis_server, subscriber, tmp_path):
    client, pubsub = subscriber
    cfg, channel, stream_key = keys_config(tmp_path)
    start_listening(pubsub, channel)
    proc = run_streamguard(
        "run", "--stream", f"cam1={rtsp_server.url('cam1')}", "--redis-url", redis_server.url,
        "--config", str(cfg), "--threshold", "0", "--arch", "tiny", "--duration", "10",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "untrained" in proc.stderr

    live = face_events(m["data"] for m in collect(pubsub))
    durable = face_events(fields[b"event"] for _, fields in client.xrange(stream_key))
    for events in (live, durable):
        alerts = [e for e in events if e.type == "alert"]
        assert len({e.track for e in alerts}) >= 2, events  # both faces
        for e in alerts:
            assert e.stream == "cam1" and e.threshold == 0.0 and e.samples >= 5 and e.window_s == 4.0
            assert 0 <= e.box[0] < e.box[2] <= 1 and 0 <= e.box[1] < e.box[3] <= 1
            assert e.model.name == "fsfm-vit-tiny" and e.model.trained is False
    assert [e.id for e in live] == [e.id for e in durable]
    # graceful stop: every alert that was opened is cleared
    opened = {e.id for e in durable if e.type == "alert"}
    assert opened == {e.id for e in durable if e.type == "clear"}


@pytest.mark.slow
def test_bad_stream_does_not_stop_the_good_one(rtsp_server, redis_server, subscriber, tmp_path):
    client, pubsub = subscriber
    cfg, channel, stream_key = keys_config(tmp_path)
    start_listening(pubsub, channel)
    bad = f"rtsp://admin:s3cret@127.0.0.1:{free_port()}/nothing"
    proc = run_streamguard(
        "run", "--stream", f"good={rtsp_server.url('cam2')}", "--stream", f"bad={bad}",
        "--redis-url", redis_server.url, "--config", str(cfg), "--threshold", "0", "--arch", "tiny",
        "--duration", "10",
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "s3cret" not in proc.stderr and "s3cret" not in proc.stdout
    assert "Traceback" not in proc.stderr
    assert "stream bad" in proc.stderr
    alerts = face_events(m["data"] for m in collect(pubsub))
    assert {e.stream for e in alerts} == {"good"}
    assert len({e.track for e in alerts if e.type == "alert"}) >= 2



def test_missing_checkpoint_is_one_clear_error(tmp_path):
    proc = run_streamguard("run", "--stream", "a=x.mp4", "--checkpoint", str(tmp_path / "nope.pth"))
    assert proc.returncode == 2
    assert "nope.pth" in user_error(proc)


def test_checkpoint_of_another_architecture(tmp_path):
    from streamguard.model.checkpoint import save_checkpoint, untrained_model

    path = tmp_path / "tiny.pth"
    save_checkpoint(path, untrained_model("tiny"))
    proc = run_streamguard("run", "--stream", "a=x.mp4", "--checkpoint", str(path), "--arch", "small")
    assert proc.returncode == 2
    msg = user_error(proc)
    assert "tiny.pth" in msg and "small" in msg


def test_invalid_config_value_names_the_field(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("scoring: {window_s: 0}\n")
    proc = run_streamguard("run", "--stream", "a=x.mp4", "--config", str(cfg))
    assert proc.returncode == 2
    assert "scoring.window_s" in user_error(proc)


def test_redis_user_without_permission_is_one_clear_error(fresh_redis):
    """A Redis login that can never deliver stops `run` at start (exit 2), instead of an endless outage."""
    admin = redis.Redis(host="127.0.0.1", port=fresh_redis.port)
    admin.acl_setuser("sink", enabled=True, passwords=["+pw-s3cret"], keys=["streamguard:*"], channels=["streamguard:*"],
                      commands=["+multi", "+exec", "+publish", "+set"])  # no +xadd
    admin.close()
    url = f"redis://sink:pw-s3cret@127.0.0.1:{fresh_redis.port}/0"
    proc = run_streamguard("run", "--arch", "tiny", "--stream", "a=x.mp4", "--redis-url", url)
    assert proc.returncode == 2
    msg = user_error(proc)
    assert msg.startswith("streamguard: error: redis.url:") and "XADD 'streamguard:events' (NOPERM" in msg
    assert "s3cret" not in proc.stderr


@pytest.mark.parametrize("kind", ["unreachable", "not_video"])
def test_bad_source_alone_fails_clearly(kind, redis_server, tmp_path):
    if kind == "unreachable":
        url, needle = f"rtsp://127.0.0.1:{free_port()}/x", "cannot open"
    else:
        url = str(tmp_path / "notes.txt")
        Path(url).write_text("this is not a video\n" * 100)
        needle = "notes.txt"
    proc = run_streamguard("run", "--stream", f"cam={url}", "--redis-url", redis_server.url, "--arch", "tiny",
                           "--duration", "30")
    assert proc.returncode == 3
    msg = user_error(proc)
    assert "stream cam" in msg and needle in msg
