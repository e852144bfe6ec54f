"""Make source URLs safe to show.

Camera URLs routinely carry credentials (`rtsp://admin:secret@cam/stream`, SRT's
`?passphrase=`). Every URL that reaches a log line, an error, an event or the API
goes through `redact_url` first, so a password can never leak through them.
"""

from __future__ import annotations

import re

MASK = "***"

# Query parameters whose values are secrets (SRT passphrase, tokens in HTTP URLs).
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:passphrase|password|passwd|pwd|pass|token|access_token|key|secret|signature|sig|auth)=)[^&;#]*"
)
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


def redact_url(url: str) -> str:
    """`url` with its user info and secret query values replaced by `***`.

    The user info ends at the LAST '@' before the query, so a password containing an
    unescaped '@' or '/' is still hidden (a stray '@' in a path over-redacts, which is
    the safe side). Local paths and file: URLs are returned unchanged.
    """
    scheme = _SCHEME.match(url)
    if scheme is None or url.startswith("file:"):
        return url
    head, rest = scheme.group(0), url[scheme.end() :]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    before_query, query = rest[:cut], rest[cut:]
    at = before_query.rfind("@")
    if at >= 0:
        before_query = MASK + before_query[at:]
    return head + before_query + _SECRET_PARAM.sub(rf"\g<1>{MASK}", query)
