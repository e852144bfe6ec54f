"""One source policy: what a stream URL may point at, checked before anything opens it.

Why: FFmpeg opens anything it has a protocol for: local paths, `/dev/zero`, a FIFO
(which holds the reading thread forever), `concat:`, `pipe:`, `unix:` sockets, any
host on the network, the cloud metadata service. Whoever may add a stream through the
HTTP API must not get any of that. Every way in (the command line, the config file,
`POST /streams`, behind the multi-process front door too, since its workers answer
it) calls `SourcePolicy.check(url, origin)` first; a refusal raises `SourceRefused`
naming the rule (the config field) that refused it, and nothing has been opened.

The rules (`sources` in the config, SourcesConfig):
- the scheme must be in `sources.schemes` (and, for FFmpeg's, in this FFmpeg build:
  PyAV's wheels have no SRT); local files are not a scheme;
- local files: from the command line and the config, any regular file; from the API,
  only regular files whose real path (symlinks and `..` resolved) lies inside
  `sources.api_file_dirs` (none by default). The API's refusal reads the same whether
  or not the path exists, so it cannot be used to probe the file system. Anything
  but a regular file (FIFO, device, socket, directory) is refused from anywhere;
- hosts: `sources.metadata_hosts` by name and `sources.deny_networks` (link-local and
  metadata addresses) from anywhere; for the API also `api_networks_deny` and, if
  set, `api_networks_allow`. IP literals are read as FFmpeg's resolver reads them
  (`2852039166` and `0xa9.0xfe.0xa9.0xfe` are 169.254.169.254). A host name is
  resolved (getaddrinfo) only for URLs added through the API, where every address it
  resolves to must pass; the command line's and the config's names are the operator's.

What it cannot see: where FFmpeg goes after the first URL (an HTTP redirect, the
segments a remote playlist names) and what a name resolves to when FFmpeg connects
(DNS rebinding). FFmpeg's `protocol_whitelist` (protocols.py) keeps those on the
same kind of protocol; their hosts need the network's own egress rules
(docs/security.md).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from streamguard.config import SourcesConfig
from streamguard.errors import StreamguardError
from streamguard.ingest.protocols import ffmpeg_protocols, url_scheme
from streamguard.ingest.urls import WHEP_PREFIX
from streamguard.redact import redact_url

Origin = Literal["cli", "config", "api"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], list[IPAddress]]

# Schemes FFmpeg opens with a demuxer rather than a protocol (not in avio_enum_protocols).
DEMUXER_SCHEMES = frozenset({"rtsp", "rtsps"})
API_FILES = "local files added through the API must be regular files inside sources.api_file_dirs"


class SourceRefused(StreamguardError):
    """The source policy does not allow a URL. `rule`: the config field (or check) that refused it;
    `status`: the HTTP answer, 403 for a refusal, 400 for a URL that cannot be checked or used."""

    def __init__(self, url: str, rule: str, reason: str, status: int = 403) -> None:
        shown = redact_url(url)
        super().__init__(f"{shown if shown.isprintable() else ascii(shown)}: refused by the source policy ({rule}): {reason}")
        self.rule = rule
        self.reason = reason
        self.status = status


def resolve(host: str) -> list[IPAddress]:
    """Every address `host` resolves to (getaddrinfo, as FFmpeg and aiohttp resolve it)."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))


def ip_literal(host: str) -> IPAddress | None:
    """The address `host` names if it is an IP literal in any form getaddrinfo takes; None for a name."""
    bare = host.split("%", 1)[0]  # an IPv6 zone (fe80::1%eth0)
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    try:  # 2852039166, 0xa9fea9fe, 0251.0376.0251.0376, 169.254.43518: all 169.254.169.254 to inet_aton
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


def file_path(url: str) -> str:
    """The path FFmpeg's file protocol opens for a local path or `file:` URL (it strips `file:`)."""
    path = url.removeprefix("file:") if url_scheme(url) == "file" else url
    return "/" + path.lstrip("/") if path.startswith("//") else path


def _is_regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


class SourcePolicy:
    """`check` a URL against `sources` (the module docstring lists the rules)."""

    def __init__(self, cfg: SourcesConfig, resolver: Resolver = resolve,
                 protocols: Callable[[], frozenset[str] | None] = ffmpeg_protocols) -> None:
        self.cfg = cfg
        self._resolve = resolver
        self._protocols = protocols
        self._api_dirs = [os.path.realpath(d) for d in cfg.api_file_dirs]

    def check(self, url: str, origin: Origin) -> None:
        """Nothing if `url` may be opened for `origin`; SourceRefused naming the rule if not.

        For origin "api" a host name is resolved: call it off the event loop."""
        scheme = url_scheme(url)
        if scheme in ("", "file"):  # a file name may hold any character but '/' and NUL
            self._check_file(url, origin)
            return
        if any(ch.isspace() or ord(ch) < 0x20 or ch == "\x7f" for ch in url):  # read differently by urllib and FFmpeg
            raise SourceRefused(url, "malformed-url", "URLs may not contain spaces or control characters", 400)
        if scheme not in self.cfg.schemes:
            allowed = ", ".join(self.cfg.schemes) or "none"
            raise SourceRefused(url, "sources.schemes", f"scheme '{scheme}' is not allowed (allowed: {allowed}; local files "
                                f"{'only inside sources.api_file_dirs' if origin == 'api' else 'as paths'})")
        self._check_build(url, scheme)
        target = url.removeprefix(WHEP_PREFIX) if scheme.startswith(WHEP_PREFIX) else url
        try:
            parts = urlsplit(target)
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
        except ValueError as err:
            raise SourceRefused(url, "malformed-url", str(err), 400) from None
        if not parts.hostname:
            raise SourceRefused(url, "malformed-url", "no host in the URL", 400)
        self._check_host(url, parts.hostname, origin)

    def _check_build(self, url: str, scheme: str) -> None:
        """A scheme the policy allows but FFmpeg cannot open gets one clear line, not FFmpeg's retries."""
        if scheme.startswith(WHEP_PREFIX) or scheme in DEMUXER_SCHEMES:
            return
        available = self._protocols()
        if available is None:  # cannot tell: FFmpeg's own error says it at open
            return
        missing = [p for p in scheme.split("+") if p and p not in available]
        if missing:
            extra = " (PyAV's wheels are built without libsrt; use rtsp or rtmp, or an FFmpeg with SRT)" if "srt" in missing else ""
            raise SourceRefused(url, "ffmpeg-protocols", f"this build of FFmpeg/PyAV has no {'+'.join(missing)} protocol{extra}", 400)

    def _check_host(self, url: str, host: str, origin: Origin) -> None:
        name = host.lower().rstrip(".")
        if name in self.cfg.metadata_hosts:
            raise SourceRefused(url, "sources.metadata_hosts", f"{name} is a cloud metadata service")
        literal = ip_literal(name)
        if literal is not None:
            addresses = [literal]
        elif origin == "api":
            try:
                addresses = self._resolve(name)
            except (OSError, UnicodeError) as err:
                raise SourceRefused(url, "host-resolves", f"cannot resolve {name} to check its addresses ({err})", 400) from None
        else:
            return  # the operator's own host names are not resolved here
        for address in addresses:
            self._check_address(url, address, origin)

    def _check_address(self, url: str, address: IPAddress, origin: Origin) -> None:
        forms = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            forms.append(address.ipv4_mapped)  # ::ffff:169.254.169.254
        for form in forms:
            if any(form in net for net in self.cfg.deny_networks):
                raise SourceRefused(url, "sources.deny_networks", f"{address} is in a denied network (link-local or metadata)")
            if origin != "api":
                continue
            if any(form in net for net in self.cfg.api_networks_deny):
                raise SourceRefused(url, "sources.api_networks_deny", f"{address} is in a network the API may not add")
        if origin == "api" and self.cfg.api_networks_allow and not any(
            form in net for form in forms for net in self.cfg.api_networks_allow
        ):
            raise SourceRefused(url, "sources.api_networks_allow", f"{address} is not in a network the API may add")

    def _check_file(self, url: str, origin: Origin) -> None:
        path = file_path(url)
        if origin == "api":
            if not self._api_dirs:
                raise SourceRefused(url, "sources.api_file_dirs", "local files cannot be added through the API "
                                    "(sources.api_file_dirs lists no directory)")
            # One answer for missing, outside and not-a-file alike: the API is no oracle for the file system.
            real = os.path.realpath(path) if os.path.isabs(path) else None
            if real is None or not any(Path(real).is_relative_to(d) for d in self._api_dirs) or not _is_regular_file(real):
                raise SourceRefused(url, "sources.api_file_dirs", API_FILES)
            return
        if os.path.exists(path) and not _is_regular_file(path):  # a missing file: FFmpeg's own error names it
            raise SourceRefused(url, "regular-files-only", "not a regular file (a FIFO, device, socket or directory "
                                "can hold the reading thread forever or never end)")
