"""Start and stop the GStreamer RTSP server (`rtsp_server_gst.py`) from Python.

GStreamer's Python bindings are a Debian package, so the server runs under the
system python as a child process; this wrapper waits for its READY line (with a
deadline) and can stop and restart it on the same port, which is how tests and
benchmarks make a camera go away and come back.
"""

from __future__ import annotations

import selectors
import signal
import subprocess
from pathlib import Path

from streamguard.errors import StreamguardError

RTSP_SERVER_SCRIPT = Path(__file__).with_name("rtsp_server_gst.py")
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"
)
START_TIMEOUT_S = 10.0


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RtspServer:
    """rtsp_server_gst.py (run by the system python) serving files at rtsp://127.0.0.1:PORT/NAME; start() reuses the port.

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
        if not Path(SYSTEM_PYTHON).is_file():
            raise StreamguardError(f"the RTSP test server needs {SYSTEM_PYTHON}: apt-get install {RTSP_PACKAGES}")
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
            raise StreamguardError(f"the RTSP test server did not start: {reason}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        """Stop the server; clients see their connection close."""
        if self._proc is not None:
            stop_process(self._proc)
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


