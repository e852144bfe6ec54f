"""`streamguard run --processes N` as a user runs it: real worker processes, real RTSP and Redis."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import redis

from streamguard.config import StreamConfig
from streamguard.errors import ConfigError
from streamguard.supervisor import shares
from tests.support.cli import Lines, STREAMGUARD, face_events, keys_config, run_streamguard, user_error


def test_streams_are_dealt_round_robin_and_no_worker_gets_none():
    streams = [StreamConfig(name=f"s{i}", url=f"rtsp://h/{i}") for i in range(5)]
    assert [[s.name for s in share] for share in shares(streams, 2)] == [["s0", "s2", "s4"], ["s1", "s3"]]
    assert [len(share) for share in shares(streams, 8)] == [1] * 5
    with pytest.raises(ConfigError, match="--processes must be >= 1, got 0"):
        shares(streams, 0)


def test_with_the_api_on_every_worker_starts_even_with_no_stream():
    # streams can be added later through the front door: every worker starts, some with none
    assert [len(share) for share in shares([StreamConfig(name="a", url="x.mp4")], 3, allow_empty=True)] == [1, 0, 0]


def test_the_front_door_on_a_port_in_use_is_one_clear_error_before_any_worker_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_streamguard("run", "--processes", "2", "--stream", "a=x.mp4", "--stream", "b=y.mp4",
                               "--http", f"127.0.0.1:{port}", "--arch", "tiny")
    assert proc.returncode == 2
    error = user_error(proc)
    assert f"http.bind: cannot listen on 127.0.0.1:{port}: " in error and "address already in use" in error.lower()
    assert "worker 0 started" not in proc.stderr


@pytest.mark.slow
def test_two_workers_each_analyse_their_share_into_one_redis(rtsp_server, redis_server, tmp_path):
    cfg, _, stream_key = keys_config(tmp_path)
    proc = run_streamguard(
        "run", "--processes", "2", "--stream", f"a={rtsp_server.url('cam1')}", "--stream", f"b={rtsp_server.url('cam2')}",
        "--redis-url", redis_server.url, "--config", str(cfg), "--threshold", "0", "--arch", "tiny", "--duration", "8",
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"\[worker 0\] .*analysing 1 stream\(s\): a=", proc.stderr)
    assert re.search(r"\[worker 1\] .*analysing 1 stream\(s\): b=", proc.stderr)
    client = redis.Redis.from_url(redis_server.url)
    try:
        events = face_events(fields[b"event"] for _, fields in client.xrange(stream_key))
    finally:
        client.close()
    assert {e.stream for e in events if e.type == "alert"} == {"a", "b"}  # both workers published



@pytest.mark.slow
def test_a_worker_that_dies_is_started_again_and_all_stop_on_sigterm(rtsp_server, redis_server, tmp_path):
    cfg, _, _ = keys_config(tmp_path)
    proc = subprocess.Popen(
        [STREAMGUARD, "run", "--processes", "2", "--stream", f"a={rtsp_server.url('cam1')}",
         "--stream", f"b={rtsp_server.url('cam2')}", "--redis-url", redis_server.url, "--config", str(cfg),
         "--arch", "tiny", "--duration", "300"],
        stderr=subprocess.PIPE, text=True,
    )
    lines = Lines(proc)
    try:
        pid = int(lines.wait_for(r"worker 1 started \(pid (\d+)\)", 120)[1])
        lines.wait_for(r"\[worker 1\] .*stream b: live", 120)
        os.kill(pid, signal.SIGKILL)
        lines.wait_for(r"worker 1 died \(signal 9\); starting it again in 1 s", 30)
        new_pid = int(lines.wait_for(r"worker 1 started \(pid (\d+)\)", 30)[1])
        assert new_pid != pid
        lines.wait_for(r"\[worker 1\] .*stream b: live", 120)  # the new worker analyses b again
        proc.send_signal(signal.SIGTERM)
        lines.wait_for(r"workers ended: exit codes \[0, 0\], 1 restart\(s\)", 60)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_sigterm_while_the_first_worker_loads_stops_everything_without_starting_the_rest(redis_server, tmp_path):
    cfg, _, _ = keys_config(tmp_path)
    proc = subprocess.Popen(
        [STREAMGUARD, "run", "--processes", "2", "--stream", "a=nothing-a.mp4", "--stream", "b=nothing-b.mp4",
         "--redis-url", redis_server.url, "--config", str(cfg), "--arch", "tiny"],
        stderr=subprocess.PIPE, text=True,
    )
    lines = Lines(proc)
    try:
        lines.wait_for(r"worker 0 started", 60)
        proc.send_signal(signal.SIGTERM)
        lines.wait_for(r"workers ended: exit codes \[-?\d+\], 0 restart\(s\)", 60)  # one worker: 1 never started
        assert proc.wait(timeout=30) != 0
        assert not any("worker 1 started" in line for line in lines.seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_workers_raw_output_is_relayed_as_safe_lines(tmp_path, capsys):
    # What a worker prints outside its log (FFmpeg's own stderr, say) gets the log's treatment too.
    from streamguard.supervisor import Worker

    script = "import sys; sys.stdout.write('open rtsp://u:hunter2@h/x failed\\x1b[2J\\r\\nnext\\x85line\\n')"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    worker = Worker(3, tmp_path / "w.yaml", tmp_path / "w.ready", [])
    assert await worker._relay_and_wait(proc) == 0
    assert capsys.readouterr().err == "[worker 3] open rtsp://***@h/x failed\\x1b[2J\n[worker 3] next\\x85line\n"
