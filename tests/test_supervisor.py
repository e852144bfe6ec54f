"""`streamguard run --processes N` as a user runs it: real worker processes, real RTSP and Redis."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
import redis

from streamguard.alerts.embedded_redis import free_port
from streamguard.config import StreamConfig
from streamguard.errors import ConfigError
from streamguard.supervisor import shares, worker_binds
from tests.test_cli_e2e import STREAMGUARD, face_events, keys_config, run_streamguard, user_error


def test_streams_are_dealt_round_robin_and_no_worker_gets_none():
    streams = [StreamConfig(name=f"s{i}", url=f"rtsp://h/{i}") for i in range(5)]
    assert [[s.name for s in share] for share in shares(streams, 2)] == [["s0", "s2", "s4"], ["s1", "s3"]]
    assert [len(share) for share in shares(streams, 8)] == [1] * 5
    with pytest.raises(ConfigError, match="--processes must be >= 1, got 0"):
        shares(streams, 0)


def test_each_worker_gets_the_next_http_port():
    assert worker_binds("127.0.0.1:8080", 3) == ["127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082"]
    assert worker_binds("[::1]:9000", 2) == ["[::1]:9000", "[::1]:9001"]
    assert worker_binds(None, 2) == [None, None]
    with pytest.raises(ConfigError, match="past 65535"):
        worker_binds("0.0.0.0:65535", 2)
    # with the API on, streams can be added later: every worker starts, some with none
    assert [len(share) for share in shares([StreamConfig(name="a", url="x.mp4")], 3, allow_empty=True)] == [1, 0, 0]


def test_processes_with_http_on_any_free_port_is_one_clear_error(tmp_path):
    proc = run_streamguard("run", "--processes", "2", "--stream", "a=x.mp4", "--stream", "b=y.mp4",
                           "--http", "127.0.0.1:0", "--arch", "tiny")
    assert proc.returncode == 2
    assert "--processes with --http needs a fixed port (worker i serves on PORT + i), not port 0" in user_error(proc)


def two_free_ports() -> int:
    """A port P with P + 1 free too."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two free ports in a row")


@pytest.mark.slow
def test_with_http_each_worker_serves_its_own_api_on_the_next_port(rtsp_server, redis_server, tmp_path):
    cfg, _, _ = keys_config(tmp_path)
    port = two_free_ports()
    proc = subprocess.Popen(
        [STREAMGUARD, "run", "--processes", "2", "--stream", f"a={rtsp_server.url('cam1')}", "--http", f"127.0.0.1:{port}",
         "--redis-url", redis_server.url, "--config", str(cfg), "--arch", "tiny", "--duration", "300"],
        stderr=subprocess.PIPE, text=True,
    )
    lines = Lines(proc)
    try:
        for i in (0, 1):  # each worker says where its API listens, once it does
            lines.wait_for(rf"\[worker {i}\] .*HTTP API on http://127.0.0.1:{port + i} ", 120)
        health = [get_health(port + i) for i in (0, 1)]
        assert [h["streams"] for h in health] == [1, 0]  # worker 0 has a; worker 1 is up with none, for the API to add
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def get_health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        return json.loads(response.read())


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


class Lines:
    """A child's output, line by line, read by a thread so that the test can wait for one with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        pytest.fail(f"no line matching {pattern!r} within {timeout} s; last lines:\n{''.join(self.seen[-30:])}")


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
