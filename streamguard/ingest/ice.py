"""Which addresses WebRTC offers as ICE host candidates (`webrtc.host_interfaces`,
`webrtc.additional_hosts`).

The default (aioice's) is every interface address except loopback: right on a LAN,
wrong for a client on the same machine (127.0.0.1), behind a 1:1 NAT (a cloud VM's
public address) or in a container. MediaMTX (webrtcAdditionalHosts) and Janus
(nat_1_1_mapping) make the list configurable; so does this module.

aioice has no per-connection setting for its addresses: it calls the module function
`aioice.ice.get_host_addresses` while gathering. `configure` replaces that function
with one that follows the config, a process-wide setting like the config itself.
- An additional address this machine has (127.0.0.1, or an interface aioice skips)
  gets its own socket and candidate.
- Any other additional address cannot be bound: the interface candidates are offered
  under it as well, with their ports (`advertise` rewrites the SDP we send), so the
  NAT in front must keep ports unchanged, as with Janus's nat_1_1_mapping.
- `host_interfaces: false` leaves the interface candidates out of the SDP (they are
  still gathered when a NAT address needs their ports).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import aioice.ice
from aioice.candidate import candidate_foundation

from streamguard.config import WebRTCConfig

_aioice_addresses = aioice.ice.get_host_addresses


@dataclass(frozen=True)
class IceHosts:
    """The config, resolved against this machine's addresses."""

    interfaces: bool  # offer the interface candidates
    local: tuple[str, ...]  # additional addresses this machine has: bound directly
    mapped: tuple[str, ...]  # additional addresses it has not: interface candidates are offered under them

    @classmethod
    def from_config(cls, cfg: WebRTCConfig) -> IceHosts:
        addresses = [str(a) for a in cfg.additional_hosts]
        local = tuple(a for a in addresses if _can_bind(a))
        mapped = tuple(a for a in addresses if a not in local)
        return cls(cfg.host_interfaces, local, mapped)


_current = IceHosts(interfaces=True, local=(), mapped=())


def configure(cfg: WebRTCConfig) -> IceHosts:
    """Make aioice gather on the addresses `cfg` asks for (process-wide); the resolved setting."""
    global _current
    _current = IceHosts.from_config(cfg)
    aioice.ice.get_host_addresses = _host_addresses
    return _current


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """aioice's address lookup, following the configured setting."""
    hosts = _current
    found = _aioice_addresses(use_ipv4, use_ipv6) if hosts.interfaces or hosts.mapped else []
    extra = [a for a in hosts.local if (use_ipv6 if ":" in a else use_ipv4) and a not in found]
    return found + extra


def advertise(sdp: str, hosts: IceHosts) -> str:
    """`sdp` with its interface host candidates also offered under each mapped address
    (and left out when `hosts.interfaces` is off). Without mapped addresses, unchanged."""
    if not hosts.mapped:
        return sdp
    interfaces = set(_aioice_addresses(True, True))
    out: list[str] = []
    for line in sdp.splitlines():
        fields = line.split()
        is_host = line.startswith("a=candidate:") and len(fields) >= 8 and fields[7] == "host"
        if not (is_host and fields[4] in interfaces):
            if not hosts.interfaces and line.startswith("c=IN ") and len(fields) == 3 and fields[2] in interfaces:
                line = _connection_line(hosts.mapped[0])
            out.append(line)
            continue
        if hosts.interfaces:
            out.append(line)
        for address in hosts.mapped:
            foundation = candidate_foundation("host", fields[2].lower(), address)
            out.append(" ".join([f"a=candidate:{foundation}", *fields[1:4], address, *fields[5:]]))
    return "\r\n".join(out) + "\r\n"


def _connection_line(address: str) -> str:
    return f"c=IN {'IP6' if ':' in address else 'IP4'} {address}"


def _can_bind(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True
