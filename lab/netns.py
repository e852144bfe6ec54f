"""A network namespace for the cluster tests and `bench cluster`: loopback plus a veth pair, no route out.

Why: Ray (2.60) binds and dials this machine's interface address, not loopback, even when
told 127.0.0.1; inside a namespace of our own with no other interface it uses 127.0.0.1
and every packet stays inside (the tests' network rule). The pytest process itself moves
in (its main thread, through unshare(2)) so that Ray's head, its nodes, redis-server, the
RTSP server and `streamguard run --ray` all start inside; `leave()` moves it back, so the
rest of the session is untouched. Needs root (CAP_SYS_ADMIN) and `ip`.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

CLONE_NEWNET = 0x40000000
SETUP = (
    "ip link set lo up",
    "ip link add v0 type veth peer name v1",
    "ip addr add 10.77.0.1/24 dev v0",
    "ip addr add 10.77.0.2/24 dev v1",
    "ip link set v0 up",
    "ip link set v1 up",
)


def unavailable() -> str | None:
    """Why a namespace cannot be made here (None if it can)."""
    if os.geteuid() != 0:
        return "needs root to make a network namespace"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    return None


class NetNamespace:
    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._home: int | None = None

    def enter(self) -> None:
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY)
        if self._libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        for command in SETUP:
            subprocess.run(command.split(), check=True)

    def leave(self) -> None:
        if self._home is None:
            return
        if self._libc.setns(self._home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back to the first network namespace failed")
        os.close(self._home)
        self._home = None
