"""Which FFmpeg protocols a source URL may use, and which this FFmpeg build has.

Why: FFmpeg opens more than the URL it is given. A playlist names segments, an SDP
file names RTP/UDP addresses, an HTTP server redirects, and each of those is opened
through FFmpeg's protocol layer with whatever protocol its URL names. Checking the
top-level URL (policy.py) is not enough on its own, so every open also passes
FFmpeg's `protocol_whitelist`, derived from the URL's scheme: what that kind of
source needs and nothing more. A nested `file:`, `concat:`, `subfile:`, `pipe:`,
`data:`, `unix:` or a UDP socket then fails inside FFmpeg, whatever the demuxer.

`url_scheme` reads a URL's scheme the way FFmpeg's `url_find_protocol` does, so the
policy and FFmpeg agree on what a string is: `concat:a|b` is the concat protocol
(not a relative path), `subfile,,start,0,end,9,,:x` is subfile, a string without
`scheme:` in front is a local file.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import re

# FFmpeg's URL_SCHEME_CHARS: a protocol name is a run of these followed by ':'.
_SCHEME = re.compile(r"^([A-Za-z0-9+.-]+):")

# What each kind of source needs (measured with this PyAV build: docs/security.md).
# RTSP: its signalling over tcp (tls for rtsps), media interleaved on it or in rtp/srtp over udp.
# HTTP(S) and HLS: http/https over tcp/tls; crypto for AES-128 HLS segments. No rtp/udp:
# FFmpeg's own default for http allows them, which lets an SDP file served over HTTP open
# UDP sockets to any address it names. Local files: file, and crypto/data as FFmpeg's file
# protocol allows them for encrypted HLS; no network protocol.
_WHITELISTS: dict[str, tuple[str, ...]] = {
    "": ("file", "crypto", "data"),
    "file": ("file", "crypto", "data"),
    "rtsp": ("rtsp", "rtp", "srtp", "udp", "tcp"),
    "rtsps": ("rtsps", "rtp", "srtp", "udp", "tcp", "tls"),
    "rtmp": ("rtmp", "tcp"),
    "rtmps": ("rtmps", "tcp", "tls"),
    "http": ("http", "https", "tcp", "tls", "crypto", "httpproxy"),
    "https": ("http", "https", "tcp", "tls", "crypto", "httpproxy"),
    "srt": ("srt",),
}


def url_scheme(url: str) -> str:
    """The protocol FFmpeg would pick for `url`, lower case; "" for a local path."""
    if url.startswith("subfile,") and ":" in url[len("subfile,"):]:
        return "subfile"
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else ""


def protocol_whitelist(url: str) -> str:
    """FFmpeg's `protocol_whitelist` option for opening `url`: the protocols its kind of source needs.

    A scheme without an entry (one the operator added to `sources.schemes`, e.g. tcp)
    may use only its own protocol; nested-scheme URLs (`crypto+http://`) their parts.
    """
    scheme = url_scheme(url)
    if scheme in _WHITELISTS:
        return ",".join(_WHITELISTS[scheme])
    parts = [p for p in scheme.split("+") if p]
    allowed = dict.fromkeys(parts)
    for part in parts:
        allowed.update(dict.fromkeys(_WHITELISTS.get(part, ())))
    return ",".join(allowed)


@functools.cache
def ffmpeg_protocols() -> frozenset[str] | None:
    """The input protocols of the FFmpeg that PyAV loaded (`avio_enum_protocols`); None if it cannot be asked.

    PyAV does not expose the list, so this asks the libavformat PyAV has mapped into
    this process (Linux: /proc/self/maps). Wheels of PyAV 14+ have no SRT (no libsrt).
    """
    importlib.import_module("av")  # maps PyAV's libavformat into this process

    try:
        with open("/proc/self/maps") as maps:
            path = next((line.split()[-1] for line in maps if "libavformat" in line and "/" in line), None)
        if path is None:
            return None
        lib = ctypes.CDLL(path)
        enum = lib.avio_enum_protocols
    except (OSError, AttributeError):
        return None
    enum.restype = ctypes.c_char_p
    enum.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
    opaque = ctypes.c_void_p(None)
    names: set[str] = set()
    while (name := enum(ctypes.byref(opaque), 0)) is not None:
        names.add(name.decode())
    return frozenset(names)
