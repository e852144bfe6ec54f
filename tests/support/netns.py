"""Run a test module inside a network namespace it makes: how the model-service tests keep their traffic in.

Ray 2.60 binds and dials this machine's interface address, not loopback, even when told
127.0.0.1. In a namespace of our own (`lab.netns.PrivateNetwork`: loopback and a veth pair,
both ends inside, no route out) it uses 127.0.0.1, and nothing it does can reach another host.
A module calls `rerun_inside(__file__)` from its one outer test: pytest runs the module
again inside the namespace (`ip netns exec`), where `inside()` is true and the real tests are defined.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from lab.netns import PrivateNetwork
from tests.support import REPO

ENV = "STREAMGUARD_TEST_NETNS"


def inside() -> bool:
    """True in the namespace `rerun_inside` made."""
    return os.environ.get(ENV) == "1"


def why_not() -> str | None:
    """Why a namespace cannot be made here (None: it can)."""
    return PrivateNetwork.available()


def rerun_inside(test_file: str, timeout: float, extra: list[str] | None = None) -> tuple[int, str, dict[str, int]]:
    """Run pytest on `test_file` inside a new network namespace: (exit code, output, outcome counts)."""
    env = dict(os.environ, **{ENV: "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", test_file, *(extra or [])]
    network = PrivateNetwork().create()
    try:
        proc = subprocess.run(
            ["ip", "netns", "exec", network.name, *pytest_cmd],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
        )
    finally:
        network.delete()
    output = proc.stdout + proc.stderr
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", output)}
    return proc.returncode, output, counts
