"""Shared fixtures: a sample video and real servers (redis-server, a GStreamer RTSP server).

The servers are real processes on free loopback ports; each fixture waits until its
server answers (polling with a deadline, never a fixed sleep) and fails with one
clear line when a system package is missing (`make system-packages` installs them).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import streamguard.samples
from streamguard.redis.embedded import EmbeddedRedis, find_redis_server
from streamguard.errors import StreamguardError
from lab.servers.rtsp import RtspServer

SAMPLE_SECONDS = 30

# --- sample video -------------------------------------------------------------


@pytest.fixture(scope="session")
def sample_video(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make_two_face_video(seconds=30)`: 1280x720, 25 fps, H.264, one keyframe a second.

    Encoding takes ~6 s, so the file is kept in pytest's cache between runs, keyed by
    the source of streamguard/samples.py and the PyAV version.
    """
    import av

    key = hashlib.sha256(Path(streamguard.samples.__file__).read_bytes() + av.__version__.encode()).hexdigest()[:16]
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("streamguard-samples") if cache is not None else tmp_path_factory.mktemp("samples")
    path = Path(folder) / f"two_faces_{SAMPLE_SECONDS}s_{key}.mp4"
    if not path.is_file():
        partial = path.with_suffix(f".{os.getpid()}.partial.mp4")
        streamguard.samples.make_two_face_video(partial, seconds=SAMPLE_SECONDS)
        os.replace(partial, path)
    return path


# --- redis --------------------------------------------------------------------


def _redis(port: int | None = None) -> EmbeddedRedis:
    """The product's own embedded server, preferring the system redis-server (7.x)."""
    try:
        return EmbeddedRedis(port=port, binary=find_redis_server(prefer_system=True)).start()
    except StreamguardError as err:
        pytest.fail(f"{err} (make system-packages installs redis-server)", pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """One redis-server for the whole session (do not stop it: use `fresh_redis` for that)."""
    server = _redis()
    yield server
    server.close()


@pytest.fixture
def fresh_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own, which it may stop() and start() again (same port, empty)."""
    server = _redis()
    yield server
    server.close()


@pytest.fixture
def second_redis() -> Iterator[EmbeddedRedis]:
    """Another redis-server of this test's own (a replica of `fresh_redis`, say)."""
    server = _redis()
    yield server
    server.close()


# --- RTSP ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def rtsp_server(sample_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspServer]:
    """The sample video, looping, at /cam1 and /cam2. A test that stop()s it must start() it again."""
    server = RtspServer({"cam1": sample_video, "cam2": sample_video}, tmp_path_factory.mktemp("rtsp"))
    try:
        server.start()
    except StreamguardError as err:
        pytest.fail(str(err), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def own_rtsp_server(sample_video: Path, tmp_path: Path) -> Iterator[RtspServer]:
    """A test's own RTSP server (the sample, looping, at /cam), not started: the test may start,
    stop and restart it (a camera that reboots); `port` may be set before the first start."""
    server = RtspServer({"cam": sample_video}, tmp_path)
    yield server
    server.stop()


# --- reporting ----------------------------------------------------------------


_SECONDS_BY_FOLDER: dict[str, float] = {}


def _folder(nodeid: str) -> str | None:
    return nodeid.split("/")[1] if nodeid.startswith("tests/") and nodeid.count("/") > 1 else None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Every phase's time (set-up, call, tear-down), per folder, for the summary below."""
    if (folder := _folder(report.nodeid)) is not None:
        _SECONDS_BY_FOLDER[folder] = _SECONDS_BY_FOLDER.get(folder, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per folder (unit/, e2e/): unit tests run in-process with no server, end-to-end
    tests start real servers and processes, so each is read on its own (`make test`)."""
    outcomes: dict[str, dict[str, set[str]]] = {}
    for outcome, reports in terminalreporter.stats.items():
        for report in reports:
            folder = _folder(getattr(report, "nodeid", ""))
            if folder is None or outcome not in ("passed", "failed", "skipped", "error"):
                continue
            if outcome == "passed" and report.when != "call":
                continue
            outcomes.setdefault(folder, {}).setdefault(outcome, set()).add(report.nodeid)
    if not outcomes:
        return
    terminalreporter.section("by folder")
    for folder in sorted(outcomes):
        counts = ", ".join(f"{len(ids)} {outcome}" for outcome, ids in sorted(outcomes[folder].items()))
        terminalreporter.write_line(f"{folder}: {counts} in {_SECONDS_BY_FOLDER.get(folder, 0.0):.0f} s")
