"""Start and stop the test stream servers from Python: RTSP (GStreamer) and FLV over TCP (PyAV).

Each server runs as a child process; the wrapper waits for its READY line (with a
deadline) and can stop and restart it on the same port(s), which is how tests and
benchmarks make a camera go away and come back. The RTSP server is the one tests and
`make bench` use; the FLV one is for machines without GStreamer (the GPU host).
"""

from __future__ import annotations

import selectors
import subprocess
import sys
from pathlib import Path

from lab.servers.process import stop_process
from streamguard.errors import StreamguardError

RTSP_SERVER_SCRIPT = Path(__file__).with_name("rtsp_server_gst.py")
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"
)
START_TIMEOUT_S = 10.0


class StreamServer:
    """A server of looping (or one-pass) live streams, one per file, in a child process.

    Subclasses say how to start it (`_command`), what its READY line means (`_ready`)
    and what a stream's URL is (`url`)."""

    name = "stream"

    def __init__(self, files: dict[str, Path], workdir: Path, loop: bool = True) -> None:
        self.files = files
        self.loop = loop
        self.log = workdir / f"{self.name}_server.log"
        self._proc: subprocess.Popen | None = None

    def url(self, name: str) -> str:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The server process (for CPU accounting), while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start serving; returns once the server printed READY."""
        if self.running:
            return
        with self.log.open("w") as log:
            self._proc = subprocess.Popen(self._command(), stdout=subprocess.PIPE, stderr=log, text=True)
        line = self._read_line(START_TIMEOUT_S)
        if not line.startswith("READY "):
            self.stop()
            error = self.log.read_text().strip().splitlines()
            reason = error[-1] if error else f"no READY within {START_TIMEOUT_S:g} s"
            raise StreamguardError(f"the {self.name.upper()} test server did not start: {self._explain(reason)}")
        self._ready(line.split()[1:])

    def stop(self) -> None:
        """Stop the server; clients see their connection close."""
        if self._proc is not None:
            stop_process(self._proc)
            assert self._proc.stdout is not None
            self._proc.stdout.close()
            self._proc = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self, words: list[str]) -> None:
        """Take what follows READY on the server's first line."""

    def _explain(self, reason: str) -> str:
        return reason

    def _mounts(self) -> list[str]:
        return [*(["--loop"] if self.loop else []), *(f"{name}={path}" for name, path in self.files.items())]

    def _read_line(self, timeout: float) -> str:
        """The server's first stdout line, or '' if none came within `timeout`."""
        assert self._proc is not None and self._proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return ""
        return self._proc.stdout.readline().strip()


class RtspServer(StreamServer):
    """rtsp_server_gst.py (run by the system python) serving files at rtsp://127.0.0.1:PORT/NAME; start() reuses the port.

    With `loop`, streams never end (each client starts at the beginning of the file).
    """

    name = "rtsp"

    def __init__(self, files: dict[str, Path], workdir: Path, loop: bool = True) -> None:
        super().__init__(files, workdir, loop)
        self.port = 0  # picked by the first start()

    def url(self, name: str) -> str:
        if name not in self.files:
            raise KeyError(f"no RTSP mount {name!r}; mounts: {sorted(self.files)}")
        return f"rtsp://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        if not self.running and not Path(SYSTEM_PYTHON).is_file():
            raise StreamguardError(f"the RTSP test server needs {SYSTEM_PYTHON}: apt-get install {RTSP_PACKAGES}")
        super().start()

    def _command(self) -> list[str]:
        return [SYSTEM_PYTHON, str(RTSP_SERVER_SCRIPT), "--port", str(self.port), *self._mounts()]

    def _ready(self, words: list[str]) -> None:
        self.port = int(words[0])

    def _explain(self, reason: str) -> str:
        if reason.startswith("rtsp_server:"):  # its own message
            return reason
        return f"{reason} (it needs: apt-get install {RTSP_PACKAGES})"  # GStreamer is missing or broken


class FlvServer(StreamServer):
    """flv_server.py (run by this python: it needs only PyAV) serving each file at tcp://127.0.0.1:PORT.

    Each file has its own port, picked by the first start() and reused after. With
    `loop`, streams never end (each client starts at the beginning of the file).
    """

    name = "flv"

    def __init__(self, files: dict[str, Path], workdir: Path, loop: bool = True) -> None:
        super().__init__(files, workdir, loop)
        self.ports: dict[str, int] = {}

    def url(self, name: str) -> str:
        if name not in self.files:
            raise KeyError(f"no FLV stream {name!r}; streams: {sorted(self.files)}")
        return f"tcp://127.0.0.1:{self.ports.get(name, 0)}"

    def _command(self) -> list[str]:
        ports = [f"--port={name}={port}" for name, port in self.ports.items()]
        return [sys.executable, "-m", "lab.servers.flv_server", *ports, *self._mounts()]

    def _ready(self, words: list[str]) -> None:
        self.ports = {name: int(port) for name, _, port in (w.partition("=") for w in words)}
