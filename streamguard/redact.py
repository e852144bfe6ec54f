"""Make URLs and other operator-given text safe to show: one redaction for the whole product.

Why here, at the bottom of the import graph: every place a URL leaves the process (the
HTTP API, Redis events, logs, error messages, reports, the front door) must hide the
same secrets the same way, and ingest, the Redis sink, the server, the supervisor and
the reports all import this module, so it imports nothing of streamguard's.

`redact_url` never leaks and would rather hide too much than too little. It replaces
each run of secret characters with `***`; a character is secret when ANY of these
rules marks it, each applied to the whole text as given:

- User info. A URL is written by hand and a password may hold `#`, `?`, `/`, `:` or
  `@` unescaped, so no parser can say where the authority ends. The rule: if an `@`
  appears anywhere after the scheme, everything from the scheme's end to the LAST `@`
  is user info. An `@` in a path or a query value (`?email=a@b.c`) thus hides the
  host and path before it too: over-redaction, the safe side.
- Secret query parameters. After `?`, `&`, `;` or `#` (the fragment too), a parameter
  whose name, percent-decoded and in any case, looks secret (`_is_secret_name`: key,
  api_key, apikey, token, access_token, secret, password, passwd, pwd, pass,
  passphrase, signature, sig, credential, X-Amz-Signature, X-Amz-Credential,
  X-Amz-Security-Token, auth, authorization, session, hash, ...) has its value hidden.
  The value runs to the next `&name=`, `;name=`, `?name=` or `#name=`, or to the end,
  so a value holding an unescaped `#` or `&` stays hidden. SRT's `passphrase` is a
  secret; so is its `streamid`, which servers use for access control (MediaMTX reads
  `streamid=publish:path:user:pass`, others a stream key).
- The RTMP stream key. For rtmp, rtmps, rtmpt, rtmpe, rtmpte and rtmpts URLs,
  everything after the application (the first path segment) is the key:
  `rtmp://host/app/KEY?x` -> `rtmp://host/app/***`. The application is looked for
  both after the last `@` and as if there were no user info, so a key or password
  holding `@` or `/` is still hidden.

Text is a URL when it starts with a scheme of two or more characters and a colon, as
FFmpeg decides (`rtsp:`, `cache:rtmp:`, but not `C:\\`), or contains `://` anywhere
(so leading spaces change nothing). Anything else is a local path, shown as given:
paths and file: URLs are the operator's own and hold no credentials.

Control characters (C0, DEL, C1, and the Unicode line and paragraph separators) never
come out raw: in a URL they are percent-encoded (`%0A`), the way a URL spells them,
so an API client still gets a URL; in a local path, and in any text through
`escape_control`, they are backslash escapes (`\\n`, `\\x1b`), so a log line stays one
line. Backslashes themselves are not doubled: the escaping is for safety, not to be
reversed.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

# A URL's scheme as FFmpeg reads it: 2+ of its scheme characters, then ':' (one letter is a DOS drive).
_SCHEME = re.compile(r"^([A-Za-z0-9+.-]{2,}):(?://)?")
_SCHEME_CHAIN = re.compile(r"^(?:[A-Za-z0-9+.-]{2,}:(?://)?)+")  # cache:rtmp://, async:http://
_ANYWHERE = re.compile(r"://")
_RTMP = re.compile(r"(?i)(?:^|[:/])(rtmp[a-z]*):")

# A parameter: a separator, a name, '='. The separator is part of the match so that
# finditer walks every one; the value's end is the next parameter boundary (below).
_PARAM = re.compile(r"[?&;#]([^?&;#=]*)=")
# Where a parameter's value ends: another parameter with a plain name, or the end.
_BOUNDARY = re.compile(r"[?&;#][A-Za-z0-9_.~%+\-\[\]]+=")

# Names whose values are secrets. A name matches when one of its words (split at
# non-alphanumerics and camelCase) is in _SECRET_WORDS, when it ends with one of
# _SECRET_SUFFIXES (streamkey, urlsig, adminpass), or when one of _SECRET_PARTS is
# anywhere in it (x-amz-security-token, client_secret, oauth).
_SECRET_WORDS = frozenset({
    "key", "apikey", "token", "secret", "password", "passwd", "pwd", "pass", "passphrase",
    "signature", "sig", "credential", "credentials", "auth", "authorization", "session",
    "sessionid", "sid", "jwt", "bearer", "cookie", "otp", "hmac", "hash", "md5", "streamid",
    "private", "privkey", "policy",
})
_SECRET_SUFFIXES = ("key", "sig", "pass", "pwd", "hash")
_SECRET_PARTS = ("token", "secret", "passw", "passphrase", "pwd", "signature", "credential",
                 "apikey", "accesskey", "privatekey", "streamkey", "auth", "session", "streamid")
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

# Control characters: C0, DEL, C1, and the separators Python's splitlines also breaks at.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# A URL inside free text (a log message, an exception): up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z0-9+.-]{2,}://[^\s'\"<>`]*")


def escape_control(text: str) -> str:
    """`text` with every control character as a visible escape (`\\n`, `\\x1b`, `\\u2028`)."""
    return _CONTROL.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}"


def _percent_encode_controls(url: str) -> str:
    return _CONTROL.sub(lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode()), url)


def is_local_path(text: str) -> bool:
    """True for what FFmpeg opens as a local file: no scheme (and no `://`), or `file:`."""
    scheme = _SCHEME.match(text)
    if scheme is not None:
        return scheme.group(1).lower() == "file"
    return _ANYWHERE.search(text) is None


def _is_secret_name(name: str) -> bool:
    plain = unquote(name)
    words = {w.lower() for w in _WORD.findall(plain)}
    squashed = re.sub(r"[^a-z0-9]", "", plain.lower())
    return (
        not words.isdisjoint(_SECRET_WORDS)
        or squashed.endswith(_SECRET_SUFFIXES)
        or any(part in squashed for part in _SECRET_PARTS)
    )


def _secret_spans(url: str, start: int) -> list[tuple[int, int]]:
    """The [begin, end) ranges of `url` that the three rules (see the module docstring) mark."""
    spans: list[tuple[int, int]] = []
    at = url.rfind("@", start)
    if at >= 0:
        spans.append((start, at))
    for match in _PARAM.finditer(url, start):
        if _is_secret_name(match.group(1)):
            end = _BOUNDARY.search(url, match.end())
            spans.append((match.end(), end.start() if end else len(url)))
    chain = _SCHEME_CHAIN.match(url)
    if chain is not None and _RTMP.search(chain.group(0)):
        for authority in {chain.end(), at + 1 if at >= 0 else chain.end()}:
            key = _rtmp_key_start(url, authority)
            if key is not None:
                spans.append((key, len(url)))
    return spans


def _rtmp_key_start(url: str, authority: int) -> int | None:
    """Where the stream key begins if the host starts at `authority`: after `/app/`."""
    host_end = _first_of(url, "/?#", authority)
    if host_end is None or url[host_end] != "/":
        return None
    app_end = _first_of(url, "/?#", host_end + 1)
    if app_end is None or url[app_end] != "/" or app_end + 1 == len(url):
        return None
    return app_end + 1


def _first_of(text: str, chars: str, start: int) -> int | None:
    found = [i for i in (text.find(c, start) for c in chars) if i >= 0]
    return min(found) if found else None


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each run of characters covered by `spans` (overlapping or touching) as one MASK."""
    runs: list[list[int]] = []
    for begin, end in sorted(s for s in spans if s[1] > s[0]):
        if runs and begin <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([begin, end])
    out: list[str] = []
    kept = 0
    for begin, end in runs:
        out += [text[kept:begin], MASK]
        kept = end
    out.append(text[kept:])
    return "".join(out)


def redact_url(url: str) -> str:
    """`url` safe to show: user info, secret parameter values and RTMP stream keys as `***`,
    control characters encoded; a local path comes back as given, controls escaped."""
    if is_local_path(url):
        return escape_control(url)
    url = _percent_encode_controls(url)
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else url.index("://") + 3
    return _mask(url, _secret_spans(url, start))


def redact_text(text: str) -> str:
    """Free text (a log message, an error) with every `scheme://...` in it redacted.

    A safety net for what third-party code says (an exception that quotes a URL):
    a URL ends at whitespace or a quote here, so code that prints a URL of its own
    still calls `redact_url` on it.
    """
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
