"""`streamguard` run as a user runs it: the command, per-test Redis keys, its output read line by line."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from streamguard.events import EventV1, parse_any_event

STREAMGUARD = str(Path(sys.executable).parent / "streamguard")


def keys_config(tmp_path: Path, extra: str = "") -> tuple[Path, str, str]:
    """A config with per-test channel/stream keys, so tests sharing a Redis do not mix."""
    tag = uuid.uuid4().hex[:8]
    channel, stream_key = f"test:{tag}:alerts", f"test:{tag}:events"
    path = tmp_path / "cfg.yaml"
    path.write_text(f"redis: {{channel: '{channel}', stream_key: '{stream_key}'}}\n{extra}")
    return path, channel, stream_key


def run_streamguard(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STREAMGUARD, *args], capture_output=True, text=True, timeout=timeout)


def face_events(payloads) -> list[EventV1]:
    """The face verdicts among the published events (stream state events are skipped)."""
    return [e for e in map(parse_any_event, payloads) if isinstance(e, EventV1)]


def user_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line a user sees (no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert lines, proc.stderr
    return "\n".join(lines)


class Lines:
    """A child's output, line by line, read by a thread so that the test can wait for one with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self.closed = False  # the child closed its output and every line was read
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._lines.put(line)
        self._lines.put(None)

    def _next_line(self, deadline: float) -> str | None:
        """The next line (kept in `seen` too); None once the output is closed or at the deadline."""
        if self.closed or (left := deadline - time.monotonic()) <= 0:
            return None
        try:
            line = self._lines.get(timeout=left)
        except queue.Empty:
            return None
        if line is None:
            self.closed = True
        else:
            self.seen.append(line)
        return line

    def _last_lines(self) -> str:
        return "".join(self.seen[-30:])

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (line := self._next_line(deadline)) is not None:
            if match := re.search(pattern, line):
                return match
        pytest.fail(f"no line matching {pattern!r} within {timeout} s; last lines:\n{self._last_lines()}")

    def read_to_end(self, timeout: float) -> list[str]:
        """Every line seen, with the rest read until the child closes its output."""
        deadline = time.monotonic() + timeout
        while self._next_line(deadline) is not None:
            pass
        if not self.closed:
            pytest.fail(f"the child kept its output open past {timeout} s; last lines:\n{self._last_lines()}")
        return self.seen
