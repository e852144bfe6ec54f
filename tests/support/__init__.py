"""What the tests share, in one place: the live pipeline harness, real WHEP and WebRTC
peers, the command as a user runs it, HTTP and source helpers, and test events.

Fixtures (real servers: redis-server, the RTSP server, the sample video) stay in
tests/conftest.py, which pytest loads for every folder. Unit tests (tests/unit/) run
in-process with no server; end-to-end tests (tests/e2e/) start real servers and
processes.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
