"""Stopping a test server's child process: politely, then for good after a bound."""

from __future__ import annotations

import signal
import subprocess

STOP_TIMEOUT_S = 5.0


def stop_process(proc: subprocess.Popen, sig: signal.Signals = signal.SIGTERM) -> None:
    """Send `sig` (SIGKILL plays a crash) and wait; kill it if it is still there after STOP_TIMEOUT_S."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
