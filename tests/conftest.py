"""Shared fixtures: a sample video and real servers (redis-server, a GStreamer RTSP server).

The servers are real processes on free loopback ports; each fixture waits until its
server answers (polling with a deadline, never a fixed sleep) and fails with one
clear line when a system package is missing (`make system-packages` installs them).
"""

from __future__ import annotations

import hashlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import streamguard.samples
from streamguard.alerts.embedded_redis import EmbeddedRedis, find_redis_server, free_port
from streamguard.errors import StreamguardError

RTSP_SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"
)
START_TIMEOUT_S = 10.0
SAMPLE_SECONDS = 30


def _stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


# --- RTSP ---------------------------------------------------------------------


class RtspServer:
    """tests/rtsp_server.py serving files at rtsp://127.0.0.1:PORT/NAME; start() reuses the port.

    With `loop`, streams never end (each client starts at the beginning of the file).
    """

    def __init__(self, files: dict[str, Path], workdir: Path, loop: bool = True) -> None:
        self.files = files
        self.loop = loop
        self.log = workdir / "rtsp_server.log"
        self.port = 0  # picked by the first start()
        self._proc: subprocess.Popen | None = None

    def url(self, name: str) -> str:
        if name not in self.files:
            raise KeyError(f"no RTSP mount {name!r}; mounts: {sorted(self.files)}")
        return f"rtsp://127.0.0.1:{self.port}/{name}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start serving; returns once the server printed READY (fails the test otherwise)."""
        if self.running:
            return
        if not Path(SYSTEM_PYTHON).is_file():
            pytest.fail(f"the RTSP test server needs {SYSTEM_PYTHON}: apt-get install {RTSP_PACKAGES}", pytrace=False)
        cmd = [SYSTEM_PYTHON, str(RTSP_SERVER_SCRIPT), "--port", str(self.port)]
        cmd += ["--loop"] if self.loop else []
        cmd += [f"{name}={path}" for name, path in self.files.items()]
        with self.log.open("w") as log:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        line = self._read_line(START_TIMEOUT_S)
        if not line.startswith("READY "):
            self.stop()
            error = self.log.read_text().strip().splitlines()
            reason = error[-1] if error else f"no READY within {START_TIMEOUT_S:g} s"
            if not reason.startswith("rtsp_server:"):  # not its own message: GStreamer is missing or broken
                reason += f" (it needs: apt-get install {RTSP_PACKAGES})"
            pytest.fail(f"the RTSP test server did not start: {reason}", pytrace=False)
        self.port = int(line.split()[1])

    def stop(self) -> None:
        """Stop the server; clients see their connection close."""
        if self._proc is not None:
            _stop_process(self._proc)
            assert self._proc.stdout is not None
            self._proc.stdout.close()
            self._proc = None

    def _read_line(self, timeout: float) -> str:
        """The server's first stdout line, or '' if none came within `timeout`."""
        assert self._proc is not None and self._proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return ""
        return self._proc.stdout.readline().strip()


@pytest.fixture(scope="session")
def rtsp_server(sample_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspServer]:
    """The sample video, looping, at /cam1 and /cam2. A test that stop()s it must start() it again."""
    server = RtspServer({"cam1": sample_video, "cam2": sample_video}, tmp_path_factory.mktemp("rtsp"))
    server.start()
    yield server
    server.stop()
