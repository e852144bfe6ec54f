"""What kind of source a stream URL names: a WHEP endpoint, a local file, or another live URL.

Showing a URL safely (credentials hidden) is `streamguard.redact.redact_url`'s job.
"""

from __future__ import annotations

import re

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


WHEP_PREFIX = "whep+"  # whep+https://host/path pulls a WebRTC stream from a WHEP endpoint


def whep_endpoint(url: str) -> str | None:
    """The http(s) URL of a `whep+http(s)://` stream URL; None for any other URL."""
    if url.startswith(WHEP_PREFIX + "http://") or url.startswith(WHEP_PREFIX + "https://"):
        return url.removeprefix(WHEP_PREFIX)
    return None


def is_file_url(url: str) -> bool:
    """True for a local path or a file: URL (a source that has an end and no credentials)."""
    return url.startswith("file:") or not _SCHEME.match(url)
