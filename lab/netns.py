"""A private network namespace for tests and benchmarks that cannot stay on loopback, and a way into it.

Ray (2.60) binds and dials this machine's interface address, not loopback, even when told
127.0.0.1: inside a namespace of our own it uses 127.0.0.1 and every packet stays inside
(the cluster tests, `bench cluster`).

Janus gathers ICE candidates only on non-loopback interfaces (it skips IFF_LOOPBACK
before its enforce list is looked at), so a Janus test cannot stay on 127.0.0.1. The
network rule for tests is: traffic to loopback, or inside a namespace the test made.
`PrivateNetwork` makes one (`ip netns add`), with its loopback up and a veth pair whose
two ends both live in it (10.77.0.1/24 and 10.77.0.2/24): an interface Janus and aioice
gather on, connected to nothing outside. (The `dummy` link type is missing on these
machines; veth is not.)

`enter()` moves the calling thread (the test's event loop thread) into it with
setns(2): every socket it opens afterwards, every thread it starts and every process
it forks (Janus, redis-server) live in the namespace; `leave()` moves it back.
Python 3.11 has no os.setns, hence ctypes. Needs root (CAP_SYS_ADMIN).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import subprocess

CLONE_NEWNET = 0x40000000
ADDRESSES = ("10.77.0.1", "10.77.0.2")
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class PrivateNetwork:
    """A network namespace of our own: lo up, veth v0 (10.77.0.1) <-> v1 (10.77.0.2) inside it."""

    interface = "v0"
    address = ADDRESSES[0]

    def __init__(self) -> None:
        self.name = f"sgtest-{secrets.token_hex(4)}"
        self._home: int | None = None

    @staticmethod
    def available() -> str | None:
        """Why a namespace cannot be made here (None: it can)."""
        if os.geteuid() != 0:
            return "needs root (ip netns, setns)"
        if subprocess.run(["which", "ip"], capture_output=True).returncode != 0:
            return "needs iproute2 (ip)"
        return None

    def create(self) -> PrivateNetwork:
        _ip("netns", "add", self.name)
        try:
            ns = ["-n", self.name]
            _ip(*ns, "link", "set", "lo", "up")
            _ip(*ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
            for dev, addr in zip(("v0", "v1"), ADDRESSES):
                _ip(*ns, "addr", "add", f"{addr}/24", "dev", dev)
                _ip(*ns, "link", "set", dev, "up")
        except BaseException:
            self.delete()
            raise
        return self

    def enter(self) -> None:
        """Move the calling thread into the namespace (remembering where it was)."""
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)

    def leave(self) -> None:
        """Move the calling thread back to where `enter` found it."""
        if self._home is not None:
            _setns(self._home)
            os.close(self._home)
            self._home = None

    def delete(self) -> None:
        self.leave()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
