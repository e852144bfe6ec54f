"""Run a test module inside a network namespace it makes: how the Ray tests keep their traffic in.

Ray 2.60 binds and dials this machine's interface address, not loopback, even when told
127.0.0.1. In a fresh network namespace holding only loopback and a veth pair (both ends
inside, no default route) it uses 127.0.0.1, and nothing it does can reach another host.
A module calls `rerun_inside(__file__)` from its one outer test: pytest runs the module
again under `unshare --net`, where `inside()` is true and the real tests are defined.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from tests.support import REPO

ENV = "STREAMGUARD_TEST_NETNS"
SETUP = (
    "ip link set lo up && ip link add v0 type veth peer name v1 && "
    "ip addr add 10.77.0.1/24 dev v0 && ip addr add 10.77.0.2/24 dev v1 && "
    "ip link set v0 up && ip link set v1 up"
)
ROOT = REPO


def inside() -> bool:
    """True in the namespace `rerun_inside` made."""
    return os.environ.get(ENV) == "1"


def why_not() -> str | None:
    """Why a namespace cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return "making a network namespace needs root (unshare --net)"
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found (util-linux, iproute2)"
    return None


def rerun_inside(test_file: str, timeout: float, extra: list[str] | None = None) -> tuple[int, str, dict[str, int]]:
    """Run pytest on `test_file` inside a new network namespace: (exit code, output, outcome counts)."""
    env = dict(os.environ, **{ENV: "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", test_file, *(extra or [])]
    script = f"{SETUP} && exec " + " ".join(_quote(a) for a in pytest_cmd)
    proc = subprocess.run(
        ["unshare", "--net", "--fork", "sh", "-c", script],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", output)}
    return proc.returncode, output, counts


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
